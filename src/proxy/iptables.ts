/**
 * Redirect mode `iptables`: TPROXY rules in berth's own mangle chain BERTH_PREROUTING, jumped to
 * from PREROUTING. Every rule carries `-m comment --comment berth`. The chain's content is
 * replaced atomically (iptables-restore --noflush flushes only the chains it declares), and only
 * when it differs from what is wanted, so the periodic reconcile is a cheap read.
 *
 * WORKAROUND (Docker bridges + br_netfilter): Docker loads br_netfilter and sets
 * net.bridge.bridge-nf-call-iptables=1, so a container's packet to the ingress VIP runs the IPv4
 * PREROUTING hooks in the *bridge* pass. TPROXY assigns Envoy's socket there, but ip_rcv_core()
 * then orphans the skb (only bpf_sk_assign'ed sockets survive it) and br_netfilter's
 * ip_sabotage_in skips the IP-level PREROUTING hooks for such frames, so TPROXY never gets a second
 * chance: the SYN is lost (measured: ETIMEDOUT from every container). For frames that entered
 * through a bridge port (`-m physdev --physdev-is-in`, true only in that bridge pass) berth adds a
 * REDIRECT to the same listener in a nat chain of the same name; the DNAT makes br_netfilter
 * route the frame locally. Routed traffic (outside clients on the publish port, veth peers) keeps
 * TPROXY. Docker's sysctls are left as Docker sets them.
 */
import { run } from '../util/exec';
import { chainRules as readChain, iptablesTool } from '../util/iptables';
import { ProxyError, ProxyErrorCode } from './errors';
import { proxyMark } from './routing';
import { DEFAULT_REDIRECT_NAMES, type RedirectEntry, type RedirectNames } from './redirect-types';

export const CHAIN = DEFAULT_REDIRECT_NAMES.chain;
const jump = (chain: string) => ['PREROUTING', '-m', 'comment', '--comment', 'berth', '-j', chain];

function target(e: RedirectEntry, family: 4 | 6): string {
  const onIp = family === 4 ? '0.0.0.0' : '::';
  return `-j TPROXY --on-port ${e.listenerPort} --on-ip ${onIp} --tproxy-mark 0x${proxyMark(e.listenerPort).toString(16)}/0xffffffff`;
}

/**
 * The chain's rules, exactly as `iptables -S` prints them (so what is installed can be compared
 * as text). Pure.
 */
export function chainRules(entries: RedirectEntry[], family: 4 | 6, chain = CHAIN): string[] {
  const out: string[] = [];
  for (const e of [...entries].sort((a, b) => a.ingress.localeCompare(b.ingress))) {
    const vip = family === 4 ? e.vip : e.vip6;
    if (vip) out.push(`-A ${chain} -d ${vip}/${family === 4 ? 32 : 128} -p tcp -m tcp --dport ${e.listen} -m comment --comment berth ${target(e, family)}`);
    // The host's own addresses (any interface, loopback included) on the publish port.
    if (e.publish !== null) out.push(`-A ${chain} -p tcp -m addrtype --dst-type LOCAL -m tcp --dport ${e.publish} -m comment --comment berth ${target(e, family)}`);
  }
  return out;
}

/** nat rules for frames arriving through a bridge port (see the workaround above). Pure. */
export function bridgeRules(entries: RedirectEntry[], family: 4 | 6, chain = CHAIN): string[] {
  const out: string[] = [];
  for (const e of [...entries].sort((a, b) => a.ingress.localeCompare(b.ingress))) {
    const vip = family === 4 ? e.vip : e.vip6;
    const redirect = `-m comment --comment berth -j REDIRECT --to-ports ${e.listenerPort}`;
    if (vip) out.push(`-A ${chain} -d ${vip}/${family === 4 ? 32 : 128} -p tcp -m tcp --dport ${e.listen} -m physdev --physdev-is-in ${redirect}`);
    if (e.publish !== null) out.push(`-A ${chain} -p tcp -m addrtype --dst-type LOCAL -m tcp --dport ${e.publish} -m physdev --physdev-is-in ${redirect}`);
  }
  return out;
}

/** berth's chains: TPROXY in mangle, the bridge REDIRECT in nat. */
const TABLES = [
  { table: 'mangle', rules: chainRules },
  { table: 'nat', rules: bridgeRules },
] as const;

function installed(family: 4 | 6, chain: string, table = 'mangle'): Promise<string[] | null> {
  return readChain(family, chain, table);
}

/** Make the chain hold exactly these entries' rules and PREROUTING jump to it. */
export async function applyIptables(entries: RedirectEntry[], names: RedirectNames = DEFAULT_REDIRECT_NAMES): Promise<string[]> {
  const JUMP = jump(names.chain);
  const written: string[] = [];
  for (const family of [4, 6] as const) for (const { table, rules } of TABLES) {
    const want = rules(entries, family, names.chain);
    const have = await installed(family, names.chain, table);
    const t = iptablesTool(family);
    if (have === null || have.join('\n') !== want.join('\n')) {
      const input = [`*${table}`, `:${names.chain} - [0:0]`, ...want, 'COMMIT', ''].join('\n');
      const r = await run(t.restore, ['-w', '5', '--noflush'], { input });
      if (r.code !== 0) {
        // IPv6 is best effort (a host without ip6tables' TPROXY still serves IPv4).
        if (family === 6) continue;
        throw new ProxyError(ProxyErrorCode.REDIRECT, `${t.restore}: ${r.stderr.trim()}`);
      }
      written.push(`${t.cmd} -t ${table} chain ${names.chain}`);
    }
    const c = await run(t.cmd, ['-w', '5', '-t', table, '-C', ...JUMP]);
    if (c.code !== 0) {
      // First in PREROUTING: before anything that could accept or mark the packet otherwise
      // (in nat: before Docker's DOCKER jump).
      const r = await run(t.cmd, ['-w', '5', '-t', table, '-I', ...JUMP.slice(0, 1), '1', ...JUMP.slice(1)]);
      if (r.code !== 0 && family === 4) throw new ProxyError(ProxyErrorCode.REDIRECT, `${t.cmd} -t ${table} -I PREROUTING: ${r.stderr.trim()}`);
      if (r.code === 0) written.push(`${t.cmd} -t ${table} PREROUTING -j ${names.chain}`);
    }
  }
  return written;
}

/** Remove the jump(s) and the chain, v4 and v6; returns what was removed. */
export async function removeIptables(names: RedirectNames = DEFAULT_REDIRECT_NAMES): Promise<string[]> {
  const removed: string[] = [];
  const CHAIN = names.chain;
  const JUMP = jump(CHAIN);
  for (const family of [4, 6] as const) for (const { table } of TABLES) {
    const t = iptablesTool(family);
    for (let i = 0; i < 8; i++) {
      const r = await run(t.cmd, ['-w', '5', '-t', table, '-D', ...JUMP]);
      if (r.code !== 0) break;
      removed.push(`${t.cmd} -t ${table} PREROUTING -j ${CHAIN}`);
    }
    if ((await installed(family, CHAIN, table)) !== null) {
      await run(t.cmd, ['-w', '5', '-t', table, '-F', CHAIN]);
      const r = await run(t.cmd, ['-w', '5', '-t', table, '-X', CHAIN]);
      if (r.code === 0) removed.push(`${t.cmd} -t ${table} chain ${CHAIN}`);
    }
  }
  return removed;
}

/**
 * Run one iptables command in a throwaway network namespace of its own (`unshare --net`): a real
 * probe that cannot touch the host's tables, needs no /run/netns (read-only under the unit's
 * ProtectSystem=strict) and leaves nothing behind even if berth dies mid-probe.
 */
async function probeInNetns(args: string[]): Promise<{ ok: boolean; error: string }> {
  const r = await run('unshare', ['--net', '--', 'iptables', '-w', '5', ...args]);
  return { ok: r.code === 0, error: r.stderr.trim() };
}

/** Can this host do TPROXY, and the socket match? */
export async function probeTproxy(): Promise<{ tproxy: { ok: boolean; error: string }; socketMatch: { ok: boolean; error: string } }> {
  const [tproxy, socketMatch] = await Promise.all([
    probeInNetns(['-t', 'mangle', '-A', 'PREROUTING', '-p', 'tcp', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'TPROXY', '--on-port', '15000', '--tproxy-mark', '0x200/0xf00']),
    probeInNetns(['-t', 'mangle', '-A', 'PREROUTING', '-p', 'tcp', '-m', 'socket', '--transparent', '-j', 'MARK', '--set-mark', '0x200/0xf00']),
  ]);
  return { tproxy, socketMatch };
}

/** Can redirect: iptables work here? */
export async function iptablesSupport(): Promise<{ ok: boolean; reason: string }> {
  const { tproxy } = await probeTproxy();
  return tproxy.ok ? { ok: true, reason: 'iptables TPROXY target available' } : { ok: false, reason: `TPROXY unavailable: ${tproxy.error}` };
}
