/**
 * crossNetwork: the iptables side of "every container reaches every VIP" across Docker networks.
 *
 * Docker's FORWARD chain jumps to DOCKER-USER first, then to DOCKER-ISOLATION-STAGE-1/2, which
 * drop packets going from one Docker bridge to another by (in, out) interface, whatever their
 * conntrack state. DOCKER-USER is the chain Docker leaves to the administrator and never flushes
 * (it creates it if missing and keeps FORWARD's jump to it first), so berth puts one jump there,
 * to its own filter chain BERTH_CROSSNET, whose content is replaced atomically when it differs
 * (iptables-restore --noflush), exactly as the ingress redirect's chain (proxy/iptables.ts).
 *
 * Modes (`how`):
 *  - balanced-flows (crossNetwork allow, the normal case): the first packet of a NEW connection
 *    that bpf/flows.bpf.c recorded as balanced (xt_bpf runs the pinned berth_flow_match) gets
 *    the CONNMARK bit FLOW_CONNMARK; every packet of a marked connection, both directions, is
 *    ACCEPTed before Docker's isolation sees it. Nothing else is touched: direct container-to-
 *    container traffic across networks stays dropped as Docker intends.
 *  - open-ports (crossNetwork allow on a kernel that could not load the flow programs): the
 *    reachable backends' service ports are ACCEPTed to and from their addresses, from any
 *    network. Weaker: a container on another network may then also reach those ports directly,
 *    not only through the VIP. berth status and doctor say so.
 *  - docker (crossNetwork docker): no rule; Docker's isolation is the policy.
 * Every rule carries the comment `berth`; `berth cleanup` removes the chain and the jump.
 */
import { run } from '../util/exec';
import { chainRules, iptablesTool, removeJumpAndChain } from '../util/iptables';
import type { Service } from '../model/types';

export const CROSSNET_CHAIN = 'BERTH_CROSSNET';
export const DOCKER_USER = 'DOCKER-USER';
/** Conntrack mark bit of a balanced flow. Connmark, not skb->mark (which berth's proxy marks
 * use): a connection's mark lives in conntrack, so the reply direction carries it too. */
export const FLOW_CONNMARK = 0x01000000;

export type CrossnetHow = 'balanced-flows' | 'open-ports' | 'docker';

const hex = (n: number) => `0x${n.toString(16)}`;
const JUMP = [DOCKER_USER, '-m', 'comment', '--comment', 'berth', '-j', CROSSNET_CHAIN];

/** Which rule set a mode and the flow programs' state give. Pure. */
export function crossnetHow(mode: 'allow' | 'docker', matchPin: string | null): CrossnetHow {
  if (mode === 'docker') return 'docker';
  return matchPin ? 'balanced-flows' : 'open-ports';
}

/**
 * BERTH_CROSSNET's rules for one family, exactly as `iptables -S` prints them (so the installed
 * chain compares as text). Pure.
 */
export function crossnetRules(how: CrossnetHow, family: 4 | 6, opts: { matchPin: string | null; services: Service[]; chain?: string }): string[] {
  const chain = opts.chain ?? CROSSNET_CHAIN;
  const c = '-m comment --comment berth';
  if (how === 'docker') return [];
  if (how === 'balanced-flows') {
    const mark = `${hex(FLOW_CONNMARK)}/${hex(FLOW_CONNMARK)}`;
    return [
      `-A ${chain} -m conntrack --ctstate NEW -m bpf --object-pinned ${opts.matchPin} ${c} -j CONNMARK --set-xmark ${mark}`,
      `-A ${chain} -m connmark --mark ${mark} ${c} -j ACCEPT`,
    ];
  }
  // open-ports: each reachable backend's target ports, both directions.
  const seen = new Set<string>();
  const out: string[] = [];
  const bits = family === 4 ? 32 : 128;
  for (const s of opts.services) {
    if (s.kind !== 'service') continue;
    for (const b of s.backends) {
      const ip = family === 4 ? b.ip : b.ip6;
      if (!ip || b.reachable === false) continue;
      for (const p of s.ports) {
        const k = `${ip}/${p.protocol}/${p.targetPort}`;
        if (seen.has(k)) continue;
        seen.add(k);
        out.push(`-A ${chain} -d ${ip}/${bits} -p ${p.protocol} -m ${p.protocol} --dport ${p.targetPort} ${c} -j ACCEPT`);
        out.push(`-A ${chain} -s ${ip}/${bits} -p ${p.protocol} -m ${p.protocol} --sport ${p.targetPort} ${c} -j ACCEPT`);
      }
    }
  }
  return out;
}

/** What berth found and did in Docker's chains (status, doctor). */
export interface CrossnetStatus {
  mode: 'allow' | 'docker';
  how: CrossnetHow;
  /** Per family: DOCKER-USER exists (Docker manages iptables), berth's jump is its first rule,
   * and berth's chain holds what it should. */
  families: { family: 4 | 6; dockerUser: boolean; isolation: boolean; jumpFirst: boolean; chainOk: boolean }[];
  /** Problems applying (IPv4 only: IPv6 is best effort), or null. */
  error: string | null;
}

/** Docker's chains as seen now, per family (read only). */
export async function inspectDockerChains(family: 4 | 6): Promise<{ dockerUser: boolean; isolation: boolean; jumpFirst: boolean; chain: string[] | null }> {
  const user = await chainRules(family, DOCKER_USER);
  const iso = await chainRules(family, 'DOCKER-ISOLATION-STAGE-1');
  const chain = await chainRules(family, CROSSNET_CHAIN);
  const jumpFirst = !!user && user.length > 0 && user[0] === `-A ${DOCKER_USER} -m comment --comment berth -j ${CROSSNET_CHAIN}`;
  return { dockerUser: user !== null, isolation: iso !== null, jumpFirst, chain };
}

/**
 * Make BERTH_CROSSNET hold `how`'s rules and DOCKER-USER jump to it first (or, for `docker`,
 * remove both). Idempotent and cheap when nothing changed (reads only), so the periodic
 * reconcile repairs what a dockerd restart, a `docker network create` or a firewall reload
 * changed. Without DOCKER-USER (Docker runs with iptables off: no isolation to pass) nothing is
 * installed for that family. `force` rewrites the chain even if it reads the same (a new
 * berth_flow_match program behind the same pin path after a restart).
 */
export async function applyCrossnet(how: CrossnetHow, mode: 'allow' | 'docker', opts: { matchPin: string | null; services: Service[]; force?: boolean }): Promise<CrossnetStatus> {
  const st: CrossnetStatus = { mode, how, families: [], error: null };
  for (const family of [4, 6] as const) {
    const t = iptablesTool(family);
    const seen = await inspectDockerChains(family);
    const want = crossnetRules(how, family, opts);
    const fam = { family, dockerUser: seen.dockerUser, isolation: seen.isolation, jumpFirst: seen.jumpFirst, chainOk: false };
    st.families.push(fam);
    if (how === 'docker' || !seen.dockerUser) {
      if (seen.chain !== null || seen.jumpFirst) await removeJumpAndChain(family, JUMP, CROSSNET_CHAIN);
      fam.jumpFirst = false;
      fam.chainOk = how === 'docker';
      continue;
    }
    let problem: string | null = null;
    if (opts.force || seen.chain === null || seen.chain.join('\n') !== want.join('\n')) {
      const input = ['*filter', `:${CROSSNET_CHAIN} - [0:0]`, ...want, 'COMMIT', ''].join('\n');
      const r = await run(t.restore, ['-w', '5', '--noflush'], { input });
      if (r.code !== 0) problem = `${t.restore}: ${r.stderr.trim()}`;
    }
    if (!problem && !seen.jumpFirst) {
      // Anywhere but first, a rule of someone else's could ACCEPT or DROP before ours: move it.
      for (let i = 0; i < 8; i++) if ((await run(t.cmd, ['-w', '5', '-t', 'filter', '-D', ...JUMP])).code !== 0) break;
      const r = await run(t.cmd, ['-w', '5', '-t', 'filter', '-I', DOCKER_USER, '1', ...JUMP.slice(1)]);
      if (r.code !== 0) problem = `${t.cmd} -I ${DOCKER_USER}: ${r.stderr.trim()}`;
    }
    if (problem) {
      if (family === 4) st.error = problem;
      continue;
    }
    fam.jumpFirst = true;
    fam.chainOk = true;
  }
  return st;
}

/** Remove berth's jump and chain, both families (berth cleanup). */
export async function removeCrossnet(): Promise<string[]> {
  return [...(await removeJumpAndChain(4, JUMP, CROSSNET_CHAIN)), ...(await removeJumpAndChain(6, JUMP, CROSSNET_CHAIN))];
}
