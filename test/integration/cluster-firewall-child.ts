/**
 * Child of cluster-firewall.test.ts, run inside the test's "this host" network namespace
 * (`ip netns exec`): `sync <accepts JSON>` runs syncPeerAccepts, `cleanup` runs
 * removePeerAccepts; prints the result as JSON. The host's own iptables are never touched.
 */
import { removePeerAccepts, syncPeerAccepts, type PeerAccept } from '../../src/cluster/firewall';

async function main(): Promise<void> {
  const [cmd, arg] = process.argv.slice(2);
  const out = cmd === 'sync' ? await syncPeerAccepts(JSON.parse(arg) as PeerAccept[]) : await removePeerAccepts();
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  process.stderr.write(String((e as Error).stack));
  process.exit(1);
});
