/**
 * The datapath for real: the compiled BPF programs attached at the host's root cgroup v2 through
 * pinned links (test pin dir), a test VIP range made unreachable by Datapath.open before any
 * traffic, backends that are servers on 127.0.0.x / ::1 or inside a network namespace this test
 * creates. Runs as root, serially.
 */
import test from 'ava';
import { hostAsBefore } from '../helpers/cleanup';
import fs from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { Datapath, linkPinName } from '../../src/datapath';
import { hasRoute, routeMetric } from '../../src/datapath/routes';
import { loadNative } from '../../src/native';
import type { Service } from '../../src/model/types';
import type { DatapathOptions } from '../../src/datapath/types';
import { silentLogger } from '../../src/util/log';
import { run } from '../../src/util/exec';
import {
  tcpServer, udpServer, tcpProbe, udpProbe, repeat, until, createNetns, deleteNetns, inNetns,
  PY_TCP_SERVER, PY_TCP_CLIENT, PY_UDP_CONNECTED, type Closer,
} from './datapath-util';
import { HAS_NETNS_COOKIE_OPTION, HAS_SOCK_DESTROY, REFUSED_ERRNO } from '../helpers/kernel';

const OPTS: DatapathOptions = {
  pinDir: '/sys/fs/bpf/berth-test-dp',
  cgroupRoot: 'auto',
  hostProc: '/proc',
  runDir: '/run/berth-test-dp',
  serviceCidr: '10.211.0.0/16',
  serviceCidr6: 'fd00:211::/112',
  logger: silentLogger(),
};
const NETNS = `bt-dp-${process.pid}`;
const VIP = '10.211.0.10', VIP6 = 'fd00:211::a';
const UDP_VIP = '10.211.0.53', UDP_VIP6 = 'fd00:211::35';
const EMPTY_VIP = '10.211.0.99', EMPTY_VIP6 = 'fd00:211::63';
const ING_VIP = '10.211.0.80', ING_VIP6 = 'fd00:211::50';
const NS_VIP = '10.211.0.77';
// Backend ports, unlikely to collide with other suites.
const P = { tcp: 28411, udp: 28412, ingress: 28413, ns: 28414, nsUdp: 28415 };
const NS_UDP_VIP = '10.211.0.55';

let dp: Datapath;
const closers: Closer[] = [];

function service(name: string, vip: string, vip6: string | null, backends: [string | null, string | null][], ports: Service['ports']): Service {
  return {
    name, kind: 'service', vip, vip6, ports, routes: [], ingress: null, errors: [],
    backends: backends.map(([ip, ip6], i) => ({ container: `${name}-${i}`, id: `${name}-${i}`, ip, ip6 })),
  };
}

/** The desired state of the suite; tests change `udpBackends` and `webBackends`. */
let webBackends: [string | null, string | null][] = [['127.0.0.2', '::1'], ['127.0.0.3', null]];
let udpBackends: [string | null, string | null][] = [['127.0.0.2', '::1'], ['127.0.0.3', null]];
let nsUdpBackends: [string | null, string | null][] = [['127.0.0.1', null]];
function desired(): Service[] {
  return [
    service('web', VIP, VIP6, webBackends, [{ port: 80, protocol: 'tcp', targetPort: P.tcp }]),
    service('dns', UDP_VIP, UDP_VIP6, udpBackends, [{ port: 53, protocol: 'udp', targetPort: P.udp }]),
    service('empty', EMPTY_VIP, EMPTY_VIP6, [], [{ port: 80, protocol: 'tcp', targetPort: 80 }, { port: 53, protocol: 'udp', targetPort: 53 }]),
    service('inns', NS_VIP, null, [['127.0.0.1', null]], [{ port: 80, protocol: 'tcp', targetPort: P.ns }]),
    service('innsudp', NS_UDP_VIP, null, nsUdpBackends, [{ port: 53, protocol: 'udp', targetPort: P.nsUdp }]),
    {
      name: 'shop', kind: 'ingress', vip: ING_VIP, vip6: ING_VIP6, ports: [{ port: 80, protocol: 'tcp', targetPort: 80 }],
      backends: [], routes: [], errors: [], ingress: { listen: 80, publish: null, proxyPort: P.ingress },
    },
  ];
}

/**
 * Ids of the programs the kernel has attached at cgroup `root` through bpf_links (berth attaches
 * only through links), from `bpftool link show`. Not `bpftool cgroup show`: Debian 12's bpftool
 * 7.1 prints an empty list (exit 255) on Linux 5.10, whose prog query rejects its newer attr.
 */
async function progIdsAttachedAt(root: string): Promise<number[]> {
  const cgroupId = Number(fs.statSync(root, { bigint: true }).ino);
  const r = await run('bpftool', ['-j', 'link', 'show']);
  if (r.code !== 0) throw new Error(`bpftool link show: ${r.stderr}`);
  const links = JSON.parse(r.stdout) as { type: string; prog_id: number; cgroup_id?: number }[];
  return links.filter((l) => l.type === 'cgroup' && l.cgroup_id === cgroupId).map((l) => l.prog_id).sort((a, b) => a - b);
}

async function progIdsOfMyLinks(): Promise<number[]> {
  const n = loadNative();
  const ids: number[] = [];
  for (const f of fs.readdirSync(OPTS.pinDir).filter((x) => x.startsWith('link_'))) {
    const fd = n.objGet(`${OPTS.pinDir}/${f}`);
    try { ids.push(n.linkInfo(fd).progId); } finally { n.closeFd(fd); }
  }
  return ids.sort((a, b) => a - b);
}

test.after.always(async () => {
  for (const c of closers) await c.close().catch(() => undefined);
  dp?.close();
  await deleteNetns(NETNS);
  await Datapath.cleanup(OPTS);
});

// The host-as-before check (after the cleanup hooks above, before the setup hooks below).
// Its before hook removes what a crashed earlier run of this file left (its pin dir, range, links).
hostAsBefore(test, { ownLeftovers: /berth-test-dp\b|10\.211\.0\.0\/16|fd00:211::\/112|^bpftoolCgroupTree: - \S+ \S+ multi berth_sock/ });

test.before(async () => {
  // A leftover of a crashed earlier run of this suite (never anything else's).
  await Datapath.cleanup(OPTS);
  await deleteNetns(NETNS);
  dp = await Datapath.open(OPTS);
  for (const a of ['127.0.0.2', '127.0.0.3']) {
    closers.push(await tcpServer(a, P.tcp, `tcp-${a}`));
    closers.push(await udpServer(a, P.udp, `udp-${a}`));
  }
  closers.push(await tcpServer('::1', P.tcp, 'tcp-::1'));
  closers.push(await udpServer('::1', P.udp, 'udp-::1'));
  closers.push(await tcpServer('127.0.0.1', P.ingress, 'envoy-stand-in'));
  const r = await dp.sync(desired(), { prune: true });
  if (r.errors.length) throw new Error(`sync errors: ${JSON.stringify(r.errors)}`);
});

test('open: programs attached at the verified host root, routes in place before traffic', async (t) => {
  const st = dp.status();
  t.true(st.cgroupIsHostRoot, st.cgroupRoot);
  // egress: crossNetwork allow's (the default) balanced-flow recorder, bpf/flows.bpf.c.
  // sock_create: before 5.14 berth learns netns cookies through a probe socket (bpf/netns_cookie.bpf.c).
  const shim = HAS_NETNS_COOKIE_OPTION ? [] : ['sock_create'];
  t.deepEqual([...st.attached].sort(), ['connect4', 'connect6', 'egress', 'getpeername4', 'getpeername6', 'recvmsg4', 'recvmsg6', 'sendmsg4', 'sendmsg6', ...shim]);
  t.truthy(st.flows?.matchPin, 'the xt_bpf match program is pinned');
  t.true(await hasRoute(OPTS.serviceCidr, routeMetric(OPTS.pinDir)));
  t.true(await hasRoute(OPTS.serviceCidr6, routeMetric(OPTS.pinDir)));
  const atRoot = await progIdsAttachedAt(st.cgroupRoot);
  const mine = await progIdsOfMyLinks();
  t.is(mine.length, st.attached.length, 'one pinned link per hook');
  for (const id of mine) t.true(atRoot.includes(id), `prog ${id} attached at ${st.cgroupRoot}`);
  t.true(st.counts.services > 0);
});

test('TCP/IPv4 host -> VIP: both backends used, getpeername is the VIP', async (t) => {
  const res = await repeat(30, () => tcpProbe(VIP, 80));
  t.true(res.every((r) => r.ok), JSON.stringify(res.filter((r) => !r.ok)));
  t.true(res.every((r) => r.peer === `${VIP}:80`), res[0].peer ?? '');
  t.deepEqual([...new Set(res.map((r) => r.tag))].sort(), ['tcp-127.0.0.2', 'tcp-127.0.0.3']);
});

test('TCP/IPv6 host -> VIP6 reaches the IPv6 backend, getpeername is the VIP6', async (t) => {
  const res = await repeat(5, () => tcpProbe(VIP6, 80));
  t.true(res.every((r) => r.ok && r.tag === 'tcp-::1'), JSON.stringify(res));
  t.true(res.every((r) => r.peer === `${VIP6}:80`), res[0].peer ?? '');
});

for (const [family, vip] of [[4, UDP_VIP], [6, UDP_VIP6]] as const) {
  test(`UDP/IPv${family}: connected (getpeername) and unconnected; replies come from the VIP`, async (t) => {
    const connected = await repeat(20, () => udpProbe(vip, 53, true));
    t.true(connected.every((r) => r.ok), JSON.stringify(connected.filter((r) => !r.ok)));
    const hp = `${vip}:53`;
    t.true(connected.every((r) => r.peer === hp), `peer ${connected[0].peer}`);
    t.true(connected.every((r) => r.from === hp), `from ${connected[0].from}`);
    const unconnected = await repeat(20, () => udpProbe(vip, 53, false));
    t.true(unconnected.every((r) => r.ok), JSON.stringify(unconnected.filter((r) => !r.ok)));
    t.true(unconnected.every((r) => r.from === hp), `from ${unconnected[0].from}`);
    const tags = new Set([...connected, ...unconnected].map((r) => r.tag));
    t.deepEqual([...tags].sort(), family === 4 ? ['udp-127.0.0.2', 'udp-127.0.0.3'] : ['udp-::1']);
  });
}

test('a service without backends refuses at once with ECONNREFUSED (EPERM before 5.18; TCP and UDP, v4 and v6) and counts it', async (t) => {
  const before = dp.counters().get('empty')?.noBackend ?? 0;
  for (const vip of [EMPTY_VIP, EMPTY_VIP6]) {
    const r = await tcpProbe(vip, 80, 5000);
    t.false(r.ok);
    t.is(r.errno, REFUSED_ERRNO, JSON.stringify(r));
    const u = await udpProbe(vip, 53, false);
    t.is(u.errno, REFUSED_ERRNO, JSON.stringify(u));
  }
  t.is(dp.counters().get('empty')?.noBackend, before + 4);
});

test('connect counters count balanced connects per service', async (t) => {
  const before = dp.counters().get('web')?.connects ?? 0;
  await repeat(7, () => tcpProbe(VIP, 80));
  t.is(dp.counters().get('web')?.connects, before + 7);
});

test('sockets in another network namespace are balanced too; host-netns-only ingress VIPs are not', async (t) => {
  await createNetns(NETNS);
  const server: ChildProcess = spawn('ip', ['netns', 'exec', NETNS, 'python3', '-c', PY_TCP_SERVER, '127.0.0.1', String(P.ns), 'in-netns', '3']);
  t.teardown(() => { server.kill('SIGKILL'); });
  await until('netns server ready', async () => new Promise<boolean>((resolve) => {
    const onData = (d: Buffer): void => { if (d.toString().includes('ready')) resolve(true); };
    server.stdout!.once('data', onData);
    setTimeout(() => resolve(false), 2000);
  }), 10000);
  // VIP -> 127.0.0.1:P.ns is that namespace's own loopback: the connect hook ran for its socket.
  const r = await inNetns(NETNS, PY_TCP_CLIENT, [NS_VIP, '80']);
  t.is(r.stdout.trim(), `ok in-netns ${NS_VIP}:80`, r.stderr);
  // The ingress VIP is rewritten only in the host netns; here the connect is left alone and the
  // namespace (no routes) has no way to the VIP at all.
  const ing = await inNetns(NETNS, PY_TCP_CLIENT, [ING_VIP, '80']);
  t.is(ing.stdout.trim(), 'err ENETUNREACH', ing.stderr);
});

test('removing a backend destroys connected UDP sockets in other network namespaces too', async (t) => {
  await createNetns(NETNS);
  const proc: ChildProcess = spawn('ip', ['netns', 'exec', NETNS, 'python3', '-c', PY_UDP_CONNECTED, NS_UDP_VIP, '53', String(P.nsUdp)]);
  t.teardown(() => { proc.kill('SIGKILL'); });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  proc.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  await until('the netns client connected through the VIP', async () => out.includes('connected') || out.includes('Error'), 10000);
  t.regex(out, /connected in-netns/);
  nsUdpBackends = [];
  const r = await dp.sync(desired(), { prune: true });
  t.deepEqual(r.errors, []);
  await until('the netns socket reports the destroy', async () => /error|no-error|unexpected/.test(out.replace('connected', '')), 25000);
  // Before 6.5 (no bpf_sock_destroy) the socket stays connected: its 20 s wait ends quietly.
  t.regex(out, HAS_SOCK_DESTROY ? /error ECONNABORTED/ : /no-error/, out);
});

test('ingress VIP from the host goes to 127.0.0.1:proxyPort (v4, and v6 via a v4-mapped loopback)', async (t) => {
  const r = await tcpProbe(ING_VIP, 80);
  t.deepEqual([r.ok, r.tag, r.peer], [true, 'envoy-stand-in', `${ING_VIP}:80`], JSON.stringify(r));
  const r6 = await tcpProbe(ING_VIP6, 80);
  t.deepEqual([r6.ok, r6.tag, r6.peer], [true, 'envoy-stand-in', `${ING_VIP6}:80`], JSON.stringify(r6));
});

test('removing a backend: no new connects to it, and its connected UDP sockets are destroyed (others and direct ones kept)', async (t) => {
  const dgram = await import('node:dgram');
  // Open connected UDP sockets until both backends have one.
  const socks: { s: import('node:dgram').Socket; tag: string; errors: string[] }[] = [];
  t.teardown(() => { for (const x of socks) try { x.s.close(); } catch { /* closed */ } });
  for (let i = 0; i < 40 && new Set(socks.map((x) => x.tag)).size < 2; i++) {
    const s = dgram.createSocket('udp4');
    const entry = { s, tag: '', errors: [] as string[] };
    s.on('error', (e: NodeJS.ErrnoException) => entry.errors.push(e.code ?? e.message));
    await new Promise<void>((resolve) => s.connect(53, UDP_VIP, () => resolve()));
    const reply = await new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve(''), 2000);
      s.once('message', (m) => { clearTimeout(timer); resolve(m.toString().split('|')[0]); });
      s.send('hello');
    });
    entry.tag = reply;
    socks.push(entry);
  }
  const toGone = socks.find((x) => x.tag === 'udp-127.0.0.3');
  const toKept = socks.find((x) => x.tag === 'udp-127.0.0.2');
  t.truthy(toGone && toKept, `tags: ${socks.map((x) => x.tag).join(',')}`);
  const tcpBefore = await repeat(1, () => tcpProbe(VIP, 80));
  t.true(tcpBefore[0].ok);
  // A socket connected to the backend's own address, not through the VIP: not berth's to kill.
  const direct = { s: dgram.createSocket('udp4'), tag: 'direct', errors: [] as string[] };
  direct.s.on('error', (e: NodeJS.ErrnoException) => direct.errors.push(e.code ?? e.message));
  await new Promise<void>((resolve) => direct.s.connect(P.udp, '127.0.0.3', () => resolve()));
  socks.push(direct);

  udpBackends = [['127.0.0.2', '::1']];
  webBackends = [['127.0.0.2', '::1']];
  const r = await dp.sync(desired(), { prune: true });
  t.deepEqual(r.errors, []);
  t.true(r.deletes >= 2, JSON.stringify(r));
  // The destroyed socket reports ECONNABORTED; the other one keeps working.
  if (HAS_SOCK_DESTROY) {
    await until('the socket to the removed backend is aborted', async () => toGone!.errors.length > 0, 5000);
    t.is(toGone!.errors[0], 'ECONNABORTED');
  } else {
    // Before 6.5 (no bpf_sock_destroy) it is left connected to the removed backend.
    await new Promise((r) => setTimeout(r, 2000));
    t.deepEqual(toGone!.errors, [], 'no destroy without bpf_sock_destroy');
  }
  t.deepEqual(toKept!.errors, []);
  t.deepEqual(direct.errors, [], 'the direct socket to the removed backend is left alone');
  const directReply = await new Promise<string>((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), 2000);
    direct.s.once('message', (m) => { clearTimeout(timer); resolve(m.toString().split('|')[0]); });
    direct.s.send('direct');
  });
  t.is(directReply, 'udp-127.0.0.3');
  const still = await new Promise<string>((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), 2000);
    toKept!.s.once('message', (m) => { clearTimeout(timer); resolve(m.toString().split('|')[0]); });
    toKept!.s.send('again');
  });
  t.is(still, 'udp-127.0.0.2');
  const tcp = await repeat(12, () => tcpProbe(VIP, 80));
  t.deepEqual([...new Set(tcp.map((x) => x.tag))], ['tcp-127.0.0.2']);
});

test('adoption: close and reopen keeps links, ids and traffic; the same sync writes nothing', async (t) => {
  const progsBefore = await progIdsOfMyLinks();
  const countersBefore = dp.counters().get('web')!.connects;
  dp.close();
  // Closed berthd: the pinned programs and maps keep serving.
  const during = await tcpProbe(VIP, 80);
  t.true(during.ok && during.tag === 'tcp-127.0.0.2', JSON.stringify(during));
  dp = await Datapath.open(OPTS);
  t.is((await progIdsOfMyLinks()).length, progsBefore.length, 'still one link per hook');
  const atRoot = await progIdsAttachedAt(dp.status().cgroupRoot);
  for (const id of await progIdsOfMyLinks()) t.true(atRoot.includes(id), `prog ${id} attached`);
  for (const id of progsBefore) t.false(atRoot.includes(id), `old prog ${id} replaced in place, not attached twice`);
  t.true(fs.existsSync(`${OPTS.pinDir}/${linkPinName('berth_sock4_connect')}`));
  const r = await dp.sync(desired(), { prune: true });
  t.deepEqual([r.updates, r.deletes, r.errors], [0, 0, []]);
  t.true(dp.counters().get('web')!.connects >= countersBefore + 1, 'counters survive the restart');
  const after = await tcpProbe(VIP, 80);
  t.true(after.ok && after.peer === `${VIP}:80`);
});

test('prune=false keeps services missing from the desired list', async (t) => {
  const r = await dp.sync(desired().filter((s) => s.name !== 'web'), { prune: false });
  t.is(r.deletes, 0);
  t.true((await tcpProbe(VIP, 80)).ok);
});

test('a full services map fails the services that do not fit, per service, and the others keep working', async (t) => {
  const n = loadNative();
  const max = n.constants.MAX_SERVICE_ENTRIES;
  // Fill the map directly (test pin dir only), leaving room for nothing: then sync a new service.
  const fd = n.objGet(`${OPTS.pinDir}/berth_services`);
  const codec = await import('../../src/datapath/codec');
  const cur = n.mapDump(fd).count;
  const filler: Buffer[] = [];
  try {
    for (let i = 0; cur + i < max; i++) {
      // Orphan slots (no master) in a corner of the range nobody uses: invisible to connects.
      const k = codec.encodeSvcKey({ vip: `10.211.${200 + Math.floor(i / 65536)}.${Math.floor(i / 256) % 256}`, port: 1 + (i % 256), protocol: 'udp', slot: 1 });
      n.mapUpdate(fd, k, codec.encodeSvcVal({ id: 1, count: 0, flags: 0 }));
      filler.push(k);
    }
    const extra = service('extra', '10.211.1.1', null, [['127.0.0.2', null]], [{ port: 80, protocol: 'tcp', targetPort: P.tcp }]);
    const r = await dp.sync([...desired(), extra], { prune: false });
    t.true(r.errors.some((e) => e.service === 'extra' && /E2BIG|ENOSPC/.test(e.error)), JSON.stringify(r.errors));
    t.false(r.errors.some((e) => e.service === 'web'));
    t.true((await tcpProbe(VIP, 80)).ok, 'web still served');
  } finally {
    for (const k of filler) n.mapDelete(fd, k);
    n.closeFd(fd);
  }
});

test('one unconnected UDP socket talking to four VIPs at once: every reply comes from the VIP it was sent to', async (t) => {
  const dgram = await import('node:dgram');
  // Four UDP services (as many as a socket keeps translations for), each with a backend of its own.
  const addrs = ['127.0.0.4', '127.0.0.5', '127.0.0.6', '127.0.0.7'];
  const servers = await Promise.all(addrs.map((a) => udpServer(a, P.udp, `udp-${a}`)));
  t.teardown(async () => { for (const x of servers) await x.close(); });
  const extra = addrs.map((a, i) => service(`multi-${i}`, `10.211.2.${i + 1}`, null, [[a, null]], [{ port: 53, protocol: 'udp', targetPort: P.udp }]));
  t.deepEqual((await dp.sync([...desired(), ...extra], { prune: true })).errors, []);
  t.teardown(async () => { await dp.sync(desired(), { prune: true }); });
  const s = dgram.createSocket('udp4');
  t.teardown(() => s.close());
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', () => resolve()));
  for (let round = 0; round < 2; round++) {
    const replies: { tag: string; from: string }[] = [];
    const all = new Promise<void>((resolve) => s.on('message', (m, rinfo) => {
      replies.push({ tag: m.toString().split('|')[0], from: `${rinfo.address}:${rinfo.port}` });
      if (replies.length === addrs.length) resolve();
    }));
    // All four sent before any reply is read: the socket holds four translations at once.
    for (const e of extra) s.send('x', 53, e.vip);
    await Promise.race([all, new Promise((r) => setTimeout(r, 3000))]);
    s.removeAllListeners('message');
    t.deepEqual(replies.map((r) => `${r.tag} from ${r.from}`).sort(), addrs.map((a, i) => `udp-${a} from ${extra[i].vip}:53`).sort(), `round ${round}`);
  }
});

test('100,000 services in one sync (the benchmark\'s largest size) and back: no error, every entry there, then gone', async (t) => {
  const n = loadNative();
  // Frontends in the suite's own range (no traffic goes to them); one shared backend.
  const many: Service[] = Array.from({ length: 100000 }, (_, i) =>
    service(`big-${i}`, `10.211.${(i >> 8) & 255}.${i & 255}`, null, [['127.0.0.2', null]], [{ port: 1000 + (i >> 16), protocol: 'tcp', targetPort: P.tcp }]));
  const fd = n.objGet(`${OPTS.pinDir}/berth_services`);
  t.teardown(() => n.closeFd(fd));
  const before = n.mapDump(fd).count;
  const up = await dp.sync([...desired(), ...many], { prune: true });
  t.deepEqual(up.errors, []);
  t.is(up.updates, 100000 * 3, 'master, slot and counter reset per service');
  t.is(n.mapDump(fd).count, before + 200000);
  const down = await dp.sync(desired(), { prune: true });
  t.deepEqual(down.errors, []);
  t.is(down.deletes, 200000);
  t.is(n.mapDump(fd).count, before);
  t.true((await tcpProbe(VIP, 80)).ok, 'the suite\'s own services still answer');
});

test('a kernel without batch map ops: the datapath writes element by element (puts and deletes), and traffic follows', async (t) => {
  // The addon as on a kernel without BPF_MAP_*_BATCH for these maps: every batch call reports
  // "unsupported" (and counts that it was asked), nothing is written by it.
  const n = loadNative();
  const realUpdate = n.mapUpdateBatch, realDelete = n.mapDeleteBatch;
  let asked = 0;
  n.mapUpdateBatch = () => { asked++; return { done: 0, error: null, unsupported: true }; };
  n.mapDeleteBatch = () => { asked++; return { done: 0, error: null, unsupported: true }; };
  t.teardown(() => { n.mapUpdateBatch = realUpdate; n.mapDeleteBatch = realDelete; });
  const fd = n.objGet(`${OPTS.pinDir}/berth_services`);
  t.teardown(() => n.closeFd(fd));
  const before = n.mapDump(fd).count;
  const FB_VIP = '10.211.0.120';
  const extra = service('fallback', FB_VIP, null, [['127.0.0.2', null], ['127.0.0.3', null]], [{ port: 80, protocol: 'tcp', targetPort: P.tcp }]);
  const up = await dp.sync([...desired(), extra], { prune: true });
  t.deepEqual(up.errors, []);
  t.true(asked >= 1, 'the batch call was tried first');
  t.is(n.mapDump(fd).count, before + 3, 'master and two slots written one by one');
  const tags = new Set<string | null>();
  for (const r of await repeat(12, () => tcpProbe(FB_VIP, 80))) {
    t.true(r.ok, JSON.stringify(r));
    tags.add(r.tag);
  }
  t.deepEqual([...tags].sort(), ['tcp-127.0.0.2', 'tcp-127.0.0.3']);
  const down = await dp.sync(desired(), { prune: true });
  t.deepEqual(down.errors, []);
  t.is(n.mapDump(fd).count, before, 'deleted one by one');
  t.false((await tcpProbe(FB_VIP, 80, 1000)).ok, 'gone from the maps: nothing serves the VIP any more');
});

test('cleanup removes links (programs detached), pins, routes; the host is as before', async (t) => {
  const progs = await progIdsOfMyLinks();
  const root = dp.status().cgroupRoot;
  dp.close();
  const removed = await Datapath.cleanup(OPTS);
  t.true(removed.includes(OPTS.pinDir), removed.join('\n'));
  t.false(fs.existsSync(OPTS.pinDir));
  const atRoot = await progIdsAttachedAt(root);
  for (const id of progs) t.false(atRoot.includes(id), `prog ${id} detached`);
  t.false(await hasRoute(OPTS.serviceCidr, routeMetric(OPTS.pinDir)));
  t.false(await hasRoute(OPTS.serviceCidr6, routeMetric(OPTS.pinDir)));
  t.deepEqual(await Datapath.cleanup(OPTS), [], 'a second cleanup finds nothing');
  // Re-open for the after hook's symmetry (it cleans up again).
  dp = await Datapath.open(OPTS);
});
