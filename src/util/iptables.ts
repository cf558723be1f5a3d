/**
 * Small shared pieces for berth's iptables chains (the proxy's TPROXY/REDIRECT chains, the
 * cross-network BERTH_CROSSNET and the cluster's BERTH_PEERS): which binaries serve a family,
 * reading a chain, and removing a chain together with the jumps into it.
 */
import { run } from './exec';

/** The iptables binaries for an address family: `{ cmd, restore }`, e.g. ip6tables / ip6tables-restore. */
export function iptablesTool(family: 4 | 6): { cmd: string; restore: string } {
  return family === 4 ? { cmd: 'iptables', restore: 'iptables-restore' } : { cmd: 'ip6tables', restore: 'ip6tables-restore' };
}

/**
 * The rules of `chain` in `table` as `iptables -S` prints them (`-A CHAIN ...` lines only), or
 * null when the chain does not exist (or iptables fails; it waits up to 5 s for the xtables lock).
 */
export async function chainRules(family: 4 | 6, chain: string, table = 'filter'): Promise<string[] | null> {
  const r = await run(iptablesTool(family).cmd, ['-w', '5', '-t', table, '-S', chain]);
  if (r.code !== 0) return null;
  return r.stdout.split('\n').filter((l) => l.startsWith('-A '));
}

/**
 * Delete every copy (at most 8) of the filter-table rule `jump` (`[from, ...match, '-j', chain]`),
 * then flush and delete `chain` if it exists. Returns what was removed, one line each, e.g.
 * 'iptables DOCKER-USER -j BERTH_PEERS', 'iptables chain BERTH_PEERS'. Never throws.
 */
export async function removeJumpAndChain(family: 4 | 6, jump: string[], chain: string): Promise<string[]> {
  const t = iptablesTool(family);
  const removed: string[] = [];
  for (let i = 0; i < 8; i++) {
    if ((await run(t.cmd, ['-w', '5', '-t', 'filter', '-D', ...jump])).code !== 0) break;
    removed.push(`${t.cmd} ${jump[0]} -j ${chain}`);
  }
  if ((await chainRules(family, chain)) !== null) {
    await run(t.cmd, ['-w', '5', '-t', 'filter', '-F', chain]);
    if ((await run(t.cmd, ['-w', '5', '-t', 'filter', '-X', chain])).code === 0) removed.push(`${t.cmd} chain ${chain}`);
  }
  return removed;
}
