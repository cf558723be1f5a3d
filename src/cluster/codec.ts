/**
 * Record codecs: what berth stores in etcd, as versioned JSON, and the checks every record from a
 * peer passes before berth uses it (issue 12, part 6). A record is data written by another host:
 * it is parsed, canonicalised and checked against THIS host's VIP ranges; anything wrong rejects
 * that one record with a message naming its key (the caller logs it), never the whole view.
 *
 * Rejected on decode:
 *   - not JSON, not an object, a missing/ill-typed field, `version` other than RECORD_VERSION
 *     (a newer berth's record is not guessed at);
 *   - the names in the record disagreeing with its key (the key is what leases and RBAC protect);
 *   - a VIP outside the local ranges (serviceCidr/serviceCidr6): hosts with different ranges
 *     would program different things for the same name;
 *   - an address inside a VIP range where an address of a real endpoint belongs (a backend, a
 *     node address, a container subnet): traffic to it would loop through the socket hooks.
 * Pure: no I/O.
 */
import type { Backend, Protocol, ServicePort } from '../model/types';
import type { ServiceKind } from '../model/vip';
import { type Cidr, canonicalIp, cidrContains, parseCidr, parseIp } from '../model/ip';
import type { ParsedKey } from './keys';

export const RECORD_VERSION = 1;

/** A host in the cluster: `<prefix>/nodes/<name>`. */
export interface NodeRecord {
  name: string;
  /** Where peers reach this host (routes to its container subnets go via it). */
  address: string;
  /** The host's Docker container subnets (canonical CIDRs), for routes and overlap checks. */
  subnets: string[];
  /** berth version that wrote it (informational). */
  berth: string;
  /** When this berthd started (ISO 8601), informational. */
  startedAt: string;
}

/** One node's part of a service: `<prefix>/services/<kind>/<name>/<node>`. */
export interface ServiceRecord {
  kind: ServiceKind;
  name: string;
  node: string;
  vip: string;
  vip6: string | null;
  ports: ServicePort[];
  /** That node's usable backends (empty for an ingress: its routes are local to each host). */
  backends: Backend[];
}

/** The cluster's VIP of a name: `<prefix>/vips/<kind>/<name>`. */
export interface VipRecord {
  kind: ServiceKind;
  name: string;
  vip: string;
  vip6: string | null;
  /** True when the VIP came from a `berth.vip` pin rather than the name's hash. */
  pinned: boolean;
  /** The node that made the assignment (informational). */
  by: string;
}

/** Which name owns an address: `<prefix>/vip-owners/<address>`. */
export interface VipOwnerRecord {
  kind: ServiceKind;
  name: string;
}

/** This host's VIP ranges, the yardstick for every record. */
export interface RecordRules {
  range4: Cidr;
  range6: Cidr;
}

export function recordRules(serviceCidr: string, serviceCidr6: string): RecordRules {
  const r4 = parseCidr(serviceCidr);
  const r6 = parseCidr(serviceCidr6);
  if (!r4 || r4.family !== 4 || !r6 || r6.family !== 6) throw new Error(`bad service ranges ${serviceCidr} ${serviceCidr6}`);
  return { range4: r4, range6: r6 };
}

export type Decoded<T> = { ok: true; record: T } | { ok: false; error: string };

export function encodeNode(r: NodeRecord): string {
  return JSON.stringify({ version: RECORD_VERSION, ...r });
}
export function encodeService(r: ServiceRecord): string {
  return JSON.stringify({ version: RECORD_VERSION, ...r });
}
export function encodeVip(r: VipRecord): string {
  return JSON.stringify({ version: RECORD_VERSION, ...r });
}
export function encodeVipOwner(r: VipOwnerRecord): string {
  return JSON.stringify({ version: RECORD_VERSION, ...r });
}

/** Thrown inside the decoders; turned into `{ok: false}` with the key in front. */
class Bad extends Error {}

type Obj = Record<string, unknown>;

function object(text: string): Obj {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Bad('is not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new Bad('is not a JSON object');
  const o = doc as Obj;
  if (o.version !== RECORD_VERSION) throw new Bad(`has version ${JSON.stringify(o.version)}; this berth reads version ${RECORD_VERSION} (upgrade berth on every host)`);
  return o;
}

function string(o: Obj, field: string): string {
  const v = o[field];
  if (typeof v !== 'string' || v === '') throw new Bad(`field "${field}" must be a non-empty string`);
  return v;
}

function ip(o: Obj, field: string, family: 4 | 6 | null, nullable: boolean): string | null {
  const v = o[field];
  if ((v === null || v === undefined) && nullable) return null;
  const c = typeof v === 'string' ? canonicalIp(v) : null;
  if (c === null) throw new Bad(`field "${field}" must be an ${family ? `IPv${family} ` : 'IP '}address${nullable ? ' or null' : ''}`);
  if (family !== null && parseIp(c)!.family !== family) throw new Bad(`field "${field}" must be an IPv${family} address`);
  return c;
}

function kindOf(o: Obj): ServiceKind {
  if (o.kind !== 'service' && o.kind !== 'ingress') throw new Bad('field "kind" must be "service" or "ingress"');
  return o.kind;
}

function inVipRange(rules: RecordRules, addr: string): Cidr | null {
  const a = parseIp(addr)!;
  const r = a.family === 4 ? rules.range4 : rules.range6;
  return cidrContains(r, a) ? r : null;
}

function checkVip(rules: RecordRules, field: string, addr: string | null): void {
  if (addr === null) return;
  const a = parseIp(addr)!;
  const r = a.family === 4 ? rules.range4 : rules.range6;
  if (!cidrContains(r, a)) throw new Bad(`names VIP ${addr} (${field}) outside this host's range ${r.text}; every host must use the same serviceCidr/serviceCidr6`);
}

function checkNotVip(rules: RecordRules, what: string, addr: string | null): void {
  if (addr === null) return;
  const r = inVipRange(rules, addr);
  if (r) throw new Bad(`names ${what} ${addr} inside the VIP range ${r.text}`);
}

function expectName(o: Obj, field: string, fromKey: string): string {
  const v = string(o, field);
  if (v !== fromKey) throw new Bad(`says ${field} "${v}" but its key says "${fromKey}"`);
  return v;
}

function decodeWith<T>(key: string, f: () => T): Decoded<T> {
  try {
    return { ok: true, record: f() };
  } catch (e) {
    if (e instanceof Bad) return { ok: false, error: `record ${key} ${e.message}; ignored` };
    throw e;
  }
}

export function decodeNode(key: string, k: Extract<ParsedKey, { type: 'node' }>, text: string, rules: RecordRules): Decoded<NodeRecord> {
  return decodeWith(key, () => {
    const o = object(text);
    const name = expectName(o, 'name', k.node);
    const address = ip(o, 'address', null, false)!;
    checkNotVip(rules, 'node address', address);
    if (!Array.isArray(o.subnets)) throw new Bad('field "subnets" must be an array of CIDRs');
    const subnets: string[] = [];
    for (const s of o.subnets) {
      const c = typeof s === 'string' ? parseCidr(s) : null;
      if (!c) throw new Bad(`subnet ${JSON.stringify(s)} is not a CIDR`);
      const r = c.family === 4 ? rules.range4 : rules.range6;
      // Overlap either way: the subnet inside the range or the range inside the subnet.
      if (cidrContains(r, { family: c.family, value: c.base }) || cidrContains(c, { family: r.family, value: r.base })) {
        throw new Bad(`names container subnet ${c.text}, which overlaps the VIP range ${r.text}`);
      }
      subnets.push(c.text);
    }
    return {
      name, address, subnets,
      berth: typeof o.berth === 'string' ? o.berth : 'unknown',
      startedAt: typeof o.startedAt === 'string' ? o.startedAt : '',
    };
  });
}

export function decodeService(key: string, k: Extract<ParsedKey, { type: 'service' }>, text: string, rules: RecordRules): Decoded<ServiceRecord> {
  return decodeWith(key, () => {
    const o = object(text);
    const kind = kindOf(o);
    if (kind !== k.kind) throw new Bad(`says kind "${kind}" but its key says "${k.kind}"`);
    const name = expectName(o, 'name', k.name);
    const node = expectName(o, 'node', k.node);
    const vip = ip(o, 'vip', 4, false)!;
    const vip6 = ip(o, 'vip6', 6, true);
    checkVip(rules, 'vip', vip);
    checkVip(rules, 'vip6', vip6);
    if (!Array.isArray(o.ports) || o.ports.length === 0) throw new Bad('field "ports" must be a non-empty array');
    const ports: ServicePort[] = o.ports.map((p: unknown, i: number) => {
      const q = (p ?? {}) as Obj;
      const num = (f: string) => {
        const n = q[f];
        if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535) throw new Bad(`ports[${i}].${f} must be a port number`);
        return n;
      };
      if (q.protocol !== 'tcp' && q.protocol !== 'udp') throw new Bad(`ports[${i}].protocol must be tcp or udp`);
      return { port: num('port'), protocol: q.protocol as Protocol, targetPort: num('targetPort') };
    });
    if (!Array.isArray(o.backends)) throw new Bad('field "backends" must be an array');
    const backends: Backend[] = o.backends.map((b: unknown, i: number) => {
      const q = (b ?? {}) as Obj;
      const bip = ip(q, 'ip', 4, true);
      const bip6 = ip(q, 'ip6', 6, true);
      if (bip === null && bip6 === null) throw new Bad(`backends[${i}] has no address`);
      checkNotVip(rules, `backends[${i}] address`, bip);
      checkNotVip(rules, `backends[${i}] address`, bip6);
      return { container: string(q, 'container'), id: string(q, 'id'), ip: bip, ip6: bip6 };
    });
    return { kind, name, node, vip, vip6, ports, backends };
  });
}

export function decodeVip(key: string, k: Extract<ParsedKey, { type: 'vip' }>, text: string, rules: RecordRules): Decoded<VipRecord> {
  return decodeWith(key, () => {
    const o = object(text);
    const kind = kindOf(o);
    if (kind !== k.kind) throw new Bad(`says kind "${kind}" but its key says "${k.kind}"`);
    const name = expectName(o, 'name', k.name);
    const vip = ip(o, 'vip', 4, false)!;
    const vip6 = ip(o, 'vip6', 6, true);
    checkVip(rules, 'vip', vip);
    checkVip(rules, 'vip6', vip6);
    if (typeof o.pinned !== 'boolean') throw new Bad('field "pinned" must be true or false');
    return { kind, name, vip, vip6, pinned: o.pinned, by: typeof o.by === 'string' ? o.by : '' };
  });
}

export function decodeVipOwner(key: string, k: Extract<ParsedKey, { type: 'vipOwner' }>, text: string, rules: RecordRules): Decoded<VipOwnerRecord> {
  return decodeWith(key, () => {
    const addr = canonicalIp(k.addr);
    if (addr === null || addr !== k.addr) throw new Bad('has a key that is not a canonical IP address');
    checkVip(rules, 'key', addr);
    const o = object(text);
    return { kind: kindOf(o), name: string(o, 'name') };
  });
}
