/**
 * The service zone: berth's desired state as DNS records, and lookups in it. Pure: no I/O.
 *
 * Names (all under the zone `<dnsDomain>`, default `berth`):
 *   <service>.<zone>                    A (VIP), AAAA (VIP6)
 *   _<port>._<tcp|udp>.<service>.<zone> SRV 0 0 <port> <service>.<zone>. (berth ports have no
 *                                       names, so the port number is the RFC 2782 "service" label)
 *   <ingress>.ingress.<zone>            A/AAAA of the ingress VIP, SRV as above for its listen port
 *   <ingress>.<zone>                    the same, unless a service has that name (the service wins)
 *   <zone>                              SOA (and NS naming the zone's server)
 * Answers are authoritative (AA), with a short TTL so that clients follow changes within seconds;
 * an unknown name inside the zone is NXDOMAIN and a known name without the asked type is NODATA,
 * both with the SOA in the authority section whose minimum is the negative-caching TTL
 * (RFC 2308). Names compare case-insensitively (RFC 4343); answers echo the name as asked.
 * The zone is rebuilt from each desired state (a Map swap), so answers change with the state.
 */
import type { Service } from '../model/types';
import type { DnsVips } from './vips';

/** TTL of every record, seconds: short, so a new or moved service is seen at once. */
export const DNS_TTL = 5;

export type RecordType = 'A' | 'AAAA' | 'SRV' | 'SOA' | 'NS';

/** A record as dns-packet encodes it (name is filled in by the caller). */
export type RecordData =
  | { type: 'A' | 'AAAA'; data: string }
  | { type: 'SRV'; data: { priority: number; weight: number; port: number; target: string } }
  | { type: 'NS'; data: string }
  | { type: 'SOA'; data: { mname: string; rname: string; serial: number; refresh: number; retry: number; expire: number; minimum: number } };

export interface Zone {
  /** Zone apex, lower case, no trailing dot (e.g. 'berth'). */
  domain: string;
  /** Lower-case owner name -> its records. */
  records: Map<string, RecordData[]>;
  /** Names that exist only because a descendant has records (RFC 8020: NODATA, not NXDOMAIN). */
  nonTerminals: Set<string>;
  soa: RecordData & { type: 'SOA' };
}

export interface Answer {
  rcode: 'NOERROR' | 'NXDOMAIN';
  /** Records for the answer section (name = the name as asked, or the SRV target for additionals). */
  answers: { name: string; ttl: number; record: RecordData }[];
  authorities: { name: string; ttl: number; record: RecordData }[];
  additionals: { name: string; ttl: number; record: RecordData }[];
}

function add(z: Map<string, RecordData[]>, name: string, r: RecordData): void {
  const list = z.get(name);
  if (list) list.push(r);
  else z.set(name, [r]);
}

/**
 * Builds the zone of `domain` (lower case, no trailing dot) from the desired services. `serial`
 * goes into the SOA (berthd bumps it on every change). `dns`, when given, gives the NS target
 * `_dns.<zone>` the DNS VIPs as its addresses.
 */
export function buildZone(services: Service[], domain: string, serial: number, dns: DnsVips | null = null): Zone {
  const records = new Map<string, RecordData[]>();
  const hosts = (name: string, s: Service) => {
    add(records, name, { type: 'A', data: s.vip });
    if (s.vip6) add(records, name, { type: 'AAAA', data: s.vip6 });
    for (const p of s.ports) {
      add(records, `_${p.port}._${p.protocol}.${name}`, { type: 'SRV', data: { priority: 0, weight: 0, port: p.port, target: name } });
    }
  };
  const serviceNames = new Set(services.filter((s) => s.kind === 'service').map((s) => s.name));
  for (const s of services) {
    if (s.kind === 'service') hosts(`${s.name}.${domain}`, s);
    else {
      hosts(`${s.name}.ingress.${domain}`, s);
      if (!serviceNames.has(s.name)) hosts(`${s.name}.${domain}`, s);
    }
  }
  // The apex: SOA, and NS -> the server itself (`_dns.<zone>`, a name no service can have since
  // service names never start with '_'), so that a resolver asking for delegation data gets a
  // consistent answer.
  const ns = `_dns.${domain}`;
  const soa = {
    type: 'SOA' as const,
    data: { mname: ns, rname: `hostmaster.${domain}`, serial: serial >>> 0, refresh: 60, retry: 10, expire: 300, minimum: DNS_TTL },
  };
  add(records, domain, soa);
  add(records, domain, { type: 'NS', data: ns });
  if (dns) {
    add(records, ns, { type: 'A', data: dns.vip });
    if (dns.vip6) add(records, ns, { type: 'AAAA', data: dns.vip6 });
  }
  const nonTerminals = new Set<string>();
  const suffix = `.${domain}`;
  for (const name of records.keys()) {
    let n = name;
    while (n.endsWith(suffix)) {
      n = n.slice(n.indexOf('.') + 1);
      if (!records.has(n)) nonTerminals.add(n);
    }
  }
  return { domain, records, nonTerminals, soa };
}

/** Lower case, without a trailing dot: the form zone keys use. */
export function normalName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/** True when `name` is the zone apex or below it (so the zone answers, never an upstream). */
export function inZone(zone: Zone | { domain: string }, name: string): boolean {
  const n = normalName(name);
  return n === zone.domain || n.endsWith(`.${zone.domain}`);
}

/**
 * Answers `type` for `name` (which must be inZone). ANY is answered with every record of the
 * name (small zone, no amplification worth refusing: at most a service's ports).
 */
export function lookup(zone: Zone, name: string, type: string): Answer {
  const n = normalName(name);
  const out: Answer = { rcode: 'NOERROR', answers: [], authorities: [], additionals: [] };
  const negative = () => out.authorities.push({ name: zone.domain, ttl: DNS_TTL, record: zone.soa });
  const recs = zone.records.get(n);
  if (!recs) {
    if (!zone.nonTerminals.has(n)) out.rcode = 'NXDOMAIN';
    negative();
    return out;
  }
  for (const r of recs) if (type === 'ANY' || r.type === type) out.answers.push({ name, ttl: DNS_TTL, record: r });
  if (out.answers.length === 0) {
    negative();
    return out;
  }
  // SRV targets' addresses as additionals (RFC 2782), saving the client a second query.
  for (const a of out.answers) {
    if (a.record.type !== 'SRV' && a.record.type !== 'NS') continue;
    const target = a.record.type === 'SRV' ? a.record.data.target : a.record.data;
    for (const r of zone.records.get(target) ?? []) {
      if (r.type === 'A' || r.type === 'AAAA') out.additionals.push({ name: target, ttl: DNS_TTL, record: r });
    }
  }
  return out;
}
