/**
 * berth's key layout in etcd, below `etcdPrefix` (default /berth). berth reads and writes only
 * here; the RBAC role in README "Several hosts" grants exactly this range.
 *
 *   <prefix>/nodes/<node>                 NodeRecord, owned by the node's lease
 *   <prefix>/services/<kind>/<name>/<node>  ServiceRecord (that node's backends), owned by its lease
 *   <prefix>/vips/<kind>/<name>           VipRecord: the cluster's VIP of a name (no lease: it
 *                                         must outlive every host, like /var/lib/berth/vips.json)
 *   <prefix>/vip-owners/<address>         VipOwnerRecord: which name owns an address; the
 *                                         uniqueness index the allocation transaction checks
 *
 * Node, service and ingress names are DNS-label-like, so '/' never appears inside a segment.
 * IPv6 addresses contain ':' which etcd keys allow as they are.
 */
import type { ServiceKind } from '../model/vip';

export interface KeyLayout {
  prefix: string;
  node(node: string): string;
  service(kind: ServiceKind, name: string, node: string): string;
  vip(kind: ServiceKind, name: string): string;
  vipOwner(addr: string): string;
}

export function keyLayout(prefix: string): KeyLayout {
  const p = prefix.replace(/\/+$/, '');
  return {
    prefix: `${p}/`,
    node: (node) => `${p}/nodes/${node}`,
    service: (kind, name, node) => `${p}/services/${kind}/${name}/${node}`,
    vip: (kind, name) => `${p}/vips/${kind}/${name}`,
    vipOwner: (addr) => `${p}/vip-owners/${addr}`,
  };
}

export type ParsedKey =
  | { type: 'node'; node: string }
  | { type: 'service'; kind: ServiceKind; name: string; node: string }
  | { type: 'vip'; kind: ServiceKind; name: string }
  | { type: 'vipOwner'; addr: string };

/** What a key below the prefix is; null for keys berth does not know (ignored, not fatal). */
export function parseKey(prefix: string, key: string): ParsedKey | null {
  const p = `${prefix.replace(/\/+$/, '')}/`;
  if (!key.startsWith(p)) return null;
  const parts = key.slice(p.length).split('/');
  const kind = (k: string): ServiceKind | null => (k === 'service' || k === 'ingress' ? k : null);
  if (parts[0] === 'nodes' && parts.length === 2 && parts[1]) return { type: 'node', node: parts[1] };
  if (parts[0] === 'services' && parts.length === 4 && kind(parts[1]) && parts[2] && parts[3]) {
    return { type: 'service', kind: kind(parts[1])!, name: parts[2], node: parts[3] };
  }
  if (parts[0] === 'vips' && parts.length === 3 && kind(parts[1]) && parts[2]) return { type: 'vip', kind: kind(parts[1])!, name: parts[2] };
  if (parts[0] === 'vip-owners' && parts.length === 2 && parts[1]) return { type: 'vipOwner', addr: parts[1] };
  return null;
}
