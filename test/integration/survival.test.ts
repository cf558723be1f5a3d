/**
 * The datapath outlives berthd: kill -9 leaves every VIP working; a restarted berthd adopts the
 * pinned maps and links, keeps VIPs (also one that only vips.json knows: a collision-resolved one)
 * and BPF backend ids, and removes what went away while it was down only after its first full
 * Docker list (checked across several periodic reconciles). `berth cleanup` then leaves the host
 * as before.
 */
import test from 'ava';
import fs from 'node:fs';
import { Berthd, runCli, waitFor } from '../helpers/berthd';
import { ensureTestImage, runContainer, removeTestContainers, docker } from '../helpers/docker';
import { probeFromHost, tags } from '../helpers/probe';
import { snapshotHostState, diffHostState, hostAsBefore } from '../helpers/cleanup';
import { run } from '../../src/util/exec';
import { decodeBackend, decodeBackendKey } from '../../src/datapath/codec';
import { vipCandidate } from '../../src/model/vip';
import { formatIp, parseCidr } from '../../src/model/ip';
import { HAS_NETNS_COOKIE_OPTION } from '../helpers/kernel';

/**
 * Reconcile every 200 ms, so that "several periodic reconciles" takes about a second. DNS off: the
 * map counts below are about the services' backends only (the DNS VIP would add its own backend
 * entries; dns.test.ts covers DNS across restarts).
 */
const FAST = ['--reconcile-interval', '0.2', '--dns-port', 'off'];

/** backend address "ip:port" -> the id berth gave it in the pinned berth_backends map. */
async function bpfBackendIds(pinDir: string): Promise<Map<string, number>> {
  const r = await run('bpftool', ['-j', 'map', 'dump', 'pinned', `${pinDir}/berth_backends`]);
  if (r.code !== 0) throw new Error(`bpftool map dump: ${r.stderr}`);
  const bytes = (hex: string[]): Buffer => Buffer.from(hex.map((h) => parseInt(h, 16)));
  const ids = new Map<string, number>();
  for (const e of JSON.parse(r.stdout) as { key: string[]; value: string[] }[]) {
    const b = decodeBackend(bytes(e.value));
    ids.set(`${b.ip}:${b.port}`, decodeBackendKey(bytes(e.key)));
  }
  return ids;
}

const SUITE = 'survival';

test('kill -9, restart, adoption, pruning after the first list, cleanup', async (t) => {
  await removeTestContainers(SUITE);
  await ensureTestImage();
  const before = await snapshotHostState();
  // The ids of the links pinned in this instance's pin dir: a restart must adopt them, not add more.
  const linkIds = async () => {
    const ids: number[] = [];
    for (const f of fs.readdirSync('/sys/fs/bpf/berth-surv').filter((x) => x.startsWith('link_')).sort()) {
      ids.push((JSON.parse((await run('bpftool', ['-j', 'link', 'show', 'pinned', `/sys/fs/bpf/berth-surv/${f}`])).stdout) as { id: number }).id);
    }
    return ids;
  };
  const d = new Berthd({ name: 'surv', extraArgs: FAST });
  let blind: Berthd | null = null;
  t.teardown(async () => {
    await blind?.stop(); // also when the test failed while it ran
    await removeTestContainers(SUITE);
    await d.cleanup();
  });
  await d.start();
  // A squatter pins keep's home address (the hash of its name) first, so keep gets a
  // collision-resolved VIP. Once the squatter is gone, only vips.json can give keep that VIP back.
  const home = formatIp(vipCandidate('service', 'keep', parseCidr('10.96.0.0/16')!, 0)!);
  const squat = await runContainer({ suite: SUITE, name: 'bt-surv-squat', labels: { 'berth.service': 'squat', 'berth.ports': '80:8080', 'berth.vip': home }, cmd: ['berth-tcp-echo', '8080', '--tag', 'squat'] });
  await waitFor('squat on keep\'s home address', async () => (await d.service('squat'))?.vip === home);
  const a = await runContainer({ suite: SUITE, name: 'bt-surv-a', labels: { 'berth.service': 'keep', 'berth.ports': '80:8080' }, cmd: ['berth-tcp-echo', '8080', '--tag', 'a'] });
  const b = await runContainer({ suite: SUITE, name: 'bt-surv-b', labels: { 'berth.service': 'keep', 'berth.ports': '80:8080' }, cmd: ['berth-tcp-echo', '8080', '--tag', 'b'] });
  const keep = await waitFor('keep with 2 backends', async () => (await d.services()).find((s) => s.name === 'keep' && s.backends.length === 2));
  t.not(keep.vip, home, 'keep\'s VIP is collision-resolved');
  const pinsBefore = (await run('ls', [`/sys/fs/bpf/berth-surv`])).stdout;
  const linksBefore = await linkIds();
  t.is(linksBefore.length, HAS_NETNS_COOKIE_OPTION ? 9 : 10, 'one link per hook (8 socket hooks and the egress flow recorder; before 5.14 the sock_create hook of the netns cookie probe)');
  const idsBefore = await bpfBackendIds('/sys/fs/bpf/berth-surv');
  const aAddr = `${a.ip}:8080`;
  t.true(idsBefore.has(aAddr) && idsBefore.has(`${b.ip}:8080`), JSON.stringify([...idsBefore]));

  await d.kill9();
  // Traffic keeps flowing with no berthd at all.
  const res = await probeFromHost('tcp', keep.vip, 80, 16);
  t.deepEqual([...tags(res)].sort(), ['a', 'b']);
  t.is((await run('ls', [`/sys/fs/bpf/berth-surv`])).stdout, pinsBefore, 'pins untouched by the kill');

  // While berthd is down, b and the squatter go away.
  await docker.getContainer(b.id).remove({ force: true });
  await docker.getContainer(squat.id).remove({ force: true });

  // A berthd that cannot list Docker adopts the maps and withdraws nothing: without a full list
  // it cannot know that b is gone (issue 2 part 7: prune only after the first full list). Held
  // across several of its periodic reconciles, which it counts as skipped.
  blind = new Berthd({ name: 'surv', extraArgs: [...FAST, '--docker-host', 'unix:///run/berth-surv-no-docker.sock'] });
  await blind.start(30000, 'serving');
  const blindStatus = await waitFor('the blind berthd reports Docker unreachable', async () => { const s = await blind.status(); return s.docker !== 'connected' && s.maps ? s : undefined; });
  t.false(blindStatus.ready, 'not ready without a Docker list');
  const skipped0 = await blind.metric('berth_reconciles_total{result="skipped"}');
  await waitFor('three more periodic reconciles while blind', async () => (await blind.metric('berth_reconciles_total{result="skipped"}')) >= skipped0 + 3, 10000, 100);
  t.is((await blind.status()).maps?.backends, idsBefore.size, 'every backend still in the maps (a, b and the squatter)');
  t.deepEqual(await bpfBackendIds('/sys/fs/bpf/berth-surv'), idsBefore, 'the BPF backends untouched');
  // (No traffic check here: b's container is gone, so its kept entry answers nothing; the point
  // is that berth does not withdraw what it cannot know is gone.)
  t.deepEqual(await linkIds(), linksBefore, 'the same links, adopted');
  await blind.stop();

  await d.start();
  const after = await waitFor('keep with 1 backend', async () => (await d.services()).find((s) => s.name === 'keep' && s.backends.length === 1));
  t.is(after.vip, keep.vip, 'the collision-resolved VIP kept (from vips.json: keep\'s home address is free now)');
  t.is(after.vip6, keep.vip6, 'VIP6 kept');
  t.falsy(await d.service('squat'), 'the squatter is gone');
  t.deepEqual(after.backends.map((x) => x.id), [a.id]);
  const idsAfter = await bpfBackendIds('/sys/fs/bpf/berth-surv');
  t.deepEqual([...idsAfter], [[aAddr, idsBefore.get(aAddr)]], 'a keeps its BPF backend id; b\'s entry is gone');
  const res2 = await probeFromHost('tcp', keep.vip, 80, 16);
  t.deepEqual([...tags(res2)], ['a'], 'b is no longer used');
  const st = await d.status();
  t.true(st.cgroupIsHostRoot);
  // Adopted, not duplicated: one program per hook at the root.
  t.deepEqual(await linkIds(), linksBefore, 'the same links, adopted');

  // A plain SIGTERM stop also leaves the datapath working.
  t.is(await d.stop(), 0);
  t.deepEqual([...tags(await probeFromHost('tcp', keep.vip, 80, 4))], ['a']);

  // cleanup: the host is as before berthd ran.
  await removeTestContainers(SUITE);
  const out = await d.cleanup();
  t.regex(out, /removed/);
  const cleaned = await snapshotHostState();
  t.deepEqual(diffHostState(before, cleaned), []);
  const again = await runCli(['cleanup', '--force', ...d.args.slice(0, 6)]);
  t.regex(again.stdout, /nothing of berth was left/);
});

// Every integration file ends with the host-as-before check.
hostAsBefore(test);
