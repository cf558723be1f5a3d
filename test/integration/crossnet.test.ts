/**
 * Issue 15, crossNetwork `allow` end to end: the real berthd, Docker's real isolation chains,
 * real traffic. Backends on one user-defined network (bt-xa), clients on the same network, on
 * another one (bt-xb), on Docker's default bridge and on the host; TCP and UDP, IPv4 and IPv6.
 * Every VIP attempt must succeed within 1 s (no client ever waits for a timeout), while a direct
 * connection from the other network to the backend's own address stays dropped, as Docker
 * intends. Plus: a host-network backend, a `none` backend (listed unreachable, refused at once),
 * a backend moved between networks, and the rules repaired after a firewall flush.
 */
import test from 'ava';
import { Berthd, waitFor } from '../helpers/berthd';
import { ensureTestImage, runContainer, removeTestContainers, createTestNetwork, removeTestNetwork, docker, type TestNetwork } from '../helpers/docker';
import { probeFromHost, probeFromContainer, tags, allFast, type ProbeMode } from '../helpers/probe';
import type { ServiceView } from '../../src/cli/format';
import { run } from '../../src/util/exec';
import { CROSSNET_CHAIN, DOCKER_USER } from '../../src/datapath/crossnet';
import { dockerAnswers, startDockerd, stopDockerd } from '../helpers/dockerd';
import { hostAsBefore } from '../helpers/cleanup';

const SUITE = 'crossnet';
const d = new Berthd({ name: 'xnet', serviceCidr: '10.96.0.0/16' });
let A: TestNetwork;
let B: TestNetwork;
const clients: Record<'same' | 'other' | 'bridge', string> = { same: '', other: '', bridge: '' };
let webIp = '';
let webIp6 = '';
// A host port for the host-network backend: fixed, high, outside the proxy range.
const HOST_PORT = 18431;

function svc(name: string, ok?: (s: ServiceView) => boolean): Promise<ServiceView> {
  return d.waitService(name, ok);
}

test.after.always(async () => {
  if (!(await dockerAnswers())) await startDockerd();
  await removeTestContainers(SUITE);
  for (const n of ['bt-xa', 'bt-xb', 'bt-xc']) await removeTestNetwork(n).catch(() => undefined);
  await d.cleanup();
});

// Last of the after hooks, first of the before hooks (see cleanup.ts).
hostAsBefore(test);

test.before(async () => {
  await removeTestContainers(SUITE);
  await ensureTestImage();
  A = await createTestNetwork('bt-xa', { ipv6: true, suite: SUITE });
  B = await createTestNetwork('bt-xb', { ipv6: true, suite: SUITE });
  await d.start();
  const web = await runContainer({ suite: SUITE, name: 'bt-xnet-web', network: A.name, labels: { 'berth.service': 'xweb', 'berth.ports': '80:8080' }, cmd: ['berth-tcp-echo', '8080', '--tag', 'xweb'], waitFor: { tcp: 8080 } });
  webIp = web.ip!;
  webIp6 = web.ip6!;
  await runContainer({ suite: SUITE, name: 'bt-xnet-dns', network: A.name, labels: { 'berth.service': 'xdns', 'berth.ports': '53:5353/udp' }, cmd: ['berth-udp-echo', '5353', '--tag', 'xdns'], waitFor: { udp: 5353 } });
  clients.same = (await runContainer({ suite: SUITE, name: 'bt-xnet-c-same', network: A.name, cmd: ['sleep', '3600'] })).id;
  clients.other = (await runContainer({ suite: SUITE, name: 'bt-xnet-c-other', network: B.name, cmd: ['sleep', '3600'] })).id;
  clients.bridge = (await runContainer({ suite: SUITE, name: 'bt-xnet-c-bridge', cmd: ['sleep', '3600'] })).id;
});

const cases: [string, ProbeMode, string, number][] = [
  ['TCP', 'tcp', 'xweb', 80],
  ['connected UDP', 'udp', 'xdns', 53],
  ['unconnected UDP', 'udp-unconnected', 'xdns', 53],
];
for (const family of [4, 6] as const) {
  for (const [what, mode, name, port] of cases) {
    test.serial(`${what}/IPv${family}: host, same-network, other-network${family === 4 ? ' and default-bridge' : ''} clients all reach the VIP at once`, async (t) => {
      const s = await svc(name, (x) => x.backends.length === 1);
      const vip = family === 4 ? s.vip : s.vip6!;
      allFast(t, await probeFromHost(mode, vip, port, 3), 'host');
      for (const where of ['same', 'other', 'bridge'] as const) {
        if (family === 6 && where === 'bridge') continue; // Docker's default bridge has no IPv6 here
        const res = await probeFromContainer(clients[where], mode, vip, port, 3);
        allFast(t, res, `${where}-network client`);
        t.deepEqual([...tags(res)], [name]);
      }
    });
  }
}

test.serial('direct traffic across networks stays dropped: only balanced flows pass Docker\'s isolation', async (t) => {
  await svc('xweb', (x) => x.backends.length === 1);
  // Docker isolates IPv6 only when it manages ip6tables (daemon option ip6tables); without its
  // chains there is no IPv6 isolation to keep, and berth must not have added one either.
  const v6Isolated = (await run('ip6tables', ['-w', '5', '-S', 'DOCKER-ISOLATION-STAGE-1'])).code === 0;
  for (const [addr, label] of [[webIp, 'IPv4'], [webIp6, 'IPv6']] as const) {
    const direct = await probeFromContainer(clients.other, 'tcp', addr, 8080, 1);
    if (label === 'IPv4' || v6Isolated) {
      t.false(direct[0].ok, `${label}: a container on ${B.name} reached ${addr}:8080 directly: ${JSON.stringify(direct)}`);
    } else {
      t.true(direct[0].ok, 'without Docker\'s ip6tables chains IPv6 crosses networks as Docker leaves it');
      t.is((await run('ip6tables', ['-w', '5', '-S', CROSSNET_CHAIN])).code, 1, 'and berth installs nothing for IPv6 then');
    }
    // The same-network client still reaches it directly (nothing of Docker's is loosened).
    allFast(t, await probeFromContainer(clients.same, 'tcp', addr, 8080, 1), `${label} same network, direct`);
  }
});

test.serial('backends list their networks and reachability (berth services --json)', async (t) => {
  const s = await svc('xweb', (x) => x.backends.length === 1);
  const b = s.backends[0];
  t.deepEqual(b.networks, [{ network: A.name, ip: webIp, ip6: webIp6 }]);
  t.is(b.reachable, true);
  t.is(b.reason, null);
  const st = await d.status() as unknown as { crossNetwork: { mode: string; how: string; chains: { family: number; dockerUser: boolean; jumpFirst: boolean; chainOk: boolean }[] } };
  t.is(st.crossNetwork.mode, 'allow');
  t.is(st.crossNetwork.how, 'balanced-flows');
  t.like(st.crossNetwork.chains.find((c) => c.family === 4), { dockerUser: true, jumpFirst: true, chainOk: true });
});

test.serial('a --network host backend is the host: reached from the host and from containers on any network', async (t) => {
  const c = await runContainer({ suite: SUITE, name: 'bt-xnet-hostnet', network: 'host', labels: { 'berth.service': 'xhost', 'berth.ports': `81:${HOST_PORT}` }, cmd: ['berth-tcp-echo', String(HOST_PORT), '--tag', 'xhost'] });
  t.teardown(() => docker.getContainer(c.id).remove({ force: true }).catch(() => undefined));
  const s = await svc('xhost', (x) => x.backends.length === 1);
  const b = s.backends[0];
  t.is(b.reachable, true);
  t.regex(b.reason ?? '', /host network: reached at the host's address/);
  t.deepEqual(b.networks?.map((n) => n.network), ['host']);
  allFast(t, await probeFromHost('tcp', s.vip, 81, 3), 'host');
  for (const where of ['same', 'other', 'bridge'] as const) allFast(t, await probeFromContainer(clients[where], 'tcp', s.vip, 81, 3), `${where} client`);
});

test.serial('a --network none backend is listed unreachable with its reason, and connects are refused at once', async (t) => {
  const c = await runContainer({ suite: SUITE, name: 'bt-xnet-none', network: 'none', labels: { 'berth.service': 'xnone', 'berth.ports': '80:8080' }, cmd: ['berth-tcp-echo', '8080'] });
  t.teardown(() => docker.getContainer(c.id).remove({ force: true }).catch(() => undefined));
  const s = await svc('xnone', (x) => x.backends.length === 1);
  t.like(s.backends[0], { container: 'bt-xnet-none', reachable: false, ip: null, ip6: null });
  t.regex(s.backends[0].reason ?? '', /network mode none/);
  const st = await d.status() as unknown as { backendWarnings: { service: string; container: string; reachable: boolean; reason: string }[] };
  t.truthy(st.backendWarnings.find((w) => w.container === 'bt-xnet-none' && !w.reachable), 'berth status shows the warning');
  const res = await probeFromContainer(clients.other, 'tcp', s.vip, 80, 1);
  t.false(res[0].ok);
  t.is(res[0].errno, 'ECONNREFUSED');
  t.true(res[0].ms < 1000);
});

test.serial('a backend moved to another network (connect, then disconnect) is reconciled without a restart', async (t) => {
  const C = await createTestNetwork('bt-xc', { suite: SUITE });
  const web = 'bt-xnet-web';
  await docker.getNetwork(C.id).connect({ Container: web });
  let s = await svc('xweb', (x) => x.backends[0]?.networks?.length === 2);
  t.deepEqual(s.backends[0].networks?.map((n) => n.network).sort(), [A.name, C.name].sort());
  await docker.getNetwork(A.id).disconnect({ Container: web, Force: true });
  s = await svc('xweb', (x) => x.backends[0]?.networks?.length === 1 && x.backends[0].networks[0].network === C.name);
  t.not(s.backends[0].ip, webIp);
  // Every kind of client follows it to its new network: the old network's clients included.
  allFast(t, await probeFromHost('tcp', s.vip, 80, 3), 'host');
  for (const where of ['same', 'other', 'bridge'] as const) allFast(t, await probeFromContainer(clients[where], 'tcp', s.vip, 80, 3), `${where} client`);
  // The network disappears under the running service: the backend is left with no network.
  await docker.getNetwork(C.id).disconnect({ Container: web, Force: true });
  await removeTestNetwork(C.name);
  s = await svc('xweb', (x) => x.backends[0]?.reachable === false);
  t.regex(s.backends[0].reason ?? '', /on no network/);
  const res = await probeFromHost('tcp', s.vip, 80, 1);
  t.is(res[0].errno, 'ECONNREFUSED');
  // Other services were not disturbed.
  allFast(t, await probeFromContainer(clients.other, 'udp', (await svc('xdns')).vip, 53, 3), 'xdns from the other network');
});

test.serial('a firewall reload that removes berth\'s chain and jump is repaired within seconds', async (t) => {
  const dns = await svc('xdns', (x) => x.backends.length === 1);
  await run('iptables', ['-w', '5', '-D', DOCKER_USER, '-m', 'comment', '--comment', 'berth', '-j', CROSSNET_CHAIN]);
  await run('iptables', ['-w', '5', '-F', CROSSNET_CHAIN]);
  await run('iptables', ['-w', '5', '-X', CROSSNET_CHAIN]);
  await waitFor('berth\'s jump back first in DOCKER-USER', async () => {
    const r = await run('iptables', ['-w', '5', '-S', DOCKER_USER]);
    const first = r.stdout.split('\n').find((l) => l.startsWith('-A '));
    return first?.includes(CROSSNET_CHAIN) ? true : undefined;
  }, 15000);
  allFast(t, await probeFromContainer(clients.other, 'udp', dns.vip, 53, 3), 'other-network client after the repair');
});

test.serial('a dockerd restart (Docker rebuilds its chains) leaves cross-network VIPs working', async (t) => {
  await stopDockerd();
  await startDockerd(); // its original flags: the containers stopped with it
  for (const name of ['bt-xnet-dns', 'bt-xnet-c-other']) await docker.getContainer(name).start().catch(() => undefined);
  const dns = await svc('xdns', (x) => x.backends.length === 1);
  const r = await run('iptables', ['-w', '5', '-S', DOCKER_USER]);
  t.regex(r.stdout.split('\n').find((l) => l.startsWith('-A ')) ?? '', new RegExp(CROSSNET_CHAIN), 'berth\'s jump is DOCKER-USER\'s first rule');
  t.regex((await run('iptables', ['-w', '5', '-S', 'DOCKER-ISOLATION-STAGE-1'])).stdout, /DOCKER-ISOLATION-STAGE-2/, 'Docker\'s isolation is back');
  const other = (await docker.getContainer('bt-xnet-c-other').inspect()).Id;
  await waitFor('the other-network client served after the restart', async () => {
    const res = await probeFromContainer(other, 'udp', dns.vip, 53, 1);
    return res[0].ok ? true : undefined;
  }, 15000, 250);
  allFast(t, await probeFromContainer(other, 'udp', dns.vip, 53, 3), 'other-network client after the dockerd restart');
});
