/**
 * buildDesiredState: one full Docker snapshot in, the whole desired state out.
 *
 * Steps, each deterministic for a given snapshot and store:
 *   1. Order containers by creation (`created`, then the order given) and decode their labels.
 *   2. Group by service. The first container of a service fixes its ports and pins; a later one
 *      that disagrees is skipped with an error on the label it disagrees on.
 *   3. VIPs, both families. Pass 1 claims, in ownership order (earliest store assignment first,
 *      then new names in name order), each service's pin or its still-valid stored VIP; a pin that
 *      is forbidden or owned by an earlier service skips that service's containers. Pass 2 derives
 *      a VIP (vip.ts) for everything still without one, in the same order.
 *   4. Ingress routes from the remaining containers' http labels, in container order: a route,
 *      listen or publish that contradicts an earlier container is dropped with an error.
 *   5. Backends: running, not stopping, healthy or without healthcheck; placed on the network
 *      they are reached at (network.ts), or listed unreachable with the reason.
 * The store is updated with the final assignments and forgets names that no longer exist; the
 * caller saves it. Pure apart from mutating the store object.
 */
import type {
  Backend, ContainerInfo, DesiredState, DockerSnapshot, HostInfo, LabelError, Route, Service, ServicePort,
} from './types';
import { LABEL_ERRORS, labelError, ModelError } from './errors';
import { type ContainerSpec, decodeLabels, httpLabel, LABEL_PORTS, LABEL_SERVICE, LABEL_VIP, LABEL_VIP6 } from './labels';
import { type Addr, type Cidr, type Family, formatIp, parseCidr, parseIp } from './ip';
import { deriveVip, makeVipRules, type ServiceKind, vipProblem, type VipRules } from './vip';
import { storeKey, type VipStore } from './vipstore';
import { type NetworkEnv, placeBackend } from './network';

export const DEFAULT_SERVICE_CIDR = '10.96.0.0/16';
export const DEFAULT_SERVICE_CIDR6 = 'fd00:96::/112';
export const DEFAULT_INGRESS_LISTEN = 80;
/** Where a `tls=true` ingress takes HTTPS on its VIP unless `tlsListen` says otherwise. */
export const DEFAULT_INGRESS_TLS_LISTEN = 443;

export interface BuildOptions {
  serviceCidr: string;
  serviceCidr6: string;
  store: VipStore;
  /** Addresses no service may take as its VIP, pinned or derived (berth's DNS VIPs). */
  reserved?: string[];
  /**
   * Cluster mode: VIPs the cluster (etcd) assigned to names. Those of names with no containers
   * here count as owned by that name before anything local claims an address, so a local pin on
   * one is BERTH_VIP_OWNED and derivation skips it. (Names that are local here take their
   * assignment through `store`.) Absent on a single host.
   */
  clusterVips?: ClusterVip[];
}

/** A VIP assignment the cluster agreed on in etcd (cluster/store.ts), as placement sees it. */
export interface ClusterVip {
  kind: ServiceKind;
  name: string;
  vip: string | null;
  vip6: string | null;
}

export interface Member {
  info: ContainerInfo;
  spec: ContainerSpec;
}

/** A service or ingress being placed. */
export interface Entity {
  kind: ServiceKind;
  name: string;
  /** Service: its accepted containers, first one first. Ingress: empty. */
  members: Member[];
  pin: Record<Family, string | null>;
  vip: Record<Family, Addr | null>;
  rejected: boolean;
}

export function buildDesiredState(snap: DockerSnapshot, host: HostInfo, opts: BuildOptions): DesiredState {
  const rules = vipRulesOf(opts.serviceCidr, opts.serviceCidr6, host, snap.networks, opts.reserved);
  const errors: LabelError[] = [];
  const env: NetworkEnv = { networks: snap.networks, containers: snap.containers };

  // 1. Creation order. Docker lists newest first, so without `created` the caller must pass the
  //    containers oldest first; ties keep the given order (Array.prototype.sort is stable).
  const containers = snap.containers
    .map((info, i) => ({ info, i }))
    .sort((a, b) => (a.info.created ?? 0) - (b.info.created ?? 0) || a.i - b.i)
    .map((x) => x.info);

  // 2. Decode and group.
  const groups = new Map<string, Member[]>();
  for (const info of containers) {
    const { spec, errors: errs } = decodeLabels(info);
    errors.push(...errs);
    if (!spec) continue;
    const group = groups.get(spec.service);
    if (!group) {
      groups.set(spec.service, [{ info, spec }]);
      continue;
    }
    const disagreements = disagree(group[0].spec, spec);
    if (disagreements.length > 0) {
      errors.push(...disagreements);
      continue;
    }
    group.push({ info, spec });
  }

  const services: Entity[] = [...groups.entries()].map(([name, members]) => serviceEntity(name, members));
  const placed = placeEntities(services, containers, rules, opts.store, errors, env, opts.clusterVips);
  // By name; a service before the ingress of the same name.
  const out = [...placed.services.values()].sort(serviceOrder);
  return { services: out, labelErrors: errors };
}

/** The VIP rules of both families for these ranges, host addresses and Docker networks. */
export function vipRulesOf(serviceCidr: string, serviceCidr6: string, host: HostInfo, networks: DockerSnapshot['networks'], reserved?: string[]): Record<Family, VipRules> {
  return {
    4: makeVipRules(rangeOf(serviceCidr, 4, 'serviceCidr'), host, networks, reserved),
    6: makeVipRules(rangeOf(serviceCidr6, 6, 'serviceCidr6'), host, networks, reserved),
  };
}

/** A service entity from its accepted members (first one first); its first member fixes the pins. */
export function serviceEntity(name: string, members: Member[]): Entity {
  return { kind: 'service', name, members, pin: { 4: members[0].spec.vip, 6: members[0].spec.vip6 }, vip: { 4: null, 6: null }, rejected: false };
}

/** By name; a service before the ingress of the same name (DesiredState.services order). */
export function serviceOrder(a: Pick<Service, 'name' | 'kind'>, b: Pick<Service, 'name' | 'kind'>): number {
  return cmp(a.name, b.name) || (a.kind === b.kind ? 0 : a.kind === 'service' ? -1 : 1);
}

/** What placeEntities decided, per entity key (storeKey: `kind/name`). */
export interface Placement {
  /** The services and ingresses that exist, by key (unsorted). */
  services: Map<string, Service>;
  /** Keys of service entities skipped for a VIP reason (pin forbidden, owned, range exhausted). */
  rejected: Set<string>;
  /**
   * True when the placement was "clean": every entity that claimed a VIP is in `services`, and
   * none lacks a VIP of either family. Then a rebuild from scratch gives every one of them its
   * stored VIP again, which is what lets the incremental model place a new service alone.
   */
  clean: boolean;
}

/**
 * Steps 3 to 5 of buildDesiredState over every service entity: VIPs (pins, stored, derived),
 * ingress routes and the assembled services; pushes label errors to `errors` and records the
 * final assignments in the store (forgetting the rest). `containers` must hold, in creation
 * order, at least every container with an http route (others are skipped). Global by nature
 * (VIP ownership is first-come by store seq), so the incremental model (incremental.ts) calls it
 * only when the set of entities, a pin, a route or the VIP rules changed. `env`: the Docker
 * networks and containers where backends are placed (network.ts placeBackend). `clusterVips`
 * (cluster mode, BuildOptions.clusterVips) count as owned by their names before pass 1.
 */
export function placeEntities(services: Entity[], containers: ContainerInfo[], rules: Record<Family, VipRules>, store: VipStore, errors: LabelError[], env: NetworkEnv = { networks: [], containers }, clusterVips: ClusterVip[] = []): Placement {
  // Candidate ingresses: named by an accepted container's route. (If all their routes fall away in
  // step 4 they claimed a VIP for nothing in this rebuild, and are not stored.)
  const ingressNames = new Set(services.flatMap((s) => s.members.flatMap((m) => m.spec.routes.map((r) => r.ingress))));
  const ingresses: Entity[] = [...ingressNames].map((name) => ({
    kind: 'ingress', name, members: [], pin: { 4: null, 6: null }, vip: { 4: null, 6: null }, rejected: false,
  }));
  const entities = ownershipOrder([...services, ...ingresses], store);
  // 3a. Pins that can never be a VIP.
  for (const e of entities) {
    for (const fam of [4, 6] as const) {
      const pin = e.pin[fam];
      if (pin === null) continue;
      const problem = vipProblem(rules[fam], parseIp(pin)!);
      if (problem) reject(e, errors, (c) => problem(c, fam === 4 ? LABEL_VIP : LABEL_VIP6));
    }
  }

  // 3b. Pass 1: claim pins and still-valid stored VIPs, earliest owner first.
  const owners: Record<Family, Map<bigint, Entity>> = { 4: new Map(), 6: new Map() };
  const localNames = new Set(entities.map((e) => storeKey(e.kind, e.name)));
  for (const r of clusterVips) {
    if (localNames.has(storeKey(r.kind, r.name))) continue;
    const other: Entity = { kind: r.kind, name: r.name, members: [], pin: { 4: null, 6: null }, vip: { 4: null, 6: null }, rejected: true };
    for (const v of [r.vip, r.vip6]) {
      const a = v ? parseIp(v) : null;
      if (a) owners[a.family].set(a.value, other);
    }
  }
  for (const e of entities) {
    if (e.rejected) continue;
    const stored = store.get(e.kind, e.name);
    const want: Record<Family, Addr | null> = { 4: null, 6: null };
    for (const fam of [4, 6] as const) {
      const pin = e.pin[fam];
      if (pin !== null) {
        const a = parseIp(pin)!;
        const owner = owners[fam].get(a.value);
        if (owner) {
          reject(e, errors, (c) => labelError(c, fam === 4 ? LABEL_VIP : LABEL_VIP6, 'BERTH_VIP_OWNED', pin, `${owner.kind} ${owner.name}`));
        }
        want[fam] = a;
        continue;
      }
      const s = stored ? parseIp((fam === 4 ? stored.vip : stored.vip6) ?? '') : null;
      // A stored VIP that is now forbidden (range changed, a Docker network appeared) or claimed
      // by an earlier owner is re-derived in pass 2.
      if (s && s.family === fam && vipProblem(rules[fam], s) === null && !owners[fam].has(s.value)) want[fam] = s;
    }
    if (e.rejected) continue;
    for (const fam of [4, 6] as const) {
      const a = want[fam];
      if (a) {
        owners[fam].set(a.value, e);
        e.vip[fam] = a;
      }
    }
  }

  // 4. Routes (before deriving, so that ingresses left without a route take no VIP).
  const live = services.filter((s) => !s.rejected);
  const routes = buildRoutes(live, containers, errors);

  // 3c. Pass 2: derive what is still missing, in the same order.
  const serviceErrors = new Map<Entity, string[]>();
  for (const e of entities) {
    if (e.rejected || (e.kind === 'ingress' && !routes.has(e.name))) continue;
    for (const fam of [4, 6] as const) {
      if (e.vip[fam]) continue;
      const a = deriveVip(e.kind, e.name, rules[fam], (x) => owners[fam].has(x.value));
      if (a) {
        owners[fam].set(a.value, e);
        e.vip[fam] = a;
      } else if (fam === 4) {
        // Without an IPv4 VIP the service cannot be programmed at all.
        const range = rules[4].range.text;
        if (e.kind === 'service') {
          reject(e, errors, (c) => labelError(c, LABEL_SERVICE, 'BERTH_VIP_EXHAUSTED', range));
        } else {
          e.rejected = true;
          for (const c of routes.get(e.name)!.owners) errors.push(labelError(c, httpLabel(e.name, 'path'), 'BERTH_VIP_EXHAUSTED', range));
        }
      } else {
        serviceErrors.set(e, [...(serviceErrors.get(e) ?? []), LABEL_ERRORS.BERTH_VIP_EXHAUSTED(rules[6].range.text)]);
      }
    }
  }

  // 5. Assemble, and record the assignments.
  const out = new Map<string, Service>();
  const rejected = new Set<string>();
  for (const e of services) if (e.rejected) rejected.add(storeKey(e.kind, e.name));
  const keep = new Set<string>();
  for (const e of entities) {
    if (e.rejected || !e.vip[4] || (e.kind === 'ingress' && !routes.has(e.name))) continue;
    const vip = formatIp(e.vip[4]);
    const vip6 = e.vip[6] ? formatIp(e.vip[6]) : null;
    store.set(e.kind, e.name, vip, vip6);
    keep.add(storeKey(e.kind, e.name));
    if (e.kind === 'service') {
      out.set(storeKey(e.kind, e.name), {
        name: e.name, kind: 'service', vip, vip6,
        ports: e.members[0].spec.ports.map((p) => ({ ...p })),
        backends: e.members.map((m) => backendOf(m.info, env)).filter((b): b is Backend => b !== null).sort((a, b) => cmp(a.id, b.id)),
        routes: [], ingress: null, errors: serviceErrors.get(e) ?? [],
      });
    } else {
      const r = routes.get(e.name)!;
      const listen = r.listen ?? DEFAULT_INGRESS_LISTEN;
      const tlsListen = r.tls ? (r.tlsListen ?? DEFAULT_INGRESS_TLS_LISTEN) : null;
      const ports: ServicePort[] = [{ port: listen, protocol: 'tcp', targetPort: listen }];
      if (tlsListen !== null && tlsListen !== listen) ports.push({ port: tlsListen, protocol: 'tcp', targetPort: tlsListen });
      out.set(storeKey(e.kind, e.name), {
        name: e.name, kind: 'ingress', vip, vip6,
        ports,
        backends: [], routes: r.routes,
        ingress: { listen, publish: r.publish, proxyPort: null, tls: r.tls, tlsListen, redirectHttps: r.redirectHttps },
        errors: serviceErrors.get(e) ?? [],
      });
    }
  }
  store.retain(keep);
  const clean = rejected.size === 0 && serviceErrors.size === 0 && entities.every((e) => e.rejected || (e.kind === 'ingress' && !routes.has(e.name) ? !e.vip[4] && !e.vip[6] : true));
  return { services: out, rejected, clean };
}

function rangeOf(text: string, family: Family, key: string): Cidr {
  const c = parseCidr(text);
  if (!c || c.family !== family) {
    throw new ModelError('BERTH_BAD_SERVICE_CIDR', `${key} "${text}" is not an IPv${family} CIDR`);
  }
  return c;
}

/** Plain code-unit order, independent of the locale the daemon runs under. */
export function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function portsKey(ports: ServicePort[]): string {
  return ports.map((p) => `${p.port}:${p.targetPort}/${p.protocol}`).sort().join(',');
}

function portsText(ports: ServicePort[]): string {
  return `"${ports.map((p) => (p.port === p.targetPort ? `${p.port}/${p.protocol}` : `${p.port}:${p.targetPort}/${p.protocol}`)).join(',')}"`;
}

/** Errors for each label on which `later` contradicts the service's first container. */
export function disagree(first: ContainerSpec, later: ContainerSpec): LabelError[] {
  const out: LabelError[] = [];
  const c = later.container;
  // (The same list object when both came from one berth.ports value: labels.ts shares them.)
  if (first.ports !== later.ports && portsKey(first.ports) !== portsKey(later.ports)) {
    out.push(labelError(c, LABEL_PORTS, 'BERTH_SERVICE_DISAGREE', later.service, 'ports', first.container, portsText(later.ports), portsText(first.ports)));
  }
  const pins: [string, string | null, string | null][] = [[LABEL_VIP, first.vip, later.vip], [LABEL_VIP6, first.vip6, later.vip6]];
  for (const [label, a, b] of pins) {
    if (a !== b) out.push(labelError(c, label, 'BERTH_SERVICE_DISAGREE', later.service, 'the pinned VIP', first.container, b ?? 'none', a ?? 'none'));
  }
  return out;
}

/** Earliest store assignment first, then names never assigned, by name (then kind). */
function ownershipOrder(entities: Entity[], store: VipStore): Entity[] {
  // Each entity's seq looked up once (not twice per comparison: 10,000 entities make ~280,000).
  const keyed = entities.map((e) => ({ e, seq: store.get(e.kind, e.name)?.seq ?? Number.POSITIVE_INFINITY }));
  keyed.sort((a, b) => {
    if (a.seq !== b.seq) return a.seq < b.seq ? -1 : 1;
    return cmp(a.e.name, b.e.name) || cmp(a.e.kind, b.e.kind);
  });
  return keyed.map((x) => x.e);
}

/** Skips every container of a service (one error each); an ingress is just dropped. */
function reject(e: Entity, errors: LabelError[], err: (container: string) => LabelError): void {
  e.rejected = true;
  for (const m of e.members) errors.push(err(m.info.name));
}

/** Labels that describe the ingress as a whole rather than one route. */
const INGRESS_ATTRS = ['listen', 'publish', 'tlsListen', 'tls', 'redirectHttps'] as const;
type IngressAttr = (typeof INGRESS_ATTRS)[number];

interface IngressRoutes {
  routes: Route[];
  listen: number | null;
  publish: number | null;
  tlsListen: number | null;
  tls: boolean;
  redirectHttps: boolean;
  /** Containers contributing a route, for errors about the ingress as a whole. */
  owners: string[];
}

/** Routes per ingress from the accepted containers, in container order; conflicts dropped. */
function buildRoutes(live: Entity[], containers: ContainerInfo[], errors: LabelError[]): Map<string, IngressRoutes> {
  const memberOf = new Map<string, Member>();
  for (const s of live) for (const m of s.members) memberOf.set(m.info.id, m);

  const out = new Map<string, IngressRoutes>();
  // Who set what first: per ingress listen/publish, per publish port its ingress, per route key.
  const attrBy = new Map<string, { value: number | boolean; container: string }>();
  const publishOwner = new Map<number, string>();
  const routeBy = new Map<string, { route: Route; container: string }>();

  for (const info of containers) {
    const m = memberOf.get(info.id);
    if (!m) continue;
    for (const r of m.spec.routes) {
      const c = m.spec.container;
      const ing = r.ingress;
      // Ingress-wide settings: the first container to say one wins; a later one that says
      // otherwise loses its route (so the ingress never flips with container start order).
      let clash: LabelError | null = null;
      for (const a of INGRESS_ATTRS) {
        const v = r[a];
        const first = v !== null ? attrBy.get(`${ing}\u0000${a}`) : undefined;
        if (first && first.value !== v) {
          clash = labelError(c, httpLabel(ing, a), 'BERTH_INGRESS_CONFLICT', ing, a, String(v), first.container, String(first.value));
          break;
        }
      }
      if (clash) {
        errors.push(clash);
        continue;
      }
      const other = r.publish !== null ? publishOwner.get(r.publish) : undefined;
      if (other !== undefined && other !== ing) {
        errors.push(labelError(c, httpLabel(ing, 'publish'), 'BERTH_PUBLISH_TAKEN', r.publish!, other));
        continue;
      }
      const route: Route = {
        host: r.host, path: r.path, service: m.spec.service, port: r.port,
        protocol: r.protocol, stripPrefix: r.stripPrefix, timeoutMs: r.timeoutMs, retries: r.retries,
      };
      const key = `${ing}\u0000${r.host ?? ''}\u0000${r.path}`;
      const prev = routeBy.get(key);
      if (prev && JSON.stringify(prev.route) !== JSON.stringify(route)) {
        const where = `${r.host ?? '*'}${r.path}`;
        errors.push(labelError(c, httpLabel(ing, 'path'), 'BERTH_ROUTE_CONFLICT', ing, where, prev.container, `${prev.route.service}:${prev.route.port}`));
        continue;
      }
      // Accepted: commit what this route says.
      for (const a of INGRESS_ATTRS) {
        const v = r[a];
        if (v !== null && !attrBy.has(`${ing}\u0000${a}`)) attrBy.set(`${ing}\u0000${a}`, { value: v, container: c });
      }
      if (r.publish !== null && !publishOwner.has(r.publish)) publishOwner.set(r.publish, ing);
      let ir = out.get(ing);
      if (!ir) out.set(ing, (ir = { routes: [], listen: null, publish: null, tlsListen: null, tls: false, redirectHttps: false, owners: [] }));
      if (!ir.owners.includes(c)) ir.owners.push(c);
      if (!prev) {
        routeBy.set(key, { route, container: c });
        ir.routes.push(route);
      }
    }
  }
  for (const [ing, ir] of out) {
    const val = (a: IngressAttr) => attrBy.get(`${ing}\u0000${a}`)?.value ?? null;
    ir.listen = val('listen') as number | null;
    ir.publish = val('publish') as number | null;
    ir.tlsListen = val('tlsListen') as number | null;
    ir.tls = val('tls') === true;
    ir.redirectHttps = val('redirectHttps') === true;
    ir.routes.sort(routeOrder);
  }
  return out;
}

/** Longest path first (most specific prefix wins), then host (named hosts before "any"). */
export function routeOrder(a: Route, b: Route): number {
  return (
    b.path.length - a.path.length ||
    cmp(a.path, b.path) ||
    (a.host === b.host ? 0 : a.host === null ? 1 : b.host === null ? -1 : cmp(a.host, b.host)) ||
    cmp(a.service, b.service) ||
    a.port - b.port
  );
}

/**
 * The container as a backend, or null when it must not receive connections now (not running,
 * stopping, not healthy). A backend berth cannot reach (network mode none, only macvlan
 * networks, ...) is returned with reachable false, no address and the reason (model/network.ts):
 * listed, never silently dropped. Without `env` (older callers) the snapshot's networks and
 * containers are unknown: bridge networks and no `container:` resolution are assumed.
 */
export function backendOf(c: ContainerInfo, env: NetworkEnv = { networks: [], containers: [] }): Backend | null {
  if (c.state !== 'running' || c.stopping) return null;
  if (c.health !== 'none' && c.health !== 'healthy') return null;
  const p = placeBackend(c, env);
  return { container: c.name, id: c.id, ip: p.ip, ip6: p.ip6, networks: p.networks, reachable: p.reachable, reason: p.reason };
}
