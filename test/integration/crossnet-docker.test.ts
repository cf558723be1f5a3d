/**
 * Issue 15, crossNetwork `docker`: Docker's isolation is the policy. A client gets only backends
 * on a network it shares (at their address there), the host reaches all, and a client that
 * shares no network with any backend is refused at once (ECONNREFUSED), counted per service —
 * never left hanging in Docker's isolation. TCP and UDP, IPv4 and IPv6.
 */
import test from 'ava';
import { Berthd, waitFor } from '../helpers/berthd';
import { ensureTestImage, runContainer, removeTestContainers, createTestNetwork, removeTestNetwork, docker, type TestNetwork } from '../helpers/docker';
import { probeFromHost, probeFromContainer, tags, allFast, type ProbeMode } from '../helpers/probe';
import type { ServiceView } from '../../src/cli/format';
import { run } from '../../src/util/exec';
import { CROSSNET_CHAIN } from '../../src/datapath/crossnet';
import { hostAsBefore } from '../helpers/cleanup';

const SUITE = 'crossnet-docker';
const d = new Berthd({ name: 'xdock', extraArgs: ['--cross-network', 'docker'] });
let A: TestNetwork;
let B: TestNetwork;
let C: TestNetwork;
const clients: Record<'a' | 'b' | 'c', string> = { a: '', b: '', c: '' };

function svc(name: string, ok?: (s: ServiceView) => boolean): Promise<ServiceView> {
  return d.waitService(name, ok);
}

test.after.always(async () => {
  await removeTestContainers(SUITE);
  for (const n of ['bt-xda', 'bt-xdb', 'bt-xdc']) await removeTestNetwork(n).catch(() => undefined);
  await d.cleanup();
});

// Last of the after hooks, first of the before hooks (see cleanup.ts).
hostAsBefore(test);

test.before(async () => {
  await removeTestContainers(SUITE);
  await ensureTestImage();
  A = await createTestNetwork('bt-xda', { ipv6: true, suite: SUITE });
  B = await createTestNetwork('bt-xdb', { ipv6: true, suite: SUITE });
  C = await createTestNetwork('bt-xdc', { ipv6: true, suite: SUITE });
  await d.start();
  // web: one backend on A only. both: one backend on A and B (list 0 = its A address, by name).
  await runContainer({ suite: SUITE, name: 'bt-xdock-web', network: A.name, labels: { 'berth.service': 'dweb', 'berth.ports': '80:8080' }, cmd: ['berth-tcp-echo', '8080', '--tag', 'dweb'], waitFor: { tcp: 8080 } });
  await runContainer({ suite: SUITE, name: 'bt-xdock-dns', network: A.name, labels: { 'berth.service': 'ddns', 'berth.ports': '53:5353/udp' }, cmd: ['berth-udp-echo', '5353', '--tag', 'ddns'], waitFor: { udp: 5353 } });
  const both = await runContainer({ suite: SUITE, name: 'bt-xdock-both', network: A.name, labels: { 'berth.service': 'dboth', 'berth.ports': '80:8080' }, cmd: ['berth-tcp-echo', '8080', '--tag', 'dboth'], waitFor: { tcp: 8080 } });
  await docker.getNetwork(B.id).connect({ Container: both.id });
  clients.a = (await runContainer({ suite: SUITE, name: 'bt-xdock-c-a', network: A.name, cmd: ['sleep', '3600'] })).id;
  clients.b = (await runContainer({ suite: SUITE, name: 'bt-xdock-c-b', network: B.name, cmd: ['sleep', '3600'] })).id;
  clients.c = (await runContainer({ suite: SUITE, name: 'bt-xdock-c-c', network: C.name, cmd: ['sleep', '3600'] })).id;
});

const cases: [string, ProbeMode, string, number][] = [
  ['TCP', 'tcp', 'dweb', 80],
  ['connected UDP', 'udp', 'ddns', 53],
  ['unconnected UDP', 'udp-unconnected', 'ddns', 53],
];
for (const family of [4, 6] as const) {
  for (const [what, mode, name, port] of cases) {
    test.serial(`${what}/IPv${family}: host and same-network clients served, a client sharing no network refused at once`, async (t) => {
      const s = await svc(name, (x) => x.backends.length === 1);
      const vip = family === 4 ? s.vip : s.vip6!;
      allFast(t, await probeFromHost(mode, vip, port, 3), 'host');
      allFast(t, await probeFromContainer(clients.a, mode, vip, port, 3), 'same-network client');
      const before = (await svc(name)).connections?.noBackend ?? 0;
      const res = await probeFromContainer(clients.c, mode, vip, port, 2);
      t.true(res.every((r) => !r.ok && r.errno === 'ECONNREFUSED'), `other network: ${JSON.stringify(res)}`);
      t.true(res.every((r) => r.ms < 1000), 'refused, not timed out');
      const after = (await svc(name)).connections?.noBackend ?? 0;
      t.true(after >= before + 2, `the refusals are counted for ${name} (${before} -> ${after})`);
    });
  }
}

test.serial('a backend on two networks: each client gets its address on the network they share', async (t) => {
  const s = await svc('dboth', (x) => x.backends.length === 1 && (x.backends[0].networks?.length ?? 0) === 2);
  // list 0 is the A address; the B client can only reach the B address (Docker drops A from B).
  t.is(s.backends[0].ip, s.backends[0].networks!.find((n) => n.network === A.name)!.ip);
  for (const where of ['a', 'b'] as const) {
    const res = await probeFromContainer(clients[where], 'tcp', s.vip, 80, 3);
    allFast(t, res, `client on ${where}`);
    t.deepEqual([...tags(res)], ['dboth']);
  }
  const refused = await probeFromContainer(clients.c, 'tcp', s.vip, 80, 1);
  t.is(refused[0].errno, 'ECONNREFUSED');
});

test.serial('docker mode installs nothing in Docker\'s chains and status says so', async (t) => {
  t.not((await run('iptables', ['-w', '5', '-S', CROSSNET_CHAIN])).code, 0, 'no BERTH_CROSSNET chain');
  const st = await d.status() as unknown as { crossNetwork: { mode: string; how: string; flows: { recording: boolean } | null } };
  t.is(st.crossNetwork.mode, 'docker');
  t.is(st.crossNetwork.how, 'docker');
  t.false(st.crossNetwork.flows?.recording ?? false);
  // A client that joins A later is served without a restart (network connect reconciled).
  await docker.getNetwork(A.id).connect({ Container: clients.c });
  const s = await svc('dweb');
  await waitFor('the C client served after joining A', async () => {
    const r = await probeFromContainer(clients.c, 'tcp', s.vip, 80, 1);
    return r[0].ok ? true : undefined;
  }, 15000, 250);
  await docker.getNetwork(A.id).disconnect({ Container: clients.c, Force: true });
  await waitFor('the C client refused again after leaving A', async () => {
    const r = await probeFromContainer(clients.c, 'tcp', s.vip, 80, 1);
    return r[0].errno === 'ECONNREFUSED' ? true : undefined;
  }, 15000, 250);
  t.pass();
});
