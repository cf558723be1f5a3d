/**
 * The incremental model: the same desired state as buildDesiredState (desired.ts), kept up to
 * date container by container, so that a Docker event costs work proportional to what it changed
 * (its service), not to the host (DESIGN lesson 13; kube-proxy's partial syncs).
 *
 * What is kept per container: its ContainerInfo (the watcher's object, not a copy), its decoded
 * labels and their errors, and its creation-order key. Per service: its accepted members and the
 * disagreement errors of the others. An event re-derives only the services of the containers it
 * changed. The VIP placement (placeEntities: pins, stored and derived VIPs, ingress routes) is
 * global by nature (first owner by store seq wins a contested VIP), so it is re-run only when an
 * input of it changed: a service appeared or went, a pin changed, a container with http routes
 * changed, a service that a placement skipped changed, or the VIP rules (host addresses, Docker
 * networks) changed. Otherwise a service keeps the VIPs of the last placement, which is exactly
 * what a rebuild from scratch would give it (its stored VIP, claimed in pass 1).
 *
 * Equivalence with buildDesiredState over the same containers (in the same creation order) and
 * the same store is what test/unit/model/incremental.test.ts checks after every step of random
 * event sequences.
 */
import type { ContainerInfo, DesiredState, DockerSnapshot, HostInfo, LabelError, Service } from './types';
import { decodeLabels, type ContainerSpec } from './labels';
import { formatIp, parseIp, type Family } from './ip';
import { deriveVip, vipProblem, type VipRules } from './vip';
import { storeKey, type VipStore } from './vipstore';
import type { NetworkEnv } from './network';
import { backendOf, cmp, disagree, placeEntities, serviceEntity, serviceOrder, vipRulesOf, type ClusterVip, type Member, type Placement } from './desired';

interface Entry {
  info: ContainerInfo;
  /** Arrival order: ties of `created` keep the order containers were first seen (list order). */
  ord: number;
  spec: ContainerSpec | null;
  errors: LabelError[];
}

interface Group {
  /**
   * Container ids whose labels name this service, each once (an array, not a Set: a service has
   * a handful of containers, and 10,000 services held 10,000 Sets at a cold start).
   */
  ids: string[];
  /** Accepted members, first (by creation) first. */
  members: Member[];
  /** Errors of members that disagree with the first. */
  errors: LabelError[];
  /** Pins and route presence of the last derivation: a change of these needs a placement. */
  pins: string;
  /** Accepted members with http routes, in order (the route step's input from this service). */
  routed: string;
}

/** What one apply() changed, for the datapath and the proxy. */
export interface ModelDelta {
  /** Services and ingresses that are new or changed (the model's current objects). */
  changed: Service[];
  /** Services and ingresses that no longer exist. */
  removed: { kind: Service['kind']; name: string }[];
  /** True when the label errors may have changed. */
  labelErrors: boolean;
  /** True when the VIP placement ran (the global step). */
  placed: boolean;
}

export interface IncrementalOptions {
  serviceCidr: string;
  serviceCidr6: string;
  /** Updated with every placement; the caller saves it. */
  store: VipStore;
  /** Addresses no service may take as its VIP (berth's DNS VIPs; see BuildOptions.reserved). */
  reserved?: string[];
  /**
   * Every container Docker lists, also unlabelled ones (default: the model's own): where a
   * `--network container:<ref>` backend finds the container whose netns it shares (network.ts).
   */
  containers?: () => ContainerInfo[];
}

function serviceKeyOf(s: { kind: Service['kind']; name: string }): string {
  return storeKey(s.kind, s.name);
}

/** Structural equality of two services as the datapath and proxy see them. */
function sameService(a: Service, b: Service): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * The model kept between events. Not thread-safe in any sense; one reconcile loop owns it.
 * Service objects it hands out are its own: callers must not mutate them (the proxy's
 * `ingress.proxyPort` is the one sanctioned exception, written on ingress objects).
 */
export class IncrementalModel {
  private readonly entries = new Map<string, Entry>();
  private readonly groups = new Map<string, Group>();
  /** Containers whose accepted spec has http routes (the input of the route step). */
  private readonly routed = new Set<string>();
  private readonly out = new Map<string, Service>();
  private placement: Placement = { services: new Map(), rejected: new Set(), clean: true };
  /** VIPs (canonical text) of the placed entities, per family: what a new service must avoid. */
  private owned: Record<Family, Set<string>> = { 4: new Set(), 6: new Set() };
  private placementErrors: LabelError[] = [];
  private nextOrd = 0;
  private rules: Record<Family, VipRules>;
  private rulesKey: string;
  private networks: DockerSnapshot['networks'] = [];
  private host: HostInfo;
  private sorted: Service[] | null = null;
  private ingressList: Service[] | null = null;
  private errorList: LabelError[] | null = null;
  /** Cluster mode: the cluster's VIP assignments (BuildOptions.clusterVips); empty on one host. */
  private clusterVips: ClusterVip[] = [];
  /** The next apply() must run the global placement (an input of it changed). */
  private mustPlace = false;

  constructor(private readonly opts: IncrementalOptions, host: HostInfo = { addresses: [] }) {
    this.host = host;
    this.rules = vipRulesOf(opts.serviceCidr, opts.serviceCidr6, host, [], opts.reserved);
    this.rulesKey = rulesKeyOf(host, []);
  }

  /** What placeBackend (network.ts) reads: the Docker networks, and the containers on demand. */
  private env(): NetworkEnv {
    const self = this;
    return {
      networks: this.networks,
      get containers(): ContainerInfo[] {
        return self.opts.containers?.() ?? self.containers();
      },
    };
  }

  /** Containers the model holds (berth-labelled ones; others cost nothing). */
  get size(): number {
    return this.entries.size;
  }

  /** The containers in creation order (what buildDesiredState would be given). */
  containers(): ContainerInfo[] {
    return [...this.entries.values()].sort(entryOrder).map((e) => e.info);
  }

  get(kind: Service['kind'], name: string): Service | undefined {
    return this.out.get(storeKey(kind, name));
  }

  /** Every service and ingress, by name (cached until the next change). */
  services(): Service[] {
    if (!this.sorted) this.sorted = [...this.out.values()].sort(serviceOrder);
    return this.sorted;
  }

  /** The ingresses (cached until the next global placement, the only step that changes them). */
  ingresses(): Service[] {
    if (!this.ingressList) this.ingressList = [...this.out.values()].filter((s) => s.kind === 'ingress').sort(serviceOrder);
    return this.ingressList;
  }

  /** Numbers of services and ingresses. */
  counts(): { service: number; ingress: number } {
    const ingress = this.ingresses().length;
    return { service: this.out.size - ingress, ingress };
  }

  /** Label errors: per container in creation order, then those of the last placement. */
  labelErrors(): LabelError[] {
    if (this.errorList) return this.errorList;
    const out: LabelError[] = [];
    for (const e of [...this.entries.values()].filter((x) => x.errors.length > 0).sort(entryOrder)) for (const x of e.errors) out.push(x);
    for (const g of this.groups.values()) for (const x of g.errors) out.push(x);
    for (const x of this.placementErrors) out.push(x);
    this.errorList = out;
    return out;
  }

  state(): DesiredState {
    return { services: this.services(), labelErrors: this.labelErrors() };
  }

  /**
   * Cluster mode: the VIP store to place with (the cluster's assignments ahead of this host's,
   * cluster/index.ts modelInputs) and the cluster's assignments. One more input of the placement:
   * a change re-runs it, so the result is what buildDesiredState gives with the same `store` and
   * `clusterVips`. While `clusterVips` is non-empty a new service is never placed alone (its
   * derivation must also avoid the VIPs of names that have no containers here).
   */
  setClusterVips(store: VipStore, clusterVips: ClusterVip[]): ModelDelta {
    this.opts.store = store;
    this.clusterVips = clusterVips;
    this.mustPlace = true;
    return this.apply([], []);
  }

  /**
   * A full Docker list: containers not in it are removed, the others upserted (in the list's
   * order, oldest first, which gives new ones their tie-break order). Returns the delta and how
   * many containers differed from what the model held (missed events: drift; not those whose
   * events were still pending, `snap.pending`). Containers the
   * model does not keep (no berth labels: berthd's clients ride along in the list) are not drift:
   * they are in every list and never in the model.
   */
  resync(snap: DockerSnapshot, host: HostInfo = this.host): ModelDelta & { containersChanged: number } {
    const listed = new Set<string>();
    const upserts: ContainerInfo[] = [];
    for (const c of snap.containers) {
      listed.add(c.id);
      const old = this.entries.get(c.id)?.info;
      if (!old || !sameContainer(old, c)) upserts.push(c);
      else this.entries.get(c.id)!.info = c; // the list's object replaces the old (same content)
    }
    const removed = [...this.entries.keys()].filter((id) => !listed.has(id));
    const known = new Set(upserts.filter((c) => this.entries.has(c.id)).map((c) => c.id));
    const delta = this.apply(upserts, removed, { host, networks: snap.networks });
    // Changes whose events were pending when the list was taken are late, not missed.
    const pending = snap.pending;
    const expected = (id: string) => !!pending?.size && (pending.has(id) || (pending.has(id.slice(0, 12))));
    const changed = upserts.filter((c) => (known.has(c.id) || this.entries.has(c.id)) && !expected(c.id)).length;
    return { ...delta, containersChanged: changed + removed.filter((id) => !expected(id)).length };
  }

  /**
   * Containers changed (upserts: their current state, e.g. from a list filtered by id) or gone
   * (removed ids); optionally new host facts or Docker networks (the VIP rules).
   */
  apply(upserts: ContainerInfo[], removedIds: string[], facts: { host?: HostInfo; networks?: DockerSnapshot['networks'] } = {}): ModelDelta {
    const dirty = new Set<string>();
    let labelErrors = false;
    let routesChanged = false;
    let place = this.mustPlace;
    this.mustPlace = false;
    if (facts.host || facts.networks) {
      const host = facts.host ?? this.host;
      const networks = facts.networks ?? this.networks;
      const key = rulesKeyOf(host, networks);
      if (key !== this.rulesKey) {
        this.rules = vipRulesOf(this.opts.serviceCidr, this.opts.serviceCidr6, host, networks, this.opts.reserved);
        this.rulesKey = key;
        place = true;
      }
      this.host = host;
      this.networks = networks;
    }
    const drop = (id: string): void => {
      const e = this.entries.get(id);
      if (!e) return;
      this.entries.delete(id);
      if (e.errors.length) labelErrors = true;
      if (this.routed.delete(id)) routesChanged = true;
      if (e.spec) {
        const g = this.groups.get(e.spec.service);
        if (g) removeOnce(g.ids, id);
        dirty.add(e.spec.service);
      }
    };
    for (const id of removedIds) drop(id);
    for (const info of upserts) {
      const old = this.entries.get(info.id);
      const ord = old ? old.ord : this.nextOrd++;
      // Labels and ports are all decodeLabels reads, besides the name (errors name the container).
      const sameLabels = old && old.info.name === info.name && sameRecord(old.info.labels, info.labels) && samePorts(old.info.exposedPorts, info.exposedPorts);
      if (old && sameLabels) {
        old.info = info;
        if (old.spec) dirty.add(old.spec.service);
        continue;
      }
      drop(info.id);
      const { spec, errors } = decodeLabels(info);
      if (!spec && errors.length === 0) continue; // not berth's: nothing kept
      const e: Entry = { info, ord, spec: spec && compactSpec(spec), errors: errors.length ? errors : NO_ERRORS };
      this.entries.set(info.id, e);
      if (errors.length) labelErrors = true;
      if (spec) {
        let g = this.groups.get(spec.service);
        if (!g) this.groups.set(spec.service, (g = { ids: [], members: [], errors: [], pins: '', routed: '' }));
        if (!g.ids.includes(info.id)) g.ids.push(info.id);
        dirty.add(spec.service);
        if (spec.routes.length) {
          this.routed.add(info.id);
          routesChanged = true;
        }
      }
    }

    // Re-derive the dirty services' groups. A placement needed only because services appeared or
    // went (nothing else) may be done for them alone (placeNew/forget below).
    const added: string[] = [];
    const gone: string[] = [];
    let placeAll = place;
    for (const name of dirty) {
      const g = this.groups.get(name)!;
      const before = g.pins;
      const wasRouted = g.routed;
      const hadErrors = g.errors.length > 0;
      if (g.ids.length === 0) {
        this.groups.delete(name);
        if (wasRouted) routesChanged = true;
        place = true;
        if (this.placement.services.has(storeKey('service', name))) gone.push(name);
        else placeAll = true;
        if (hadErrors) labelErrors = true;
        continue;
      }
      const members = g.ids.map((id) => this.entries.get(id)!).sort(entryOrder);
      g.members = [];
      g.errors = [];
      for (const e of members) {
        // The entry itself is the member (it has info and spec): no second object per container.
        const m = e as Member;
        if (g.members.length === 0) {
          g.members.push(m);
          continue;
        }
        const d = disagree(g.members[0].spec, m.spec);
        if (d.length) for (const x of d) g.errors.push(x);
        else g.members.push(m);
      }
      g.pins = `${g.members[0].spec.vip ?? ''}|${g.members[0].spec.vip6 ?? ''}`;
      g.routed = g.members.filter((m) => m.spec.routes.length > 0).map((m) => m.info.id).join(',');
      if (hadErrors || g.errors.length) labelErrors = true;
      const key = storeKey('service', name);
      if (this.placement.rejected.has(key)) {
        place = placeAll = true;
      } else if (!this.placement.services.has(key)) {
        place = true;
        added.push(name);
      } else if (before !== g.pins) {
        place = placeAll = true;
      }
      if (wasRouted !== g.routed) routesChanged = true;
    }
    if (this.clusterVips.length) placeAll = place;
    if (routesChanged) place = placeAll = true;

    const changed: Service[] = [];
    const removed: { kind: Service['kind']; name: string }[] = [];
    if (place && !placeAll && this.placement.clean && this.placeAlone(added, gone, changed, removed)) {
      // Placed alone; the dirty services that existed before are rebuilt below.
      place = false;
      for (const name of added) dirty.delete(name);
      for (const name of gone) dirty.delete(name);
    }
    if (place) {
      labelErrors = true;
      const errors: LabelError[] = [];
      const entities = [...this.groups].map(([name, g]) => serviceEntity(name, g.members));
      const routedContainers = [...this.routed].map((id) => this.entries.get(id)!).sort(entryOrder).map((e) => e.info);
      this.placement = placeEntities(entities, routedContainers, this.rules, this.opts.store, errors, this.env(), this.clusterVips);
      this.placementErrors = errors;
      this.owned = { 4: new Set(), 6: new Set() };
      for (const s of this.placement.services.values()) {
        this.owned[4].add(s.vip);
        if (s.vip6) this.owned[6].add(s.vip6);
      }
      for (const [key, s] of this.placement.services) {
        const old = this.out.get(key);
        if (!old || !sameService(old, s)) {
          this.out.set(key, s);
          changed.push(s);
        }
      }
      for (const [key, s] of this.out) {
        if (!this.placement.services.has(key)) {
          this.out.delete(key);
          removed.push({ kind: s.kind, name: s.name });
        }
      }
    } else {
      // Same entities, pins and routes: every VIP stays; only the dirty services' ports and
      // backends are rebuilt.
      for (const name of dirty) {
        const key = storeKey('service', name);
        const prev = this.placement.services.get(key);
        const g = this.groups.get(name);
        if (!prev || !g) continue; // (a skipped service would have forced a placement)
        const s: Service = {
          ...prev,
          ports: g.members[0].spec.ports.map((p) => ({ ...p })),
          backends: g.members.map((m) => backendOf(m.info, this.env())).filter((b): b is NonNullable<typeof b> => b !== null).sort((a, b) => cmp(a.id, b.id)),
        };
        this.placement.services.set(key, s);
        const old = this.out.get(key);
        if (!old || !sameService(old, s)) {
          this.out.set(key, s);
          changed.push(s);
        }
      }
    }
    if (changed.length || removed.length) this.sorted = null;
    if (place) this.ingressList = null;
    if (labelErrors) this.errorList = null;
    return { changed, removed, labelErrors, placed: place };
  }

  /**
   * Place services that appeared (without routes) and forget services that went, without the
   * global step. Valid only after a clean placement (Placement.clean) with nothing else changed:
   * then a rebuild from scratch gives every existing entity its stored VIP in pass 1, and the new
   * ones, ordered by name after them, claim their pins, then derive what is missing: exactly
   * what this does. Returns false (nothing changed) when a new service would be skipped (a pin
   * forbidden or owned, a range exhausted): the global step reports those.
   */
  private placeAlone(added: string[], gone: string[], changed: Service[], removed: { kind: Service['kind']; name: string }[]): boolean {
    const fresh = [...added].sort(cmp).map((name) => ({ name, g: this.groups.get(name)!, vip: { 4: null, 6: null } as Record<Family, string | null> }));
    // The owned sets as they would be, as an overlay (copying 10,000 VIPs per event would cost
    // more than the placement).
    const freed: Record<Family, Set<string>> = { 4: new Set(), 6: new Set() };
    const claimed: Record<Family, Set<string>> = { 4: new Set(), 6: new Set() };
    const taken = (fam: Family, v: string) => claimed[fam].has(v) || (this.owned[fam].has(v) && !freed[fam].has(v));
    const goneVips: Service[] = gone.map((name) => this.placement.services.get(storeKey('service', name))!);
    for (const s of goneVips) {
      freed[4].add(s.vip);
      if (s.vip6) freed[6].add(s.vip6);
    }
    for (const f of fresh) {
      const spec = f.g.members[0].spec;
      for (const fam of [4, 6] as const) {
        const pin = fam === 4 ? spec.vip : spec.vip6;
        if (pin === null) continue;
        const a = parseIp(pin);
        if (!a || vipProblem(this.rules[fam], a) !== null) return false;
        const text = formatIp(a);
        if (taken(fam, text)) return false;
        claimed[fam].add(text);
        f.vip[fam] = text;
      }
    }
    for (const f of fresh) {
      for (const fam of [4, 6] as const) {
        if (f.vip[fam] !== null) continue;
        const a = deriveVip('service', f.name, this.rules[fam], (x) => taken(fam, formatIp(x)));
        if (!a) return false;
        f.vip[fam] = formatIp(a);
        claimed[fam].add(f.vip[fam]!);
      }
    }
    // Commit.
    for (const fam of [4, 6] as const) {
      for (const v of freed[fam]) this.owned[fam].delete(v);
      for (const v of claimed[fam]) this.owned[fam].add(v);
    }
    for (const s of goneVips) {
      const key = storeKey('service', s.name);
      this.placement.services.delete(key);
      this.out.delete(key);
      this.opts.store.forget('service', s.name);
      removed.push({ kind: 'service', name: s.name });
    }
    for (const f of fresh) {
      const key = storeKey('service', f.name);
      this.opts.store.set('service', f.name, f.vip[4], f.vip[6]);
      const s: Service = {
        name: f.name, kind: 'service', vip: f.vip[4]!, vip6: f.vip[6],
        ports: f.g.members[0].spec.ports.map((p) => ({ ...p })),
        backends: f.g.members.map((m) => backendOf(m.info, this.env())).filter((b): b is NonNullable<typeof b> => b !== null).sort((a, b) => cmp(a.id, b.id)),
        routes: [], ingress: null, errors: [],
      };
      this.placement.services.set(key, s);
      this.out.set(key, s);
      changed.push(s);
    }
    return true;
  }
}

/** Shared empty lists for the per-container state (frozen: nothing may add to them). */
const NO_ERRORS: LabelError[] = Object.freeze([]) as unknown as LabelError[];
const NO_ROUTES: ContainerSpec['routes'] = Object.freeze([]) as unknown as ContainerSpec['routes'];

/**
 * The spec as kept per container: arrays built by push() carry spare capacity (~150 bytes for one
 * port, where a copy of exact length takes ~40), and most containers have no routes. At 40,000
 * containers that was ~10 MB of berthd's heap (heap snapshot, npm run bench's 10,000 × 4).
 */
function compactSpec(spec: ContainerSpec): ContainerSpec {
  // (A berth.ports list is shared and frozen already: labels.ts parsePortsShared.)
  if (!Object.isFrozen(spec.ports)) spec.ports = spec.ports.slice();
  spec.routes = spec.routes.length ? spec.routes.slice() : NO_ROUTES;
  return spec;
}

/** Remove `x` from `list` (where it is at most once), keeping the others' order. */
function removeOnce(list: string[], x: string): void {
  const i = list.indexOf(x);
  if (i >= 0) list.splice(i, 1);
}

function entryOrder(a: Entry, b: Entry): number {
  return (a.info.created ?? 0) - (b.info.created ?? 0) || a.ord - b.ord;
}

function sameRecord(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if (a[k] !== b[k]) return false;
  return true;
}

function samePorts(a: ContainerInfo['exposedPorts'], b: ContainerInfo['exposedPorts']): boolean {
  return a.length === b.length && a.every((p, i) => p.port === b[i].port && p.protocol === b[i].protocol);
}

/** Equal as the model reads them (the list's objects are new each time). */
export function sameContainer(a: ContainerInfo, b: ContainerInfo): boolean {
  if (a === b) return true;
  return (
    a.id === b.id && a.name === b.name && a.state === b.state && a.health === b.health && a.stopping === b.stopping &&
    a.created === b.created && a.networkMode === b.networkMode && sameRecord(a.labels, b.labels) && samePorts(a.exposedPorts, b.exposedPorts) &&
    a.networks.length === b.networks.length &&
    a.networks.every((n, i) => n.name === b.networks[i].name && n.id === b.networks[i].id && n.ip === b.networks[i].ip && n.ip6 === b.networks[i].ip6)
  );
}

function rulesKeyOf(host: HostInfo, networks: DockerSnapshot['networks']): string {
  return JSON.stringify([[...host.addresses].sort(), networks.map((n) => [n.name, n.subnets, n.gateways]).sort((a, b) => cmp(String(a[0]), String(b[0])))]);
}

export { serviceKeyOf };
