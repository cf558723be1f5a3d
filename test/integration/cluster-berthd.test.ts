/**
 * A real berthd in cluster mode (issue 12) on one machine: etcd started by the test on
 * 127.0.0.1; "node b" is berthd with a fake Docker engine (no local containers, so everything it
 * serves comes from etcd); "node a" is a second etcd client (ClusterStore, as berthd uses it)
 * that publishes a backend which is a real HTTP server in a network namespace of the test's own.
 * A connect() from the host to the VIP reaches that server only if b merged a's record into
 * its datapath. Both "nodes" have the host's own address, so berthd installs no peer route
 * (the routes are unit-tested; the VM harness will test them between hosts).
 */
import test from 'ava';
import fs from 'node:fs';
import { hostAsBefore } from '../helpers/cleanup';
import { spawn } from 'node:child_process';
import pino from 'pino';
import { getText } from '../../src/api/server';
import { ClusterStore } from '../../src/cluster/store';
import { vipCandidate } from '../../src/model/vip';
import { formatIp, parseCidr } from '../../src/model/ip';
import { Berthd, runCli, waitFor } from '../helpers/berthd';
import { EtcdServer } from '../helpers/etcd';
import { FakeEngine } from '../helpers/fake-engine';
import { createNetns, deleteNetns } from '../helpers/netns';
import { httpGet } from '../helpers/http';

const CIDR = '10.96.0.0/16';

test('remote backends from etcd are served on the VIP, shown with their node, dropped after the lease; status and metrics', async (t) => {
  const etcd = new EtcdServer();
  t.teardown(() => etcd.destroy());
  await etcd.start();

  const ns = await createNetns('bt-cluster');
  t.teardown(() => deleteNetns(ns));
  const server = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '-e',
    "require('http').createServer((q, r) => r.end('from-node-a')).listen(8080, '0.0.0.0')"], { stdio: 'ignore' });
  t.teardown(() => void server.kill('SIGKILL'));

  const engine = await FakeEngine.start();
  t.teardown(() => engine.close());
  const b = new Berthd({
    name: 'cluster-b', serviceCidr: CIDR,
    extraArgs: ['--docker-host', engine.dockerHost, '--envoy-path', '/nonexistent/envoy', '--etcd-endpoints', etcd.endpoint,
      '--etcd-prefix', '/berth-it', '--node-name', 'b',
      // No periodic repair pass during the test: the host-rules check below counts the others.
      '--reconcile-interval', '600'],
  });
  t.teardown(async () => void (await b.cleanup()));
  await b.start();

  const a = new ClusterStore({
    endpoints: [etcd.endpoint], caFile: null, certFile: null, keyFile: null, prefix: '/berth-it', nodeName: 'a', nodeAddress: null,
    serviceCidr: CIDR, serviceCidr6: 'fd00:96::/112', berthVersion: 'test', logger: pino({ level: 'silent' }), leaseTtl: 2,
  });
  t.teardown(() => a.stop());
  await a.start();
  const vip = formatIp(vipCandidate('service', 'web', parseCidr(CIDR)!, 0)!);
  const subnet = `${ns.nsAddress.split('.').slice(0, 3).join('.')}.${Number(ns.nsAddress.split('.')[3]) & ~3}/30`;
  a.publish({
    subnets: [subnet],
    services: [{ kind: 'service', name: 'web', vip, vip6: null, ports: [{ port: 80, protocol: 'tcp', targetPort: 8080 }],
      backends: [{ container: 'web-a1', id: 'a1'.padEnd(64, '0'), ip: ns.nsAddress, ip6: null }] }],
  });

  const web = await waitFor('b serves web from node a', async () => (await b.services()).find((s) => s.name === 'web' && s.backends.length === 1), 15000);
  t.is(web.vip, vip);
  t.deepEqual(web.backends.map((x) => [x.node, x.ip]), [['a', ns.nsAddress]]);
  const res = await waitFor('VIP answers', async () => {
    const r = await httpGet(vip, 80, '/').catch(() => null);
    return r && r.status === 200 ? r : null;
  }, 10000, 200);
  t.is(res.body.trim(), 'from-node-a');

  const st = await b.status() as unknown as { cluster: { etcd: string; node: string; nodes: string[]; revision: string; remoteBackends: number } };
  t.is(st.cluster.etcd, 'connected');
  t.is(st.cluster.node, 'b');
  t.deepEqual(st.cluster.nodes, ['a', 'b']);
  t.true(Number(st.cluster.revision) > 0);
  t.is(st.cluster.remoteBackends, 1);
  const cli = await runCli(['services'], { BERTH_SOCKET: b.socket });
  t.regex(cli.stdout, new RegExp(`web\\s+service\\s+${vip.replace(/\./g, '\\.')}.*a/web-a1\\(${ns.nsAddress.replace(/\./g, '\\.')}\\)`));
  const status = await runCli(['status'], { BERTH_SOCKET: b.socket });
  t.regex(status.stdout, /cluster:\s+etcd connected/);
  t.regex(status.stdout, /this node b at 127\.0\.0\.1; nodes seen: a b; 1 remote backends/);
  const metrics = await getText(b.socket, '/metrics');
  t.regex(metrics, /^berth_cluster_etcd_connected 1$/m);
  t.regex(metrics, /^berth_cluster_nodes 2$/m);
  t.regex(metrics, /^berth_cluster_remote_backends 1$/m);

  // A peer's backend change that moves no node record (same subnets, same address) changes no
  // route and no BERTH_PEERS rule: b's host-rules lane does not run the cluster's part for it
  // (six processes a run; before, it ran on every reconcile and starved the VM cluster's guests).
  const peerRuns = () => (fs.readFileSync(b.logFile, 'utf8').match(/"cluster":true,?[^\n]*"msg":"host rules checked"|"msg":"host rules checked"[^\n]*"cluster":true/g) ?? []).length;
  const runsBefore = peerRuns();
  t.true(runsBefore >= 1, 'the first (full) pass checked the peer rules');
  a.publish({
    subnets: [subnet],
    services: [{ kind: 'service', name: 'web', vip, vip6: null, ports: [{ port: 80, protocol: 'tcp', targetPort: 8080 }],
      backends: [{ container: 'web-a1', id: 'a1'.padEnd(64, '0'), ip: ns.nsAddress, ip6: null },
        { container: 'web-a2', id: 'a2'.padEnd(64, '0'), ip: ns.nsAddress, ip6: null }] }],
  });
  await waitFor('b serves web-a2', async () => (await b.services()).find((s) => s.name === 'web' && s.backends.length === 2), 15000);
  t.is(peerRuns(), runsBefore, 'no peer-rules run for a backend change');

  // b's own records: its node record is in etcd; it has no services of its own.
  t.regex(etcd.ctl(['get', '/berth-it/nodes/b', '--print-value-only']), /"name":"b","address":"127.0.0.1"/);

  // Node a goes away (no revoke): after the lease TTL b drops the backend, the VIP refuses.
  await a.stop();
  await waitFor('web gone from b', async () => !(await b.services()).some((s) => s.name === 'web'), 8000, 100);
  const after = await httpGet(vip, 80, '/', 'berth.test', 1000).catch((e: Error) => e);
  t.true(after instanceof Error, 'no backend left: the connect is refused');
  t.regex(await getText(b.socket, '/metrics'), /^berth_cluster_nodes 1$/m);
});

test('single host (no etcdEndpoints): no cluster in status, no cluster metrics', async (t) => {
  const engine = await FakeEngine.start();
  t.teardown(() => engine.close());
  const d = new Berthd({ name: 'cluster-off', serviceCidr: CIDR, extraArgs: ['--docker-host', engine.dockerHost, '--envoy-path', '/nonexistent/envoy'] });
  t.teardown(async () => void (await d.cleanup()));
  await d.start();
  const st = await d.status() as unknown as { cluster: unknown };
  t.is(st.cluster, null);
  t.notRegex(await getText(d.socket, '/metrics'), /^berth_cluster_\w+ /m, 'no cluster samples');
});

hostAsBefore(test);
