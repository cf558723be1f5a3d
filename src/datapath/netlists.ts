/**
 * Per-client-network backend lists (bpf/lb.h, "Per-client-network backend lists"). PURE.
 *
 * List 0 of a frontend is what every client gets by default: each backend at the address the
 * model chose (model/network.ts). A client container is also known by the Docker networks it is
 * on, and for a network n the frontend may have list n of its own:
 *  - crossNetwork allow: each backend at its address ON n when it is on n (a shared network
 *    first: the packets stay on one bridge), else at its list-0 address (berth's DOCKER-USER
 *    rule lets the balanced flow cross);
 *  - crossNetwork docker: only the backends on n, at their address on n (host-network backends,
 *    which every client reaches through the host, at their list-0 address); possibly none, and
 *    then the empty list makes the connect hook refuse.
 * List n is written only where it differs from list 0, so single-network services (the common
 * case) cost nothing: their master entry does not even get BERTH_SVC_F_NETS, and the hook never
 * looks the client up.
 */
import type { ContainerInfo, NetworkInfo, Service } from '../model/types';
import { CLIENT_NETS, canonicalIp, familyOf, FAMILY_V4, type BackendAddr } from './codec';

export interface NetContext {
  mode: 'allow' | 'docker';
  /** Docker network name -> berth's network number (1..65535), from networkNumbers(). */
  numbers: Map<string, number>;
}

/** Drivers whose containers get their own netns on a network berth can number. */
const NUMBERED = (n: NetworkInfo): boolean => n.driver !== 'host' && n.driver !== 'null' && n.name !== 'host' && n.name !== 'none';

/** 32-bit FNV-1a of a string. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * Docker network name -> a number 1..65535, derived from the network's id so that it does not
 * move when other networks come and go (a moved number would rewrite every list of that
 * network); a collision takes the next free number, networks taken in id order.
 */
export function networkNumbers(networks: NetworkInfo[]): Map<string, number> {
  const out = new Map<string, number>();
  const used = new Set<number>();
  for (const n of [...networks].filter(NUMBERED).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))) {
    if (out.has(n.name)) continue;
    let x = (fnv1a(n.id) % 0xffff) + 1;
    while (used.has(x)) x = (x % 0xffff) + 1;
    used.add(x);
    out.set(n.name, x);
  }
  return out;
}

/**
 * The network numbers of each client container with a netns of its own (not host, not sharing
 * another container's), in name order, at most CLIENT_NETS: what berth_netns gets per container.
 */
export function clientNetworks(containers: ContainerInfo[], numbers: Map<string, number>): { id: string; nets: number[] }[] {
  const out: { id: string; nets: number[] }[] = [];
  for (const c of containers) {
    const mode = c.networkMode ?? '';
    if (c.state !== 'running' || mode === 'host' || mode === 'none' || mode.startsWith('container:')) continue;
    const nets = [...c.networks].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map((n) => numbers.get(n.name)).filter((n): n is number => n !== undefined).slice(0, CLIENT_NETS);
    if (nets.length) out.push({ id: c.id, nets });
  }
  return out;
}

const same = (a: BackendAddr[], b: BackendAddr[]): boolean => a.length === b.length && a.every((x, i) => x.ip === b[i].ip && x.port === b[i].port);

/**
 * Lists 1.. for one frontend of service s: list number -> backends, only those that differ from
 * `list0` (the frontend's list 0, in the order desiredFrontends built it). `vip` and `targetPort`
 * say which frontend. Pure.
 */
export function networkLists(s: Service, vip: string, targetPort: number, list0: BackendAddr[], ctx: NetContext, maxSlots: number): Map<number, BackendAddr[]> {
  const out = new Map<number, BackendAddr[]>();
  if (s.kind !== 'service') return out;
  const v4 = familyOf(vip) === FAMILY_V4;
  for (const [name, net] of ctx.numbers) {
    const list: BackendAddr[] = [];
    const seen = new Set<string>();
    for (const b of s.backends) {
      const dflt = v4 ? b.ip : b.ip6;
      if (!dflt || b.reachable === false) continue;
      const on = b.networks?.find((n) => n.network === name);
      const here = on ? (v4 ? on.ip : on.ip6) : null;
      // The host as a backend (a --network host container, or an entry without networks such as
      // the DNS VIP's berthd socket): every client reaches it through the host, in both modes.
      const isHost = !b.networks || (b.networks.length === 1 && b.networks[0].network === 'host');
      let ip: string | null;
      if (here) ip = here;
      else if (ctx.mode === 'allow' || isHost) ip = dflt;
      else ip = null;
      if (!ip) continue;
      const a = { ip: canonicalIp(ip), port: targetPort };
      const k = `${a.ip}/${a.port}`;
      if (seen.has(k)) continue;
      seen.add(k);
      list.push(a);
    }
    if (list.length > maxSlots) list.length = maxSlots;
    if (!same(list, list0)) out.set(net, list);
  }
  return out;
}
