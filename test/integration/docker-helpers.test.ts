/**
 * The shared test helpers do what other suites rely on: the local image and its tools, the probe's
 * JSON (peer, reply, UDP source, errno), labelled containers, IPv6 test networks, netns, and
 * cleanup that leaves no trace.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { run } from '../../src/util/exec';
import {
  TEST_IMAGE, createTestNetwork, docker, ensureTestImage, execIn, execInFull, removeTestContainers, removeTestNetwork, runContainer, testBin,
} from '../helpers/docker';
import { createNetns, deleteNetns, execInNetns, netnsExists } from '../helpers/netns';
import { diffHostState, snapshotHostState } from '../helpers/cleanup';
import { v4Overlap } from '../helpers/addr';

const SUITE = 'docker-helpers';
const NETS = ['bt-dh-a', 'bt-dh-b'];

interface Probe { ok: boolean; peer: string | null; reply: string | null; from: string | null; errno: string | null; ms: number }
const parse = (out: string): Probe[] => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Probe);

test.before(async () => {
  await removeTestContainers(SUITE);
});

test.after.always(async () => {
  await removeTestContainers(SUITE);
  for (const n of NETS) await removeTestNetwork(n);
  await docker.getNetwork('bt-dh-unlabelled').remove().catch(() => undefined);
});

test.serial('the test image: content-hash tag, :latest, tools, busybox applets, /www', async (t) => {
  const tag = await ensureTestImage();
  t.regex(tag, /^berth-test\/busybox:[0-9a-f]{12}$/);
  t.is(await ensureTestImage(), tag, 'cached');
  const [a, b] = await Promise.all([docker.getImage(tag).inspect(), docker.getImage(TEST_IMAGE).inspect()]);
  t.is(a.Id, b.Id, ':latest is the same image');
  const c = await runContainer({ suite: SUITE, name: 'bt-dh-img', labels: {}, cmd: ['sleep', '600'] });
  const ls = await execIn(c.id, ['sh', '-c', 'ls /usr/local/bin; ls -ld /www /tmp; which httpd nc sleep']);
  for (const tool of ['berth-udp-echo', 'berth-tcp-echo', 'berth-probe']) t.true(ls.includes(tool), `${tool} in the image`);
  t.regex(ls, /drwxrwxrwt.*\/tmp/);
  t.regex(ls, /\/bin\/httpd/);
  // Each tool has a usage line.
  for (const tool of ['berth-udp-echo', 'berth-tcp-echo', 'berth-probe']) {
    const r = await execInFull(c.id, [tool]);
    t.is(r.code, 2, `${tool} without arguments exits 2`);
    t.regex(r.stderr, new RegExp(`usage: ${tool}`));
  }
  // execIn: a missing program is an error, a failing one just returns its stdout.
  await t.throwsAsync(execIn(c.id, ['no-such-program']), { message: /exit 12[67]/ });
  t.is(await execIn(c.id, ['sh', '-c', 'echo out; exit 3']), 'out\n');
});

test.serial('echo servers and berth-probe: tags, getpeername, UDP source, IPv6, errno', async (t) => {
  const net = await createTestNetwork(NETS[0], { ipv6: true, suite: SUITE });
  const tcp = await runContainer({ suite: SUITE, name: 'bt-dh-tcp', network: net.name, labels: {}, cmd: ['berth-tcp-echo', '8080', '--tag', 'T1'], waitFor: { tcp: 8080 } });
  const udp = await runContainer({ suite: SUITE, name: 'bt-dh-udp', network: net.name, labels: {}, cmd: ['berth-udp-echo', '5353', '--tag', 'U1'], waitFor: { udp: 5353 } });
  const client = await runContainer({ suite: SUITE, name: 'bt-dh-client', network: net.name, labels: {}, cmd: ['sleep', '600'] });
  t.truthy(tcp.ip6, 'an address on the IPv6 network');

  for (const addr of [tcp.ip!, tcp.ip6!]) {
    const hp = addr.includes(':') ? `[${addr}]:8080` : `${addr}:8080`;
    const res = parse(await execIn(client.id, ['berth-probe', 'tcp', addr, '8080', '--count', '3', '--send', 'hello']));
    t.is(res.length, 3);
    for (const r of res) t.like(r, { ok: true, peer: hp, reply: 'T1\nhello', errno: null });
  }
  for (const addr of [udp.ip!, udp.ip6!]) {
    const hp = addr.includes(':') ? `[${addr}]:5353` : `${addr}:5353`;
    const [c] = parse(await execIn(client.id, ['berth-probe', 'udp', addr, '5353']));
    t.like(c, { ok: true, peer: hp, from: hp, reply: 'U1:ping', errno: null });
    const [u] = parse(await execIn(client.id, ['berth-probe', 'udp-unconnected', addr, '5353']));
    t.like(u, { ok: true, peer: null, from: hp, reply: 'U1:ping' });
  }
  // Nothing listens: TCP is refused at once; connected UDP learns it from the ICMP error.
  const [refused] = parse(await execIn(client.id, ['berth-probe', 'tcp', tcp.ip!, '9', '--timeout-ms', '3000']));
  t.like(refused, { ok: false, errno: 'ECONNREFUSED', reply: null });
  t.true(refused.ms < 1000, `refused fast (${refused.ms} ms)`);
  const [udpRefused] = parse(await execIn(client.id, ['berth-probe', 'udp', udp.ip!, '9', '--timeout-ms', '1500']));
  t.false(udpRefused.ok);
  t.is(udpRefused.errno, 'ECONNREFUSED');
  // The same binaries run on the host (to containers of this test only).
  const host = await run(testBin('berth-probe'), ['tcp', tcp.ip!, '8080']);
  t.like(parse(host.stdout)[0], { ok: true, reply: 'T1\nping' });
  t.is(host.code, 0);
});

test.serial('the echo servers exit on docker stop\'s SIGTERM (as PID 1), not by the SIGKILL after the timeout', async (t) => {
  for (const cmd of [['berth-tcp-echo', '8080'], ['berth-udp-echo', '5353']]) {
    const c = await runContainer({ suite: SUITE, name: `bt-dh-stop-${cmd[0]}`, labels: {}, cmd });
    await docker.getContainer(c.id).stop({ t: 60 });
    const st = (await docker.getContainer(c.id).inspect()).State;
    t.is(st.ExitCode, 0, `${cmd[0]} exited by itself (137 would mean SIGKILL)`);
  }
});

test.serial('busybox httpd serves files from /www', async (t) => {
  const web = await runContainer({
    suite: SUITE, name: 'bt-dh-web', labels: {}, waitFor: { tcp: 9080 },
    cmd: ['sh', '-c', 'echo hello-www > /www/index.html && exec httpd -f -p 9080 -h /www'],
  });
  const out = await execIn(web.id, ['sh', '-c', 'printf "GET /index.html HTTP/1.0\\r\\n\\r\\n" | timeout 5 nc 127.0.0.1 9080']);
  t.regex(out, /^HTTP\/1\.[01] 200/);
  t.regex(out, /hello-www/);
});

test.serial('healthcheck option and labels reach Docker', async (t) => {
  const c = await runContainer({
    suite: SUITE, name: 'bt-dh-hc', labels: { 'berth.service': 'x' }, cmd: ['sleep', '600'],
    healthcheck: { test: ['CMD', 'true'], intervalMs: 200, retries: 2 }, exposedPorts: ['80', '53/udp'],
  });
  const info = await docker.getContainer(c.id).inspect();
  t.deepEqual(info.Config.Labels, { 'berth.service': 'x', 'berth-test': SUITE });
  t.deepEqual(info.Config.Healthcheck?.Test, ['CMD', 'true']);
  t.is(info.Config.Healthcheck?.Interval, 200e6);
  t.deepEqual(Object.keys(info.Config.ExposedPorts ?? {}).sort(), ['53/udp', '80/tcp']);
});

test.serial('test networks: bt- names only, distinct subnets, unlabelled networks are not ours to remove', async (t) => {
  await t.throwsAsync(createTestNetwork('mynet'), { message: /bt-/ });
  const a = await createTestNetwork(NETS[0], { ipv6: true, suite: SUITE });
  const b = await createTestNetwork(NETS[1], { suite: SUITE });
  t.false(v4Overlap(a.subnet, b.subnet));
  t.regex(a.subnet6 ?? '', /^fd00:b7e5:/);
  t.is(b.subnet6, null);
  const again = await createTestNetwork(NETS[1], { suite: SUITE });
  t.not(again.id, b.id, 'a leftover of the same name is replaced');
  await docker.createNetwork({ Name: 'bt-dh-unlabelled' });
  await t.throwsAsync(removeTestNetwork('bt-dh-unlabelled'), { message: /not removing/ });
  await removeTestNetwork(NETS[1]);
  await t.throwsAsync(docker.getNetwork(NETS[1]).inspect());
  await removeTestNetwork('bt-dh-never-existed');
});

test.serial('netns: reach a host server over the veth (v4 and v6), then no trace left', async (t) => {
  const before = await snapshotHostState();
  const server = spawn(testBin('berth-tcp-echo'), ['47911', '--tag', 'HOST'], { stdio: 'ignore' });
  const exited = new Promise((res) => server.once('exit', res));
  const ns = await createNetns('bt-dh-ns');
  try {
    t.true(await netnsExists(ns.name));
    for (const addr of [ns.hostAddress, ns.hostAddress6]) {
      let r: Probe | undefined;
      for (let i = 0; i < 50 && !r?.ok; i++) {
        r = parse((await execInNetns(ns, [testBin('berth-probe'), 'tcp', addr, '47911', '--timeout-ms', '1000'])).stdout)[0];
        if (!r?.ok) await new Promise((res) => setTimeout(res, 100));
      }
      t.like(r, { ok: true, reply: 'HOST\nping' });
    }
    // No default route: nothing from the namespace can leave through the host.
    const routes = (await execInNetns(ns, ['ip', 'route'])).stdout;
    t.notRegex(routes, /default/);
  } finally {
    await deleteNetns(ns);
    server.kill('SIGTERM'); // our own child, by its pid
    await exited;
  }
  t.false(await netnsExists(ns.name));
  const after = await snapshotHostState();
  const ours = diffHostState(before, after).filter((l) => l.includes(ns.name) || l.includes(ns.hostIf) || l.includes(ns.hostAddress) || l.includes('fd00:b7e6'));
  t.deepEqual(ours, []);
  await deleteNetns('bt-dh-ns'); // idempotent
});

test.serial('snapshotHostState/diffHostState see a berth route, iptables rule, bpffs pin and netns come and go', async (t) => {
  const before = await snapshotHostState();
  t.deepEqual(diffHostState(before, await snapshotHostState()).filter((l) => /bt-dh|10\.254\.255\.252/.test(l)), []);
  const route = ['10.254.255.252/30'];
  const chain = 'BT-DH-CHAIN';
  const pin = '/sys/fs/bpf/berth-bt-dh';
  const ours = (lines: string[]): string[] => lines.filter((l) => /bt-dh|BT-DH|10\.254\.255\.252/.test(l)).sort();
  try {
    // An unreachable route (nothing can leave by it), an iptables chain hooked into nothing, an empty bpffs dir.
    t.is((await run('ip', ['route', 'add', 'unreachable', ...route])).code, 0);
    t.is((await run('iptables', ['-N', chain])).code, 0);
    t.is((await run('iptables', ['-A', chain, '-m', 'comment', '--comment', 'berth-bt-dh', '-j', 'RETURN'])).code, 0);
    fs.mkdirSync(pin);
    const ns = await createNetns('bt-dh-state');
    const during = ours(diffHostState(before, await snapshotHostState()));
    t.true(during.includes('routes: + unreachable 10.254.255.252/30'), during.join('\n'));
    t.true(during.some((l) => l.startsWith('iptablesSave: + -A BT-DH-CHAIN') && l.includes('berth-bt-dh')), during.join('\n'));
    t.true(during.includes('bpffsBerth: + berth-bt-dh'), during.join('\n'));
    t.true(during.includes('ipNetns: + bt-dh-state'), during.join('\n'));
    await deleteNetns(ns);
  } finally {
    await run('ip', ['route', 'del', 'unreachable', ...route]);
    await run('iptables', ['-F', chain]);
    await run('iptables', ['-X', chain]);
    fs.rmSync(pin, { recursive: true, force: true });
    await deleteNetns('bt-dh-state');
  }
  t.deepEqual(ours(diffHostState(before, await snapshotHostState())), [], 'all gone again');
});

test.serial('removeTestContainers removes exactly this suite\'s containers', async (t) => {
  await runContainer({ suite: SUITE, name: 'bt-dh-rm', labels: {}, cmd: ['sleep', '600'] });
  const other = await runContainer({ suite: `${SUITE}-other`, name: 'bt-dh-other', labels: {}, cmd: ['sleep', '600'] });
  t.teardown(() => removeTestContainers(`${SUITE}-other`));
  t.true((await removeTestContainers(SUITE)) >= 1);
  t.deepEqual(await docker.listContainers({ all: true, filters: { label: [`berth-test=${SUITE}`] } }), []);
  t.true((await docker.getContainer(other.id).inspect()).State.Running, 'another suite is untouched');
});
