/**
 * Routes to peers' container subnets, host-gateway style (flannel's host-gw backend does the
 * same): `<peer subnet> via <peer nodeAddress>`, so a connect() that the socket hook rewrote to a
 * remote backend's container address leaves through the host's own routing, and arrives at the
 * peer, whose Docker bridge delivers it (Docker's FORWARD chains accept traffic to published
 * containers' networks from the host's interfaces). It needs the hosts on one L2 segment (the
 * next hop must be directly reachable); README "Several hosts" says what that excludes.
 *
 * The routes carry berth's route protocol (BERTH_RT_PROTO) and this instance's metric, like the
 * VIP ranges' unreachable routes, so `ip route replace` touches only berth's route, and removal
 * (stale peers, `berth cleanup`) never touches a route someone else added.
 */
import { run } from '../util/exec';
import { BERTH_RT_PROTO } from '../datapath/routes';
import { parseCidr, parseIp } from '../model/ip';
import type { NodeRecord } from './codec';
import type { SubnetOverlap } from './merge';

export interface PeerRoute {
  /** Peer container subnet (canonical CIDR). */
  subnet: string;
  /** The peer's nodeAddress. */
  via: string;
  node: string;
}

/**
 * Which routes this host needs: every subnet of every peer, except peers with overlapping
 * subnets (their backends are not used either), peers at this host's own address (tests run
 * several berthd on one host: nothing to route) and subnets of the other family than the
 * peer's address. Sorted by subnet. Pure.
 */
export function peerRoutes(self: string, nodes: Map<string, NodeRecord>, overlaps: SubnetOverlap[], ownAddress: string | null): PeerRoute[] {
  const bad = new Set(overlaps.map((o) => o.node));
  const out: PeerRoute[] = [];
  for (const n of nodes.values()) {
    if (n.name === self || bad.has(n.name) || n.address === ownAddress) continue;
    const via = parseIp(n.address);
    if (!via) continue;
    for (const s of n.subnets) {
      const c = parseCidr(s);
      if (c && c.family === via.family) out.push({ subnet: c.text, via: n.address, node: n.name });
    }
  }
  return out.sort((a, b) => (a.subnet < b.subnet ? -1 : a.subnet > b.subnet ? 1 : 0));
}

interface IpRoute {
  dst?: string;
  gateway?: string;
  metric?: number;
  type?: string;
}

async function listOwn(family: '-4' | '-6', metric: number): Promise<IpRoute[]> {
  const r = await run('ip', ['-j', family, 'route', 'show', 'proto', String(BERTH_RT_PROTO)]);
  if (r.code !== 0) {
    // A host with IPv6 disabled has no v6 routes to list (and so none of berth's).
    if (family === '-6') return [];
    throw new Error(`ip route show proto ${BERTH_RT_PROTO}: ${r.stderr.trim()}`);
  }
  const routes = JSON.parse(r.stdout || '[]') as IpRoute[];
  // Only gateway routes: the VIP ranges' unreachable routes share proto and metric.
  return routes.filter((x) => x.gateway && (x.metric ?? 0) === metric && (x.type ?? 'unicast') === 'unicast');
}

const fam = (cidr: string): '-4' | '-6' => (cidr.includes(':') ? '-6' : '-4');
const dstOf = (r: IpRoute): string => (r.dst && r.dst.includes('/') ? r.dst : `${r.dst}/${r.dst?.includes(':') ? 128 : 32}`);

/**
 * Makes berth's peer routes exactly `want`. Returns what changed; a route the kernel refuses
 * (e.g. a next hop that is not directly reachable) is reported in `errors`, the rest goes on.
 */
export async function syncPeerRoutes(want: PeerRoute[], metric: number): Promise<{ added: string[]; removed: string[]; errors: string[] }> {
  const out = { added: [] as string[], removed: [] as string[], errors: [] as string[] };
  const have = [...(await listOwn('-4', metric)), ...(await listOwn('-6', metric))];
  const key = (dst: string, gw: string) => `${dst} via ${gw}`;
  const wanted = new Set(want.map((w) => key(w.subnet, w.via)));
  const present = new Set(have.map((h) => key(dstOf(h), h.gateway!)));
  for (const h of have) {
    const k = key(dstOf(h), h.gateway!);
    if (wanted.has(k)) continue;
    const r = await run('ip', [fam(dstOf(h)), 'route', 'del', dstOf(h), 'via', h.gateway!, 'metric', String(metric), 'proto', String(BERTH_RT_PROTO)]);
    if (r.code === 0) out.removed.push(k);
    else out.errors.push(`ip route del ${k}: ${r.stderr.trim()}`);
  }
  for (const w of want) {
    const k = key(w.subnet, w.via);
    if (present.has(k)) continue;
    const r = await run('ip', [fam(w.subnet), 'route', 'replace', w.subnet, 'via', w.via, 'metric', String(metric), 'proto', String(BERTH_RT_PROTO)]);
    if (r.code === 0) out.added.push(k);
    else out.errors.push(`route to node ${w.node}'s containers (ip route replace ${k}): ${r.stderr.trim() || `exit ${r.code}`}`);
  }
  return out;
}

/** `berth cleanup`: removes every peer route of this instance (metric). */
export async function removePeerRoutes(metric: number): Promise<string[]> {
  return (await syncPeerRoutes([], metric)).removed.map((r) => `route ${r}`);
}
