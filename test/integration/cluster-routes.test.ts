/**
 * Routes to peers' container subnets (src/cluster/routes.ts) on a real kernel, inside a network
 * namespace the test creates (a veth pair there, 192.0.2.1/24 = TEST-NET-1 on one end): added, kept,
 * removed when a peer goes, an unreachable next hop reported without stopping the rest, and
 * berth cleanup removing only berth's routes — not the VIP range's unreachable route with the same
 * protocol and metric, not a route someone else added.
 */
import test from 'ava';
import { hostAsBefore } from '../helpers/cleanup';
import path from 'node:path';
import { run } from '../../src/util/exec';
import { BERTH_RT_PROTO, routeMetric } from '../../src/datapath/routes';

test('peer routes in a namespace: add, keep, remove, report a bad next hop, clean up only berth\'s', async (t) => {
  const ns = `bt-rt-${process.pid}`;
  const sh = async (args: string[]) => {
    const r = await run(args[0], args.slice(1));
    if (r.code !== 0) throw new Error(`${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  await sh(['ip', 'netns', 'add', ns]);
  t.teardown(() => run('ip', ['netns', 'del', ns]).then(() => undefined));
  const inNs = (args: string[]) => sh(['ip', 'netns', 'exec', ns, ...args]);
  // A veth pair inside the namespace (this kernel has no dummy driver); d0 gets the next hops' subnet.
  await inNs(['ip', 'link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd1']);
  await inNs(['ip', 'addr', 'add', '192.0.2.1/24', 'dev', 'd0']);
  await inNs(['ip', 'link', 'set', 'd1', 'up']);
  await inNs(['ip', 'link', 'set', 'd0', 'up']);
  const metric = routeMetric('/sys/fs/bpf/berth-rt-test');
  // Neighbours that must survive: the VIP range's unreachable route (same proto and metric) and
  // a route of someone else's to a peer-like subnet.
  await inNs(['ip', 'route', 'add', 'unreachable', '10.96.0.0/16', 'metric', String(metric), 'proto', String(BERTH_RT_PROTO)]);
  await inNs(['ip', 'route', 'add', '172.30.0.0/16', 'via', '192.0.2.9']);

  const out = JSON.parse(await inNs([process.execPath, path.join(__dirname, 'cluster-routes-child.js'), String(metric)])) as {
    first: { added: string[]; removed: string[]; errors: string[] }; again: { added: string[]; removed: string[] };
    dropC: { removed: string[] }; unreachableNextHop: { added: string[]; errors: string[] }; before: string; cleanup: string[]; after: string;
  };
  t.deepEqual(out.first.added, ['172.19.0.0/16 via 192.0.2.2', '172.20.0.0/16 via 192.0.2.3']);
  t.deepEqual(out.first.errors, []);
  t.deepEqual(out.again, { added: [], removed: [], errors: [] }, 'idempotent');
  t.deepEqual(out.dropC.removed, ['172.20.0.0/16 via 192.0.2.3']);
  t.deepEqual(out.unreachableNextHop.added, []);
  t.is(out.unreachableNextHop.errors.length, 1);
  t.regex(out.unreachableNextHop.errors[0], /route to node far's containers \(ip route replace 172.21.0.0\/16 via 198.51.100.7\): .+/);
  t.regex(out.before, new RegExp(`172\\.19\\.0\\.0/16 via 192\\.0\\.2\\.2 dev d0 proto ${BERTH_RT_PROTO} metric ${metric}`));
  t.deepEqual(out.cleanup, ['route 172.19.0.0/16 via 192.0.2.2']);
  t.notRegex(out.after, /172\.19\.0\.0/);
  t.regex(out.after, /unreachable 10\.96\.0\.0\/16/, "the VIP range's unreachable route stays");
  t.regex(out.after, /172\.30\.0\.0\/16 via 192\.0\.2\.9/, "someone else's route stays");
});

hostAsBefore(test);
