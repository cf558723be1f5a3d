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
 * buildZone builds the zone from a whole desired state (a full sync); LiveZone keeps one up to
 * date name by name (an event: only the changed services' names), with the same result.
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
 * A name's A/AAAA records and its ports' SRV records, for the service or ingress `s`; the owner
 * names it adds are pushed to `owners` when given.
 */
function addHost(records: Map<string, RecordData[]>, name: string, s: Service, owners?: string[]): void {
  const host: RecordData[] = s.vip6 ? [{ type: 'A', data: s.vip }, { type: 'AAAA', data: s.vip6 }] : [{ type: 'A', data: s.vip }];
  const had = records.get(name);
  if (had) for (const r of host) had.push(r);
  else {
    records.set(name, host);
    owners?.push(name);
  }
  for (const p of s.ports) {
    const srv = `_${p.port}._${p.protocol}.${name}`;
    const r: RecordData = { type: 'SRV', data: { priority: 0, weight: 0, port: p.port, target: name } };
    const list = records.get(srv);
    if (list) list.push(r);
    else {
      records.set(srv, [r]);
      owners?.push(srv);
    }
  }
}

function soaOf(domain: string, serial: number): RecordData & { type: 'SOA' } {
  return {
    type: 'SOA' as const,
    data: { mname: `_dns.${domain}`, rname: `hostmaster.${domain}`, serial: serial >>> 0, refresh: 60, retry: 10, expire: 300, minimum: DNS_TTL },
  };
}

/**
 * Builds the zone of `domain` (lower case, no trailing dot) from the desired services. `serial`
 * goes into the SOA (berthd bumps it on every change). `dns`, when given, gives the NS target
 * `_dns.<zone>` the DNS VIPs as its addresses.
 */
export function buildZone(services: Service[], domain: string, serial: number, dns: DnsVips | null = null): Zone {
  const records = new Map<string, RecordData[]>();
  const hosts = (name: string, s: Service) => addHost(records, name, s);
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
  const soa = soaOf(domain, serial);
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

/**
 * A zone kept up to date name by name, equal to buildZone of the same services (what
 * test/unit/dns/zone.test.ts checks after every step of random updates). An event changes a few
 * services; rebuilding the zone from all of them cost O(services) per event (at 10,000 services
 * the largest step left on the event path), this costs O(the changed names' records).
 *
 * Every owner name below the apex comes from exactly one service/ingress NAME (its `<name>.<zone>`,
 * `<name>.ingress.<zone>` and their SRV children; names are DNS labels, so no two names share an
 * owner), so an update of a name drops the owners it generated and adds the new ones. Empty
 * non-terminals follow a count, per name, of the owners below it. `zone` is mutated in place:
 * updates run synchronously on the event loop, so a query never sees half of one.
 */
export class LiveZone {
  readonly zone: Zone;
  /** Service/ingress name -> the owner names it generated. */
  private readonly owners = new Map<string, string[]>();
  /** Service/ingress name -> what its records were built from (skip updates that change nothing). */
  private readonly keys = new Map<string, string>();
  /** Name -> how many owner names lie strictly below it. */
  private readonly below = new Map<string, number>();
  private readonly suffix: string;

  /** The apex alone (SOA, NS, and `_dns.<zone>`'s A/AAAA when `dns` is given); see buildZone. */
  constructor(domain: string, serial: number, dns: DnsVips | null = null) {
    this.zone = buildZone([], domain, serial, dns);
    this.suffix = `.${domain}`;
    for (const name of this.zone.records.keys()) this.count(name, 1);
  }

  get serial(): number {
    return this.zone.soa.data.serial;
  }

  /**
   * Fills an empty zone (no name updated yet) with these names' records in one pass: what a
   * first full sync does, without update()'s per-name bookkeeping of what to undo.
   */
  fill(byName: Map<string, { service?: Service; ingress?: Service }>, serial: number): void {
    if (this.owners.size) throw new Error('LiveZone.fill: the zone is not empty');
    const { records, domain } = this.zone;
    // Straight into the zone (no per-name map of fresh records, as update() needs): at 10,000
    // services this is one of the larger steps of berthd's cold start.
    for (const [name, e] of byName) {
      if (!e.service && !e.ingress) continue;
      const owners: string[] = [];
      if (e.service) addHost(records, `${name}.${domain}`, e.service, owners);
      if (e.ingress) {
        addHost(records, `${name}.ingress.${domain}`, e.ingress, owners);
        if (!e.service) addHost(records, `${name}.${domain}`, e.ingress, owners);
      }
      for (const owner of owners) this.count(owner, 1);
      this.owners.set(name, owners);
      this.keys.set(name, keyOf(e.service, e.ingress));
    }
    for (const n of this.below.keys()) if (!records.has(n)) this.zone.nonTerminals.add(n);
    this.setSerial(serial);
  }

  /**
   * Sets the records of `name` from its service and ingress (undefined: none of that kind).
   * Returns true when the zone changed; then the SOA serial is `serial`.
   */
  update(name: string, service: Service | undefined, ingress: Service | undefined, serial: number): boolean {
    const key = service || ingress ? keyOf(service, ingress) : '';
    if ((this.keys.get(name) ?? '') === key) return false;
    const { records } = this.zone;
    const touched = new Set<string>();
    for (const owner of this.owners.get(name) ?? []) {
      records.delete(owner);
      touched.add(owner);
      this.count(owner, -1, touched);
    }
    const fresh = this.recordsOf(name, service, ingress);
    for (const [owner, list] of fresh) {
      records.set(owner, list);
      touched.add(owner);
      this.count(owner, 1, touched);
    }
    if (fresh.size) {
      this.owners.set(name, [...fresh.keys()]);
      this.keys.set(name, key);
    } else {
      this.owners.delete(name);
      this.keys.delete(name);
    }
    for (const n of touched) {
      if ((this.below.get(n) ?? 0) > 0 && !records.has(n)) this.zone.nonTerminals.add(n);
      else this.zone.nonTerminals.delete(n);
    }
    this.setSerial(serial);
    return true;
  }

  /** The records a name owns: see buildZone (the service wins `<name>.<zone>` over the ingress). */
  private recordsOf(name: string, service: Service | undefined, ingress: Service | undefined): Map<string, RecordData[]> {
    const domain = this.zone.domain;
    const fresh = new Map<string, RecordData[]>();
    if (service) addHost(fresh, `${name}.${domain}`, service);
    if (ingress) {
      addHost(fresh, `${name}.ingress.${domain}`, ingress);
      if (!service) addHost(fresh, `${name}.${domain}`, ingress);
    }
    return fresh;
  }

  private setSerial(serial: number): void {
    const soa = soaOf(this.zone.domain, serial);
    const apex = this.zone.records.get(this.zone.domain)!;
    apex[apex.indexOf(this.zone.soa)] = soa;
    this.zone.soa = soa;
  }

  /** Adds `d` to the count of every ancestor of `owner` below the apex's parent (buildZone's walk). */
  private count(owner: string, d: number, touched?: Set<string>): void {
    let n = owner;
    while (n.endsWith(this.suffix)) {
      n = n.slice(n.indexOf('.') + 1);
      const c = (this.below.get(n) ?? 0) + d;
      if (c > 0) this.below.set(n, c);
      else this.below.delete(n);
      touched?.add(n);
    }
  }
}

/** What a name's records are built from (its service's and ingress' VIPs and ports). */
function keyOf(service: Service | undefined, ingress: Service | undefined): string {
  const rec = (s: Service | undefined) => (s ? `${s.vip} ${s.vip6 ?? ''} ${s.ports.map((p) => `${p.port}/${p.protocol}`).join(',')}` : '-');
  return `${rec(service)}|${rec(ingress)}`;
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
