/**
 * Letting peers' flows reach local backends through Docker's FORWARD chain (cluster mode).
 *
 * A connect() on a peer that its socket hook rewrote to one of this host's container addresses
 * arrives here as a plain routed packet (routes.ts on the peer), source = the peer's nodeAddress
 * (a host client's own address, or a container client masqueraded to it by the peer's Docker).
 * Docker sets FORWARD's policy to DROP and accepts new flows into its bridges only for
 * published ports, so without a rule those packets die here. flannel's host-gw backend has the
 * same need and accepts its whole pod range in FORWARD; berth accepts, per peer, packets from the
 * peer's nodeAddress to this host's container subnets — in DOCKER-USER, the chain Docker leaves
 * to the administrator and never flushes, through a jump to berth's own chain BERTH_PEERS whose
 * content is replaced atomically (iptables-restore --noflush) when it differs, as crossnet.ts
 * does for BERTH_CROSSNET. Replies (container -> peer) pass Docker's own `-i docker0 ! -o
 * docker0 -j ACCEPT`.
 *
 * What this trusts: a peer host, not only its balanced flows — the receiving host cannot tell a
 * balanced connect from a direct one (the balancing happened on the peer). That is the host-gw
 * trust model: the hosts of one cluster reach each other's containers. README "Several hosts".
 *
 * Every rule carries the comment `berth`; with no peer the chain and the jump are removed, and
 * `berth cleanup` removes both.
 */
import { run } from '../util/exec';
import { parseCidr, parseIp } from '../model/ip';
import { DOCKER_USER } from '../datapath/crossnet';
import { chainRules, iptablesTool, removeJumpAndChain } from '../util/iptables';
import type { NodeRecord } from './codec';

export const PEERS_CHAIN = 'BERTH_PEERS';
const JUMP = [DOCKER_USER, '-m', 'comment', '--comment', 'berth', '-j', PEERS_CHAIN];
const JUMP_TEXT = `-A ${DOCKER_USER} -m comment --comment berth -j ${PEERS_CHAIN}`;

/** One accepted (peer, local subnet) pair. */
export interface PeerAccept {
  family: 4 | 6;
  /** The peer's nodeAddress. */
  peer: string;
  node: string;
  /** A local container subnet (canonical CIDR). */
  subnet: string;
}

/**
 * Which (peer, local subnet) pairs to accept: every peer with a live node record, a valid
 * address and not at this host's own address (several berthd on one test host route nothing),
 * times every local subnet of the peer address's family. Peers whose subnets overlap are kept:
 * an overlap is about where their backends are, not about whether they may reach ours (they do
 * not route to an overlapping subnet anyway). Sorted, deduplicated. Pure.
 */
export function peerAccepts(self: string, nodes: Map<string, NodeRecord>, ownAddress: string | null, localSubnets: string[]): PeerAccept[] {
  const subnets = new Map<string, { family: 4 | 6; text: string }>();
  for (const s of localSubnets) {
    const c = parseCidr(s);
    if (c) subnets.set(c.text, { family: c.family, text: c.text });
  }
  const out = new Map<string, PeerAccept>();
  for (const n of nodes.values()) {
    if (n.name === self || n.address === ownAddress) continue;
    const ip = parseIp(n.address);
    if (!ip) continue;
    for (const s of subnets.values()) {
      if (s.family !== ip.family) continue;
      const a: PeerAccept = { family: ip.family, peer: n.address, node: n.name, subnet: s.text };
      out.set(`${a.family} ${a.peer} ${a.subnet}`, a);
    }
  }
  return [...out.values()].sort((a, b) => a.family - b.family || cmp(a.peer, b.peer) || cmp(a.subnet, b.subnet));
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** BERTH_PEERS's rules for one family, exactly as `iptables -S` prints them (compared as text). Pure. */
export function peerAcceptRules(accepts: PeerAccept[], family: 4 | 6): string[] {
  const bits = family === 4 ? 32 : 128;
  return accepts.filter((a) => a.family === family).map((a) => `-A ${PEERS_CHAIN} -s ${a.peer}/${bits} -d ${a.subnet} -m comment --comment berth -j ACCEPT`);
}

/** Per family: what was found and done. */
export interface PeerAcceptStatus {
  family: 4 | 6;
  /** DOCKER-USER exists (Docker manages iptables; without it there is no FORWARD drop of Docker's to pass). */
  dockerUser: boolean;
  /** Rules in BERTH_PEERS after the pass. */
  rules: number;
  /** The chain or the jump was (re)written in this pass. */
  changed: boolean;
  error: string | null;
}

/**
 * Makes BERTH_PEERS hold exactly `accepts`' rules and DOCKER-USER jump to it ahead of every rule
 * that is not berth's (after BERTH_CROSSNET's jump, which crossnet.ts keeps first: both only
 * ACCEPT, so their order does not matter). No accepts for a family: chain and jump removed.
 * Idempotent and read-only when nothing changed, so every reconcile can call it (a dockerd
 * restart or a firewall reload is repaired within one reconcile interval). Never throws for
 * iptables failing: the error is in the family's status (IPv6 failures are expected on hosts
 * without ip6tables support).
 */
export async function syncPeerAccepts(accepts: PeerAccept[]): Promise<PeerAcceptStatus[]> {
  const out: PeerAcceptStatus[] = [];
  for (const family of [4, 6] as const) {
    const t = iptablesTool(family);
    const want = peerAcceptRules(accepts, family);
    const user = await chainRules(family, DOCKER_USER);
    const st: PeerAcceptStatus = { family, dockerUser: user !== null, rules: 0, changed: false, error: null };
    out.push(st);
    const chain = await chainRules(family, PEERS_CHAIN);
    if (want.length === 0 || user === null) {
      if (chain !== null || user?.includes(JUMP_TEXT)) {
        await removeJumpAndChain(family, JUMP, PEERS_CHAIN);
        st.changed = true;
      }
      continue;
    }
    if (chain === null || chain.join('\n') !== want.join('\n')) {
      const input = ['*filter', `:${PEERS_CHAIN} - [0:0]`, ...want, 'COMMIT', ''].join('\n');
      const r = await run(t.restore, ['-w', '5', '--noflush'], { input });
      if (r.code !== 0) {
        st.error = `${t.restore}: ${r.stderr.trim() || `exit ${r.code}`}`;
        continue;
      }
      st.changed = true;
    }
    st.rules = want.length;
    // The jump must come before any rule of someone else's (which could DROP or RETURN first).
    const at = user.indexOf(JUMP_TEXT);
    const ahead = at >= 0 && user.slice(0, at).every((l) => l.includes('--comment berth'));
    if (!ahead) {
      for (let i = 0; i < 8; i++) if ((await run(t.cmd, ['-w', '5', '-t', 'filter', '-D', ...JUMP])).code !== 0) break;
      const r = await run(t.cmd, ['-w', '5', '-t', 'filter', '-I', DOCKER_USER, '1', ...JUMP.slice(1)]);
      if (r.code !== 0) st.error = `${t.cmd} -I ${DOCKER_USER}: ${r.stderr.trim() || `exit ${r.code}`}`;
      else st.changed = true;
    }
  }
  return out;
}

/** `berth cleanup`: removes BERTH_PEERS and its jump, both families. */
export async function removePeerAccepts(): Promise<string[]> {
  return [...(await removeJumpAndChain(4, JUMP, PEERS_CHAIN)), ...(await removeJumpAndChain(6, JUMP, PEERS_CHAIN))];
}
