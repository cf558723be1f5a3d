/**
 * The shared test helpers do what other suites rely on: the local image and its tools, the probe's
 * JSON (peer, reply, UDP source, errno), labelled containers, IPv6 test networks, netns, and
 * cleanup that leaves no trace.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { run } from '../../src/util/exec';
import {
  TEST_IMAGE, createTestNetwork, docker, ensureTestImage, execIn, execInFull, removeTestContainers, removeTestNetwork, runContainer, testBin,
} from '../helpers/docker';
import { createNetns, deleteNetns, execInNetns, netnsExists } from '../helpers/netns';
import { diffHostState, hostAsBefore, snapshotHostState, systemCommand, type SnapshotRunner } from '../helpers/cleanup';
import { Datapath } from '../../src/datapath';
import type { DatapathOptions } from '../../src/datapath/types';
import { cgroup2RootMounts } from '../../src/datapath/cgroup';
import { silentLogger } from '../../src/util/log';
import { v4Overlap } from '../helpers/addr';
import { tags, type ProbeResult } from '../helpers/probe';

const SUITE = 'docker-helpers';
const NETS = ['bt-dh-a', 'bt-dh-b'];

interface Probe { ok: boolean; peer: string | null; reply: string | null; from: string | null; errno: string | null; ms: number }
const parse = (out: string): Probe[] => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Probe);

test.after.always(async () => {
  await removeTestContainers(SUITE);
  for (const n of NETS) await removeTestNetwork(n);
  await docker.getNetwork('bt-dh-unlabelled').remove().catch(() => undefined);
});

// After the file's cleanup hook, before its setup hook (AVA runs hooks in declaration order).
hostAsBefore(test);

test.before(async () => {
  await removeTestContainers(SUITE);
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

test.serial('snapshotHostState/diffHostState see every part come and go: cgroup tree, iptables, nft, ip rules, netns, containers, bpffs, routes, berth dirs', async (t) => {
  const mine = /bt-dh|BT-DH|bt_dh|10\.254\.255\.252|10\.216\.|fd00:216:|0x7e57/;
  const ours = (lines: string[]): string[] => lines.filter((l) => mine.test(l)).sort();
  const before = await snapshotHostState();
  t.deepEqual(ours(diffHostState(before, await snapshotHostState())), []);
  const route = ['10.254.255.252/30'];
  const chain = 'BT-DH-CHAIN';
  const pin = '/sys/fs/bpf/berth-bt-dh';
  const dirs = ['/run/berth-bt-dh-snap', '/var/lib/berth-bt-dh-snap'];
  const cgroup = path.join(cgroup2RootMounts()[0], `bt-dh-snap-${process.pid}`);
  // A datapath of this test's own attached to a test cgroup: its programs show in the cgroup tree.
  const dpOpts: DatapathOptions = {
    pinDir: '/sys/fs/bpf/berth-bt-dh-dp', cgroupRoot: cgroup, hostProc: '/proc', runDir: '/run/berth-bt-dh-dp',
    serviceCidr: '10.216.0.0/16', serviceCidr6: 'fd00:216::/112', logger: silentLogger(),
  };
  try {
    // An unreachable route (nothing can leave by it), an iptables chain hooked into nothing, an
    // empty bpffs dir, an nft table hooked into nothing, policy rules only for a mark nothing sets,
    // berth-named state dirs, a created (never started) container with a berth label.
    t.is((await run('ip', ['route', 'add', 'unreachable', ...route])).code, 0);
    t.is((await run('iptables', ['-N', chain])).code, 0);
    t.is((await run('iptables', ['-A', chain, '-m', 'comment', '--comment', 'berth-bt-dh', '-j', 'RETURN'])).code, 0);
    fs.mkdirSync(pin);
    const nft = await run(systemCommand('nft'), ['add', 'table', 'inet', 'bt_dh_berth']);
    t.is(nft.code, 0, nft.stderr);
    t.is((await run('ip', ['rule', 'add', 'pref', '31977', 'fwmark', '0x7e57', 'lookup', '31977'])).code, 0);
    t.is((await run('ip', ['-6', 'rule', 'add', 'pref', '31977', 'fwmark', '0x7e57', 'lookup', '31977'])).code, 0);
    for (const d of dirs) fs.mkdirSync(path.join(d, 'inside'), { recursive: true });
    await docker.createContainer({ Image: TEST_IMAGE, name: 'bt-dh-snap', Labels: { 'berth-test': SUITE, 'berth.service': 'bt-dh-snap' }, Cmd: ['true'] });
    fs.mkdirSync(cgroup);
    const dp = await Datapath.open(dpOpts);
    dp.close();
    const ns = await createNetns('bt-dh-state');
    const during = ours(diffHostState(before, await snapshotHostState()));
    const expect = (what: string, pred: (l: string) => boolean): void => { t.true(during.some(pred), `${what} in:\n${during.join("\n")}`); };
    expect('route', (l) => l === 'routes: + unreachable 10.254.255.252/30');
    expect('datapath route', (l) => l.startsWith('routes: + unreachable 10.216.0.0/16'));
    expect('iptables', (l) => l.startsWith('iptablesSave: + -A BT-DH-CHAIN') && l.includes('berth-bt-dh'));
    expect('bpffs dir', (l) => l === 'bpffsBerth: + berth-bt-dh');
    expect('bpffs pin', (l) => l === 'bpffsBerth: + berth-bt-dh-dp/link_berth_sock4_connect');
    expect('netns', (l) => l === 'ipNetns: + bt-dh-state');
    expect('nft', (l) => l === 'nftBerth: + table inet bt_dh_berth {');
    expect('ip rule', (l) => l === 'ipRules: + 31977:\tfrom all fwmark 0x7e57 lookup 31977');
    expect('ip -6 rule', (l) => l === 'ipRules: + v6 31977:\tfrom all fwmark 0x7e57 lookup 31977');
    for (const d of dirs) expect(d, (l) => l === `berthDirs: + ${d}/inside`);
    expect('container', (l) => l === 'berthContainers: + bt-dh-snap');
    // The cgroup tree: this test's cgroup with berth's programs (no program ids: they change).
    expect('cgroup tree', (l) => l === `bpftoolCgroupTree: + ${cgroup} cgroup_inet4_connect multi berth_sock4_connect`);
    await deleteNetns(ns);
  } finally {
    await run('ip', ['route', 'del', 'unreachable', ...route]);
    await run('iptables', ['-F', chain]);
    await run('iptables', ['-X', chain]);
    fs.rmSync(pin, { recursive: true, force: true });
    await run(systemCommand('nft'), ['delete', 'table', 'inet', 'bt_dh_berth']);
    await run('ip', ['rule', 'del', 'pref', '31977']);
    await run('ip', ['-6', 'rule', 'del', 'pref', '31977']);
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
    await docker.getContainer('bt-dh-snap').remove({ force: true }).catch(() => undefined);
    await Datapath.cleanup(dpOpts);
    try { fs.rmdirSync(cgroup); } catch { /* never made */ }
    await deleteNetns('bt-dh-state');
  }
  t.deepEqual(ours(diffHostState(before, await snapshotHostState())), [], 'all gone again');
});

test.serial('a snapshot command that fails fails the snapshot (no empty list that compares equal)', async (t) => {
  const commands = [['bpftool', 'cgroup'], ['iptables-save'], ['ip6tables-save'], ['nft', 'list'], ['ip', 'rule'], ['ip', '-6', 'rule'],
    ['ip', 'netns'], ['docker', 'ps'], ['ip', '-4', 'route'], ['ip', '-6', 'route']];
  for (const failing of commands) {
    const runner: SnapshotRunner = (file, args) => {
      const argv = [file, ...args];
      if (failing.every((w, i) => argv[i] === w)) return Promise.resolve({ code: 1, stdout: '', stderr: 'pretend failure' });
      return run(systemCommand(file), args, { timeoutMs: 30000 });
    };
    const e = await t.throwsAsync(snapshotHostState(runner), undefined, failing.join(' '));
    t.true(e?.message.includes(`\`${failing.join(' ')}`) && e.message.includes('pretend failure'), e?.message);
  }
});

test.serial('removeTestContainers removes exactly this suite\'s containers', async (t) => {
  await runContainer({ suite: SUITE, name: 'bt-dh-rm', labels: {}, cmd: ['sleep', '600'] });
  const other = await runContainer({ suite: `${SUITE}-other`, name: 'bt-dh-other', labels: {}, cmd: ['sleep', '600'] });
  t.teardown(() => removeTestContainers(`${SUITE}-other`));
  t.true((await removeTestContainers(SUITE)) >= 1);
  t.deepEqual(await docker.listContainers({ all: true, filters: { label: [`berth-test=${SUITE}`] } }), []);
  t.true((await docker.getContainer(other.id).inspect()).State.Running, 'another suite is untouched');
});

test('tags(): every probe must have been answered (a client left unserved fails the claim)', (t) => {
  const ok = (reply: string): ProbeResult => ({ ok: true, peer: '10.96.0.1:80', reply, from: null, errno: null, ms: 1 });
  const refused: ProbeResult = { ok: false, peer: null, reply: null, from: null, errno: 'ECONNREFUSED', ms: 1 };
  t.deepEqual([...tags([ok('a:ping'), ok('b\nping')])].sort(), ['a', 'b']);
  t.throws(() => tags([ok('a:ping'), refused, refused, refused]), { message: /3 of 4 probes got no answer.*ECONNREFUSED/ });
});
