/**
 * Where remote and local meet (DESIGN lesson 12): the local desired state (from Docker, built by
 * model/) plus the cluster view (records from etcd) in, one desired state out, which the datapath
 * and Envoy's EDS consume unchanged. Pure: no I/O.
 *
 * Rules, each deterministic for a given input so every host decides the same:
 *   - Records of this node are skipped (its own services are the local state).
 *   - A peer's records are used only while its node record exists (same lease: a dead host's
 *     records go together) and only if its container subnets overlap neither this host's nor
 *     another peer's: with overlapping subnets a backend address is ambiguous and a route to it
 *     would shadow a local network. Such peers are reported (SubnetOverlap) with how to fix it.
 *   - A remote backend outside every subnet its node announced is skipped (no route reaches it).
 *   - A service known locally keeps its local VIP and ports; a peer whose ports differ
 *     contributes no backends (error on the service). A service only peers have takes the VIP
 *     and ports of the first peer (by node name); a later peer that disagrees is skipped likewise.
 *   - A remote-only service whose VIP is a local service's (or an earlier remote one's) VIP is
 *     not added: the cluster's VIP owner index (vip-owners) names the rightful owner, and on
 *     every host the same name loses (error kept on the winner so `berth services` shows it).
 *   - Every backend carries `node`: this node's name for local ones.
 * Ingress records are not merged: an ingress and its routes come from labels on each host.
 */
import type { Backend, DesiredState, Service, ServicePort } from '../model/types';
import { type Cidr, cidrContains, parseCidr, parseIp } from '../model/ip';
import type { NodeRecord, ServiceRecord, VipOwnerRecord } from './codec';
import { SUBNET_FIX } from './errors';

/** What this host knows of the cluster, from the last etcd read plus watch events. */
export interface ClusterView {
  /** Node records by name (this node's included). */
  nodes: Map<string, NodeRecord>;
  /** Service records of every node (this node's included; skipped by the merge). */
  services: ServiceRecord[];
  /** vip-owners index: address -> owning name. */
  owners: Map<string, VipOwnerRecord>;
}

export interface SubnetOverlap {
  /** The peer whose backends are not used. */
  node: string;
  subnet: string;
  /** 'local' (this host) or the other peer's name. */
  with: string;
  otherSubnet: string;
  message: string;
}

export interface MergeResult {
  state: DesiredState;
  overlaps: SubnetOverlap[];
  /** Remote backends added, over all services. */
  remoteBackends: number;
  /** Problems that are not about one service (e.g. a backend outside its node's subnets). */
  errors: string[];
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function overlaps(a: Cidr, b: Cidr): boolean {
  return a.family === b.family && (cidrContains(a, { family: b.family, value: b.base }) || cidrContains(b, { family: a.family, value: a.base }));
}

function portsKey(ports: ServicePort[]): string {
  return ports.map((p) => `${p.port}:${p.targetPort}/${p.protocol}`).sort().join(',');
}

/**
 * Which peers' subnets overlap this host's (`localSubnets`, from Docker's networks) or each
 * other's. Both peers of a peer-peer overlap are reported: neither can be told apart.
 */
export function findOverlaps(self: string, localSubnets: string[], nodes: Map<string, NodeRecord>): SubnetOverlap[] {
  const local = localSubnets.map(parseCidr).filter((c): c is Cidr => c !== null);
  const peers = [...nodes.values()].filter((n) => n.name !== self).sort((a, b) => cmp(a.name, b.name));
  const out: SubnetOverlap[] = [];
  const seen = new Set<string>();
  const add = (node: string, subnet: string, withWhat: string, other: string) => {
    const k = `${node}\u0000${subnet}\u0000${withWhat}\u0000${other}`;
    if (seen.has(k)) return;
    seen.add(k);
    const whom = withWhat === 'local' ? 'this host' : `node ${withWhat}`;
    out.push({
      node, subnet, with: withWhat, otherSubnet: other,
      message: `node ${node}'s container subnet ${subnet} overlaps ${other} of ${whom}; node ${node}'s backends are not used here. Fix: ${SUBNET_FIX}`,
    });
  };
  for (const p of peers) {
    for (const s of p.subnets) {
      const c = parseCidr(s);
      if (!c) continue;
      for (const l of local) if (overlaps(c, l)) add(p.name, c.text, 'local', l.text);
      for (const q of peers) {
        if (q.name === p.name) continue;
        for (const t of q.subnets) {
          const d = parseCidr(t);
          if (d && overlaps(c, d)) add(p.name, c.text, q.name, d.text);
        }
      }
    }
  }
  return out;
}

/** Local state + cluster view -> the merged desired state (see the module comment). */
export function mergeRemote(local: DesiredState, view: ClusterView, self: string, localSubnets: string[]): MergeResult {
  const overlapList = findOverlaps(self, localSubnets, view.nodes);
  const unusable = new Set(overlapList.map((o) => o.node));
  const errors: string[] = [];
  const services: Service[] = local.services.map((s) => ({
    ...s,
    backends: s.backends.map((b) => ({ ...b, node: self })),
    errors: [...s.errors],
  }));
  const byName = new Map(services.filter((s) => s.kind === 'service').map((s) => [s.name, s] as const));
  const localVips = new Map<string, Service>();
  for (const s of services) {
    localVips.set(s.vip, s);
    if (s.vip6) localVips.set(s.vip6, s);
  }
  // Remote-only services created here, and who fixed their VIP/ports.
  const created = new Map<string, { svc: Service; from: string }>();
  let remoteBackends = 0;

  const records = view.services
    .filter((r) => r.kind === 'service' && r.node !== self && view.nodes.has(r.node) && !unusable.has(r.node))
    .sort((a, b) => cmp(a.name, b.name) || cmp(a.node, b.node));
  for (const r of records) {
    const node = view.nodes.get(r.node)!;
    const subnets = node.subnets.map(parseCidr).filter((c): c is Cidr => c !== null);
    const routable = (b: Backend): boolean => {
      const ok = [b.ip, b.ip6].filter((x): x is string => x !== null).every((x) => {
        const a = parseIp(x);
        return a !== null && subnets.some((c) => cidrContains(c, a));
      });
      if (!ok) errors.push(`service ${r.name}: backend ${b.container} (${b.ip ?? b.ip6}) on node ${r.node} is outside that node's container subnets; not used`);
      return ok;
    };
    let svc = byName.get(r.name);
    if (svc && !created.has(r.name) && portsKey(svc.ports) !== portsKey(r.ports)) {
      svc.errors.push(`node ${r.node} serves ${r.name} with other ports (${portsKey(r.ports)}); its backends are not used`);
      continue;
    }
    if (!svc) {
      const clash = localVips.get(r.vip) ?? (r.vip6 ? localVips.get(r.vip6) : undefined);
      if (clash) {
        const owner = view.owners.get(r.vip);
        const who = owner ? `${owner.kind} ${owner.name}` : `${clash.kind} ${clash.name}`;
        clash.errors.push(`node ${r.node} announces service ${r.name} at VIP ${r.vip} too (owner in the cluster: ${who}); ${r.name}'s remote backends are not used here`);
        continue;
      }
      svc = {
        name: r.name, kind: 'service', vip: r.vip, vip6: r.vip6,
        ports: r.ports.map((p) => ({ ...p })), backends: [], routes: [], ingress: null, errors: [],
      };
      services.push(svc);
      byName.set(r.name, svc);
      created.set(r.name, { svc, from: r.node });
      localVips.set(r.vip, svc);
      if (r.vip6) localVips.set(r.vip6, svc);
    } else if (created.has(r.name)) {
      const first = created.get(r.name)!;
      if (portsKey(svc.ports) !== portsKey(r.ports) || svc.vip !== r.vip || svc.vip6 !== r.vip6) {
        svc.errors.push(`node ${r.node} announces ${r.name} with VIP ${r.vip} and ports ${portsKey(r.ports)}, node ${first.from} with VIP ${svc.vip} and ports ${portsKey(svc.ports)}; node ${r.node}'s backends are not used`);
        continue;
      }
    } else if (svc.vip !== r.vip) {
      // Transient while the cluster's VIP assignment propagates; the backends are still real.
      svc.errors.push(`node ${r.node} has ${r.name} at VIP ${r.vip}, this host at ${svc.vip} (the cluster assignment in etcd decides; converging)`);
    }
    for (const b of r.backends) {
      if (!routable(b)) continue;
      svc.backends.push({ ...b, node: r.node });
      remoteBackends++;
    }
  }
  for (const s of services) s.backends.sort((a, b) => cmp(a.id, b.id) || cmp(a.node ?? '', b.node ?? ''));
  services.sort((a, b) => cmp(a.name, b.name) || (a.kind === b.kind ? 0 : a.kind === 'service' ? -1 : 1));
  return { state: { services, labelErrors: local.labelErrors }, overlaps: overlapList, remoteBackends, errors };
}
