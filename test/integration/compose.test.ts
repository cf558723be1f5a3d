/**
 * Issue 15 part 4, driven by Debian's docker-compose (v1.29): two Compose projects, each on its
 * own default network (`<project>_default`), as most real hosts run them. A service of project
 * bt-cshop is reached by its VIP from a container of project bt-cbank and from the host;
 * `up --scale web=3` gives three backends; `down` removes them (and the service).
 */
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Berthd, waitFor } from '../helpers/berthd';
import { ensureTestImage, removeTestContainers, TEST_IMAGE } from '../helpers/docker';
import { probeFromHost, probeFromContainer, tags } from '../helpers/probe';
import { run } from '../../src/util/exec';
import type { ServiceView } from '../../src/cli/format';
import { hostAsBefore } from '../helpers/cleanup';

const SUITE = 'compose';
const d = new Berthd({ name: 'compose' });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-compose-'));

// Every container and network carries the berth-test label, so a failed run is cleaned up too.
const SHOP = `version: "3.7"
services:
  web:
    image: ${TEST_IMAGE}
    command: ["sh", "-c", "exec berth-tcp-echo 8080 --tag $$HOSTNAME"]
    labels:
      berth.service: cshop
      berth.ports: "80:8080"
      berth-test: ${SUITE}
networks:
  default:
    labels:
      berth-test: ${SUITE}
`;
const BANK = `version: "3.7"
services:
  client:
    image: ${TEST_IMAGE}
    command: ["sleep", "3600"]
    labels:
      berth-test: ${SUITE}
networks:
  default:
    labels:
      berth-test: ${SUITE}
`;

async function compose(project: string, file: string, ...args: string[]): Promise<void> {
  const r = await run('docker-compose', ['-p', project, '-f', file, ...args], { timeoutMs: 120000 });
  if (r.code !== 0) throw new Error(`docker-compose -p ${project} ${args.join(' ')}: ${r.stderr}`);
}

async function cshop(n: number): Promise<ServiceView | undefined> {
  return waitFor(`cshop with ${n} backends`, async () => {
    const s = (await d.services()).find((x) => x.name === 'cshop');
    if (n === 0) return s === undefined ? ({} as ServiceView) : undefined;
    return s && s.backends.length === n ? s : undefined;
  }, 30000, 100);
}

test.after.always(async () => {
  for (const [p, f] of [['bt-cshop', 'shop.yml'], ['bt-cbank', 'bank.yml']]) {
    await run('docker-compose', ['-p', p, '-f', path.join(dir, f), 'down', '--remove-orphans', '-t', '1'], { timeoutMs: 120000 });
  }
  await removeTestContainers(SUITE);
  await d.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

// Last of the after hooks, first of the before hooks (see cleanup.ts).
hostAsBefore(test);

test.before(async () => {
  await removeTestContainers(SUITE);
  await ensureTestImage();
  fs.writeFileSync(path.join(dir, 'shop.yml'), SHOP);
  fs.writeFileSync(path.join(dir, 'bank.yml'), BANK);
  await d.start();
});

test.serial('two Compose projects: a VIP of one reached from the other and from the host; scale to 3; down removes them', async (t) => {
  await compose('bt-cshop', path.join(dir, 'shop.yml'), 'up', '-d');
  await compose('bt-cbank', path.join(dir, 'bank.yml'), 'up', '-d');
  let s = (await cshop(1))!;
  t.deepEqual(s.backends[0].networks?.map((n) => n.network), ['bt-cshop_default']);
  const client = (await run('docker', ['ps', '-q', '--filter', 'label=com.docker.compose.project=bt-cbank'])).stdout.trim();
  t.truthy(client, 'the bank project\'s client runs');
  const fromBank = await probeFromContainer(client, 'tcp', s.vip, 80, 3);
  t.true(fromBank.every((r) => r.ok && r.ms < 1000), `from project bt-cbank: ${JSON.stringify(fromBank)}`);
  t.true((await probeFromHost('tcp', s.vip, 80, 3)).every((r) => r.ok));

  await compose('bt-cshop', path.join(dir, 'shop.yml'), 'up', '-d', '--scale', 'web=3');
  s = (await cshop(3))!;
  t.is(new Set(s.backends.map((b) => b.container)).size, 3);
  const spread = await probeFromContainer(client, 'tcp', s.vip, 80, 30);
  t.true(spread.every((r) => r.ok), JSON.stringify(spread.filter((r) => !r.ok)));
  t.is(tags(spread).size, 3, `all three replicas answer across projects (${[...tags(spread)].join(', ')})`);

  await compose('bt-cshop', path.join(dir, 'shop.yml'), 'down', '-t', '1');
  await cshop(0);
  const gone = await probeFromContainer(client, 'tcp', s.vip, 80, 1);
  t.false(gone[0].ok, 'the VIP no longer answers once the project is down');
  t.true(gone[0].ms < 1000, 'and it fails at once');
});
