/**
 * The accept rule for peers' flows (src/cluster/firewall.ts) on a real kernel with real traffic,
 * in three network namespaces of the test's own (the host's iptables are never touched):
 *
 *   peer  p0 192.0.2.2/24 ──── r0 192.0.2.1/24  [this host: FORWARD policy DROP, DOCKER-USER first,
 *                                               Docker's own accept rules]  c0 172.31.250.1/24 ──── c1 172.31.250.2/24  "container"
 *
 * "This host" gets Docker's FORWARD layout for a bridge (policy DROP; jump to DOCKER-USER, which
 * ends in RETURN; established flows into the bridge and everything out of it accepted), so a new
 * flow from the peer to the container is dropped exactly as on a Docker host, until berth's
 * BERTH_PEERS accepts it. TCP and UDP echo servers in the "container" answer the peer's probes.
 */
import test from 'ava';
import path from 'node:path';
import { hostAsBefore } from '../helpers/cleanup';
import { buildTestBinaries, testBin } from '../helpers/images';
import { run } from '../../src/util/exec';
import type { PeerAccept, PeerAcceptStatus } from '../../src/cluster/firewall';

const id = process.pid % 10000;
const NS = { peer: `bt-fwp-${id}`, host: `bt-fwh-${id}`, ctr: `bt-fwc-${id}` };
const PEER = '192.0.2.2';
const CTR = '172.31.250.2';
const SUBNET = '172.31.250.0/24';

async function sh(args: string[]): Promise<string> {
  const r = await run(args[0], args.slice(1), { timeoutMs: 30000 });
  if (r.code !== 0) throw new Error(`${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}
const inNs = (ns: string, args: string[]) => sh(['ip', 'netns', 'exec', ns, ...args]);

async function child(args: string[]): Promise<PeerAcceptStatus[]> {
  return JSON.parse(await inNs(NS.host, [process.execPath, path.join(__dirname, 'cluster-firewall-child.js'), ...args])) as PeerAcceptStatus[];
}

/** One TCP and one UDP attempt from the peer to the container's echo servers: which answered. */
async function reach(): Promise<{ tcp: boolean; udp: boolean }> {
  const one = async (mode: 'tcp' | 'udp', port: number) => {
    const r = await run('ip', ['netns', 'exec', NS.peer, testBin('berth-probe'), mode, CTR, String(port), '--send', 'ping', '--count', '1', '--timeout-ms', '700'], { timeoutMs: 10000 });
    return r.code === 0 && r.stdout.includes('"ok":true') && r.stdout.includes('ctr');
  };
  return { tcp: await one('tcp', 8080), udp: await one('udp', 5353) };
}

const chainText = () => inNs(NS.host, ['iptables', '-S']);

test.before(async () => {
  await buildTestBinaries();
});

// Also after a failure or timeout: the echo servers (by namespace) and the namespaces go.
test.after.always(async () => {
  for (const ns of Object.values(NS)) {
    const pids = (await run('ip', ['netns', 'pids', ns])).stdout.split('\n').filter(Boolean);
    for (const p of pids) try { process.kill(Number(p)); } catch { /* gone */ }
    await run('ip', ['netns', 'del', ns]);
  }
});

test('BERTH_PEERS lets the peer\'s TCP and UDP flows through a Docker-like FORWARD drop, only from that peer, ahead of foreign rules; idempotent; cleanup removes only berth\'s', async (t) => {
  for (const ns of Object.values(NS)) {
    await sh(['ip', 'netns', 'add', ns]);
    t.teardown(() => run('ip', ['netns', 'del', ns]).then(() => undefined));
  }
  const servers: number[] = [];
  t.teardown(() => { for (const p of servers) try { process.kill(p); } catch { /* gone */ } });
  // Links: peer <-> host, host <-> container.
  await inNs(NS.host, ['ip', 'link', 'add', 'r0', 'type', 'veth', 'peer', 'name', 'p0', 'netns', NS.peer]);
  await inNs(NS.host, ['ip', 'link', 'add', 'c0', 'type', 'veth', 'peer', 'name', 'c1', 'netns', NS.ctr]);
  for (const [ns, dev, addr] of [[NS.host, 'r0', '192.0.2.1/24'], [NS.peer, 'p0', `${PEER}/24`], [NS.host, 'c0', '172.31.250.1/24'], [NS.ctr, 'c1', `${CTR}/24`]]) {
    await inNs(ns, ['ip', 'addr', 'add', addr, 'dev', dev]);
    await inNs(ns, ['ip', 'link', 'set', dev, 'up']);
    await inNs(ns, ['ip', 'link', 'set', 'lo', 'up']);
  }
  await inNs(NS.peer, ['ip', 'route', 'add', SUBNET, 'via', '192.0.2.1']);
  await inNs(NS.ctr, ['ip', 'route', 'add', 'default', 'via', '172.31.250.1']);
  await inNs(NS.host, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  // Docker's FORWARD layout for one bridge (c0), as `iptables -S` shows it on a Docker host.
  const docker = ['*filter', ':INPUT ACCEPT [0:0]', ':FORWARD DROP [0:0]', ':OUTPUT ACCEPT [0:0]', ':DOCKER-USER - [0:0]',
    '-A FORWARD -j DOCKER-USER', '-A FORWARD -o c0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT', '-A FORWARD -i c0 ! -o c0 -j ACCEPT',
    '-A DOCKER-USER -j RETURN', 'COMMIT', ''].join('\n');
  const r = await run('ip', ['netns', 'exec', NS.host, 'iptables-restore'], { input: docker });
  t.is(r.code, 0, r.stderr);
  for (const [bin, port] of [['berth-tcp-echo', '8080'], ['berth-udp-echo', '5353']]) {
    const p = (await import('node:child_process')).spawn('ip', ['netns', 'exec', NS.ctr, testBin(bin as 'berth-tcp-echo'), port, '--tag', 'ctr'], { stdio: 'ignore' });
    servers.push(p.pid!);
  }
  // The servers answer inside their namespace (so a failure below is the firewall, not them).
  for (let i = 0; i < 50; i++) {
    const ok = (await run('ip', ['netns', 'exec', NS.ctr, testBin('berth-probe'), 'tcp', CTR, '8080', '--send', '', '--count', '1', '--timeout-ms', '500'])).code === 0;
    if (ok) break;
    await new Promise((res) => setTimeout(res, 100));
  }

  t.deepEqual(await reach(), { tcp: false, udp: false }, 'Docker\'s FORWARD drops the peer\'s new flows without berth\'s rule');

  const acc = (peer: string): PeerAccept[] => [{ family: 4, peer, node: 'b', subnet: SUBNET }];
  const first = await child(['sync', JSON.stringify(acc(PEER))]);
  t.like(first[0], { family: 4, dockerUser: true, rules: 1, changed: true, error: null });
  t.deepEqual(await reach(), { tcp: true, udp: true }, 'accepted: the peer reaches the container over TCP and UDP');
  const text = await chainText();
  t.regex(text, /^-A DOCKER-USER -m comment --comment berth -j BERTH_PEERS$/m);
  t.regex(text, new RegExp(`^-A BERTH_PEERS -s ${PEER}/32 -d 172\\.31\\.250\\.0/24 -m comment --comment berth -j ACCEPT$`, 'm'));

  const again = await child(['sync', JSON.stringify(acc(PEER))]);
  t.like(again[0], { changed: false, rules: 1, error: null }, 'nothing rewritten when nothing changed (the chain compares as text)');

  // Only that peer: another peer's accept does not let this one in.
  const other = await child(['sync', JSON.stringify(acc('192.0.2.9'))]);
  t.like(other[0], { changed: true, rules: 1 });
  t.deepEqual(await reach(), { tcp: false, udp: false }, 'a peer that is not accepted stays dropped');

  // A foreign DROP put ahead of berth's jump (a firewall reload, an admin's rule): moved behind.
  await inNs(NS.host, ['iptables', '-I', 'DOCKER-USER', '1', '-s', PEER, '-j', 'DROP']);
  const repaired = await child(['sync', JSON.stringify(acc(PEER))]);
  t.like(repaired[0], { changed: true, error: null });
  const user = (await inNs(NS.host, ['iptables', '-S', 'DOCKER-USER'])).split('\n').filter((l) => l.startsWith('-A'));
  t.is(user[0], '-A DOCKER-USER -m comment --comment berth -j BERTH_PEERS', 'berth\'s jump first again');
  t.deepEqual(await reach(), { tcp: true, udp: true });

  // No peers left: chain and jump go, the foreign rules stay.
  const none = await child(['sync', '[]']);
  t.like(none[0], { changed: true, rules: 0 });
  t.notRegex(await chainText(), /BERTH_PEERS/);
  await child(['sync', JSON.stringify(acc(PEER))]);
  const removed = await child(['cleanup']) as unknown as string[];
  t.deepEqual(removed, ['iptables DOCKER-USER -j BERTH_PEERS', 'iptables chain BERTH_PEERS']);
  const after = await chainText();
  t.notRegex(after, /BERTH_PEERS|berth/);
  t.regex(after, new RegExp(`^-A DOCKER-USER -s ${PEER}/32 -j DROP$`, 'm'), 'someone else\'s rule stays');
  t.regex(after, /^-A DOCKER-USER -j RETURN$/m);
  t.deepEqual(await reach(), { tcp: false, udp: false });
});

hostAsBefore(test);
