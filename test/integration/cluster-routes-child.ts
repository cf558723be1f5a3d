/**
 * Child of cluster-routes.test.ts, run inside a network namespace of the test's own
 * (`ip netns exec`): drives syncPeerRoutes/removePeerRoutes there and prints what happened as
 * JSON, so the host's routing table is never touched.
 */
import { removePeerRoutes, syncPeerRoutes } from '../../src/cluster/routes';
import { run } from '../../src/util/exec';

async function routes(): Promise<string> {
  return (await run('ip', ['route', 'show'])).stdout;
}

async function main(): Promise<void> {
  const metric = Number(process.argv[2]);
  const out: Record<string, unknown> = {};
  const a = { subnet: '172.19.0.0/16', via: '192.0.2.2', node: 'b' };
  const b = { subnet: '172.20.0.0/16', via: '192.0.2.3', node: 'c' };
  out.first = await syncPeerRoutes([a, b], metric);
  out.again = await syncPeerRoutes([a, b], metric);
  out.dropC = await syncPeerRoutes([a], metric);
  out.unreachableNextHop = await syncPeerRoutes([a, { subnet: '172.21.0.0/16', via: '198.51.100.7', node: 'far' }], metric);
  out.before = await routes();
  out.cleanup = await removePeerRoutes(metric);
  out.after = await routes();
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  process.stderr.write(String((e as Error).stack));
  process.exit(1);
});
