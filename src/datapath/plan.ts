/**
 * PURE planning: Service[] -> the map entries berth wants -> the minimal, ordered operations that
 * turn what the maps hold now into that. No I/O; index.ts dumps the maps, calls plan() and
 * applies the ops.
 *
 * Model of the maps (bpf/lb.h): a frontend is (VIP, port, protocol); its master entry (slot 0)
 * holds {service id, backend count, flags}, slots 1..count hold backend ids, and backend ids map
 * to addresses. Ids are reused from the current maps wherever the same thing is already there,
 * so a restarted berthd adopts the kernel's state with zero writes.
 *
 * Ordering keeps every intermediate state usable by a concurrent connect():
 *  - backend entries are written before any slot references them, deleted after none does;
 *  - growing a frontend writes the new slots before the master's count; shrinking writes the
 *    master's count before deleting the slots beyond it; a removed frontend loses its master
 *    first, so no connect ever sees a count larger than its slots.
 */
import type { Service } from '../model/types';
import { canonicalIp, familyOf, SVC_F_HOST_NETNS, SVC_F_NETS, FAMILY_V4, type BackendAddr, type SvcKey, type SvcVal } from './codec';
import { networkLists, type NetContext } from './netlists';

/** Where the v6 ingress VIP sends host clients: a v4-mapped loopback reaches Envoy's 127.0.0.1 listener. */
export const INGRESS_V4 = '127.0.0.1';
export const INGRESS_V6 = '::ffff:127.0.0.1';

export interface Frontend {
  vip: string;
  port: number;
  protocol: 'tcp' | 'udp';
  /** Per-client-network list number (netlists.ts); absent or 0 = list 0. */
  net?: number;
}

/** One frontend as berth wants it. */
export interface DesiredFrontend extends Frontend {
  service: string;
  flags: number;
  backends: BackendAddr[];
}

/** One frontend as the maps hold it. */
export interface CurrentFrontend extends Frontend {
  /** From the master entry; null when only slots exist (orphans of an interrupted write). */
  master: SvcVal | null;
  /** The backend id in each slot (a SlotTable: index slot − 1; see slotGet/slotSet/slotDel). */
  slots: SlotTable;
}

/**
 * The slots 1..n of one frontend as one array: index `slot − 1` holds the backend id, a hole (or
 * undefined) marks a slot with no entry (orphans of an interrupted write may leave gaps), and the
 * array never ends in a hole, so `length` is the highest slot present (0: none). One array per
 * frontend rather than a Map: at 10,000 services × 4 the view, a dump and the plan's input each
 * held ~20,000 Maps (a Map with a handful of entries is ~200 bytes of hash table; an array of 4
 * small integers ~50). Slot numbers are 1..0xffff (the map key's u16).
 */
export type SlotTable = (number | undefined)[];

/** The backend id in `slot`, or undefined when the slot has no entry (or is out of range). */
export function slotGet(t: SlotTable, slot: number): number | undefined {
  return slot >= 1 ? t[slot - 1] : undefined;
}

/**
 * Put backend `id` in `slot` (1..0xffff); returns the id it replaced, or undefined. Throws a
 * RangeError for a slot outside 1..0xffff or an id that is not a non-negative integer (a dump
 * decodes u16 slots and u32 ids, so only a caller's bug gets here).
 */
export function slotSet(t: SlotTable, slot: number, id: number): number | undefined {
  if (!Number.isInteger(slot) || slot < 1 || slot > 0xffff) throw new RangeError(`slot ${slot} is not in 1..65535`);
  if (!Number.isInteger(id) || id < 0) throw new RangeError(`backend id ${id} is not a non-negative integer`);
  const old = t[slot - 1];
  t[slot - 1] = id;
  return old;
}

/** Remove the entry of `slot`; returns the id it held, or undefined. Keeps "no trailing hole". */
export function slotDel(t: SlotTable, slot: number): number | undefined {
  if (slot < 1 || slot > t.length) return undefined;
  const old = t[slot - 1];
  if (old === undefined) return undefined;
  if (slot === t.length) {
    t.length = slot - 1;
    while (t.length > 0 && t[t.length - 1] === undefined) t.length--;
  } else {
    delete t[slot - 1];
  }
  return old;
}

/** The number of slots with an entry. */
export function slotCount(t: SlotTable): number {
  let n = 0;
  for (let i = 0; i < t.length; i++) if (t[i] !== undefined) n++;
  return n;
}

/** The slots with an entry as [slot, backend id] pairs, lowest slot first. */
export function slotEntries(t: SlotTable): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < t.length; i++) {
    const id = t[i];
    if (id !== undefined) out.push([i + 1, id]);
  }
  return out;
}

export interface CurrentState {
  frontends: Map<string, CurrentFrontend>;
  /** backend id -> address. */
  backends: Map<number, BackendAddr>;
}

/**
 * One map write. `fid` on a service-map op is frontendId(key), and `bk` on a backend put
 * backendId(addr), set by the planners that have them already, so that recording the op in
 * berth's view (view.ts applied) uses the one string the plan built rather than building one per
 * op (110,000 ops at a cold start of 10,000 services × 4). Absent: the reader builds it.
 */
export type Op =
  | { op: 'backend-put'; id: number; addr: BackendAddr; bk?: string }
  | { op: 'backend-del'; id: number }
  | { op: 'svc-put'; key: SvcKey; val: SvcVal; fid?: string }
  | { op: 'svc-del'; key: SvcKey; fid?: string }
  | { op: 'counter-reset'; id: number };

export interface Plan {
  /** Per service, in order; a failure stops only that service's list. */
  perService: Map<string, Op[]>;
  /** Deletions of frontends no service wants and of unreferenced backends, after perService. */
  cleanup: Op[];
  /** Service name -> service id (for counters). */
  serviceIds: Map<string, number>;
  /** Backends that are gone (their connected UDP sockets get destroyed). */
  removedBackends: { id: number; addr: BackendAddr }[];
  /** Desired-state problems found while planning (e.g. too many backends), per service. */
  errors: { service: string; error: string }[];
}

export interface Limits {
  maxServiceIds: number;
  maxBackends: number;
  maxSlots: number;
}

export const DEFAULT_LIMITS: Limits = { maxServiceIds: 1 << 17, maxBackends: 1 << 18, maxSlots: 0xffff };

// Identity strings. Addresses are canonical text everywhere in this module (desiredFrontends
// canonicalizes the model's, the codec decodes to canonical), so no re-parsing here: at 100k
// services this is the hot path of a no-op sync. Built with join, not templates: the view keeps
// one per frontend and per backend, and a template's result is a V8 rope (cons string) of ~150
// bytes where join gives a flat string of ~25 (heap snapshot of berthd at 10,000 × 4).
export function frontendId(f: Frontend): string {
  return f.net ? [f.protocol, f.vip, `${f.port}#${f.net}`].join('/') : [f.protocol, f.vip, f.port].join('/');
}

export function backendId(a: BackendAddr): string {
  return [a.ip, a.port].join('/');
}

/** The frontends a service asks for (pure). */
export function desiredFrontends(s: Service, limits: Limits = DEFAULT_LIMITS): { frontends: DesiredFrontend[]; errors: string[] } {
  const out: DesiredFrontend[] = [];
  const errors: string[] = [];
  const vips = [s.vip, s.vip6].filter((v): v is string => !!v);
  if (s.kind === 'ingress') {
    // Host clients of the ingress VIP go straight to Envoy's listener on loopback; other netns
    // (containers) are left to the proxy's redirect, since their 127.0.0.1 is not the host's.
    if (!s.ingress) return { frontends: out, errors: ['ingress without ingress spec'] };
    const proxyPort = s.ingress.proxyPort;
    // Every port of the ingress (listen, and tlsListen for a TLS ingress) reaches the same
    // listener: Envoy tells TLS from plain HTTP by the first bytes (tls_inspector).
    const ports = s.ports.length ? s.ports.map((p) => p.port) : [s.ingress.listen];
    for (const port of ports) {
      for (const vip of vips) {
        const lo = familyOf(vip) === FAMILY_V4 ? INGRESS_V4 : INGRESS_V6;
        out.push({
          service: s.name, vip: canonicalIp(vip), port, protocol: 'tcp', flags: SVC_F_HOST_NETNS,
          backends: proxyPort ? [{ ip: lo, port: proxyPort }] : [],
        });
      }
    }
    return { frontends: out, errors };
  }
  for (const p of s.ports) {
    for (const vip of vips) {
      const v4 = familyOf(vip) === FAMILY_V4;
      // (The port is the same for all of them: an address seen twice is the same backend.)
      const seen = new Set<string>();
      const backends: BackendAddr[] = [];
      for (const b of s.backends) {
        const ip = v4 ? b.ip : b.ip6;
        if (!ip) continue;
        const canon = canonicalIp(ip);
        if (seen.has(canon)) continue;
        seen.add(canon);
        backends.push({ ip: canon, port: p.targetPort });
      }
      if (backends.length > limits.maxSlots) {
        errors.push(`${vip}:${p.port}/${p.protocol}: ${backends.length} backends, at most ${limits.maxSlots} used`);
        backends.length = limits.maxSlots;
      }
      out.push({ service: s.name, vip: canonicalIp(vip), port: p.port, protocol: p.protocol, flags: 0, backends });
    }
  }
  return { frontends: out, errors };
}

/**
 * The service-map ops that make frontend `f` (currently `cf`, or absent) hold backend ids `ids`
 * under service id `sid`: slots 1..n where they differ, then the master, then the slots beyond
 * the new count (with prune=false only those beyond the old count: orphans). Ordered for a
 * concurrent connect (see the module comment). `fid`: frontendId(f), when the caller has it.
 */
export function frontendOps(f: Frontend & { flags: number }, cf: CurrentFrontend | undefined, sid: number, ids: number[], prune: boolean, fid: string = frontendId(f)): Op[] {
  const ops: Op[] = [];
  const count = ids.length;
  const oldCount = cf?.master?.count ?? 0;
  for (let s = 1; s <= count; s++) {
    if ((cf ? slotGet(cf.slots, s) : undefined) !== ids[s - 1]) ops.push({ op: 'svc-put', key: key(f, s), val: { id: ids[s - 1], count: 0, flags: 0 }, fid });
  }
  const m = cf?.master;
  if (!m || m.id !== sid || m.count !== count || m.flags !== f.flags) {
    ops.push({ op: 'svc-put', key: key(f, 0), val: { id: sid, count, flags: f.flags }, fid });
  }
  // Slots beyond the new count (also orphans left by an interrupted write).
  if (cf) {
    const t = cf.slots;
    for (let s = count + 1; s <= t.length; s++) {
      if (t[s - 1] !== undefined && (prune || s > oldCount)) ops.push({ op: 'svc-del', key: key(f, s), fid });
    }
  }
  return ops;
}

/** Lowest free ids, skipping the ones in use. */
class IdPool {
  private next = 1;
  constructor(private readonly used: Set<number>, private readonly max: number) {}
  take(): number | null {
    while (this.next < this.max && this.used.has(this.next)) this.next++;
    if (this.next >= this.max) return null;
    this.used.add(this.next);
    return this.next++;
  }
}

function key(f: Frontend, slot: number): SvcKey {
  return f.net ? { vip: f.vip, port: f.port, protocol: f.protocol, slot, net: f.net } : { vip: f.vip, port: f.port, protocol: f.protocol, slot };
}

/**
 * A service's frontends with their per-client-network lists (netlists.ts): list 0 of a frontend
 * that has any gets SVC_F_NETS, so the connect hook looks the client up only then.
 */
export function frontendsWithNetworks(s: Service, limits: Limits, nets: NetContext | undefined): { frontends: DesiredFrontend[]; errors: string[] } {
  const d = desiredFrontends(s, limits);
  if (!nets || s.kind !== 'service') return d;
  const out: DesiredFrontend[] = [];
  for (const f of d.frontends) {
    const p = s.ports.find((x) => x.port === f.port && x.protocol === f.protocol);
    const lists = p ? networkLists(s, f.vip, p.targetPort, f.backends, nets, limits.maxSlots) : new Map<number, BackendAddr[]>();
    out.push(lists.size ? { ...f, flags: f.flags | SVC_F_NETS } : f);
    for (const [net, backends] of [...lists].sort((a, b) => a[0] - b[0])) out.push({ ...f, net, backends });
  }
  return { frontends: out, errors: d.errors };
}

/**
 * The ops that make `current` hold `services`. prune=false (berthd before its first complete
 * Docker list) never deletes anything: frontends nobody asked for stay, and a wanted frontend
 * keeps its current backends next to the new ones.
 */
export function plan(services: Service[], current: CurrentState, opts: { prune: boolean }, limits: Limits = DEFAULT_LIMITS, nets?: NetContext): Plan {
  const perService = new Map<string, Op[]>();
  const cleanup: Op[] = [];
  const serviceIds = new Map<string, number>();
  const errors: { service: string; error: string }[] = [];

  // Desired frontends, first service wins a frontend claimed twice.
  const desired = new Map<string, DesiredFrontend>();
  // Each frontend with its id, built once (at 10,000 services the ids were built three times).
  const byService = new Map<string, { f: DesiredFrontend; fid: string }[]>();
  for (const s of [...services].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const d = frontendsWithNetworks(s, limits, nets);
    for (const e of d.errors) errors.push({ service: s.name, error: e });
    const mine: { f: DesiredFrontend; fid: string }[] = [];
    for (const f of d.frontends) {
      const id = frontendId(f);
      const other = desired.get(id);
      if (other) {
        if (!f.net) errors.push({ service: s.name, error: `${f.vip}:${f.port}/${f.protocol} is already service ${other.service}'s` });
        continue;
      }
      desired.set(id, f);
      mine.push({ f, fid: id });
    }
    byService.set(s.name, mine);
  }

  // Backend ids: reuse the current id of an address; new addresses get the lowest free ids.
  const backendIds = new Map<string, number>();
  for (const [id, a] of current.backends) if (!backendIds.has(backendId(a))) backendIds.set(backendId(a), id);
  const backendPool = new IdPool(new Set(current.backends.keys()), limits.maxBackends);
  const newBackends = new Set<number>();

  // Service ids: a service keeps the id found on its current masters; ids still held by
  // frontends that stay (prune=false) or by other services are never handed out twice.
  // (An id seen on a wanted frontend of X and on an unwanted one means both were X's: same id,
  // same service; with prune=false the unwanted one stays and keeps sharing X's id.)
  const usedSvcIds = new Set<number>();
  const idOwner = new Map<number, string>();
  for (const [name, fronts] of byService) {
    for (const { fid } of fronts) {
      const cf = current.frontends.get(fid);
      const id = cf?.master?.id;
      if (id && !serviceIds.has(name) && !idOwner.has(id)) {
        serviceIds.set(name, id);
        idOwner.set(id, name);
      }
    }
  }
  for (const id of idOwner.keys()) usedSvcIds.add(id);
  if (!opts.prune) {
    for (const [fid, cf] of current.frontends) if (cf.master && !desired.has(fid)) usedSvcIds.add(cf.master.id);
  }
  const svcPool = new IdPool(usedSvcIds, limits.maxServiceIds);

  const referenced = new Set<number>();
  for (const [name, fronts] of byService) {
    const ops: Op[] = [];
    const putHere = new Set<number>();
    perService.set(name, ops);
    let sid = serviceIds.get(name);
    if (sid === undefined && fronts.length > 0) {
      const got = svcPool.take();
      if (got === null) {
        errors.push({ service: name, error: `no free service id (at most ${limits.maxServiceIds - 1} services)` });
        continue;
      }
      sid = got;
      serviceIds.set(name, sid);
      ops.push({ op: 'counter-reset', id: sid });
    }
    if (sid === undefined) continue;
    for (const { f, fid } of fronts) {
      const cf = current.frontends.get(fid);
      let wanted = f.backends;
      if (!opts.prune && cf) {
        // Keep what is there, add the rest.
        const have: BackendAddr[] = [];
        for (let s = 1; s <= (cf.master?.count ?? 0); s++) {
          const a = current.backends.get(slotGet(cf.slots, s) ?? 0);
          if (a) have.push(a);
        }
        const seen = new Set(have.map(backendId));
        wanted = [...have, ...f.backends.filter((b) => !seen.has(backendId(b)))].slice(0, limits.maxSlots);
      }
      const ids: number[] = [];
      let failed = false;
      for (const a of wanted) {
        const bk = backendId(a);
        let id = backendIds.get(bk);
        if (id === undefined) {
          const got = backendPool.take();
          if (got === null) {
            errors.push({ service: name, error: `no free backend id (at most ${limits.maxBackends - 1} backends)` });
            failed = true;
            break;
          }
          id = got;
          backendIds.set(bk, id);
          newBackends.add(id);
          putHere.add(id);
          ops.push({ op: 'backend-put', id, addr: a, bk });
        } else if (newBackends.has(id) && !putHere.has(id)) {
          // Written by another service's ops; repeat the write so this service does not depend
          // on that one succeeding (idempotent).
          putHere.add(id);
          ops.push({ op: 'backend-put', id, addr: a, bk });
        }
        referenced.add(id);
        ids.push(id);
      }
      if (failed) break;
      for (const op of frontendOps(f, cf, sid, ids, opts.prune, fid)) ops.push(op);
    }
  }

  // Frontends nobody wants: master first, then slots. Their backends stay referenced with prune=false.
  for (const [fid, cf] of current.frontends) {
    if (desired.has(fid)) continue;
    if (!opts.prune) {
      for (const id of cf.slots) if (id !== undefined) referenced.add(id);
      continue;
    }
    if (cf.master) cleanup.push({ op: 'svc-del', key: key(cf, 0) });
    for (const [s] of slotEntries(cf.slots)) cleanup.push({ op: 'svc-del', key: key(cf, s) });
  }

  const removedBackends: { id: number; addr: BackendAddr }[] = [];
  if (opts.prune) {
    for (const [id, a] of current.backends) {
      if (referenced.has(id)) continue;
      cleanup.push({ op: 'backend-del', id });
      removedBackends.push({ id, addr: a });
    }
  }
  return { perService, cleanup, serviceIds, removedBackends, errors };
}

/** Rebuild CurrentState from decoded map entries (addresses canonical, as codec decodes them). */
export function currentFrom(svcEntries: { key: SvcKey; val: SvcVal }[], backendEntries: { id: number; addr: BackendAddr }[]): CurrentState {
  const frontends = new Map<string, CurrentFrontend>();
  for (const { key: k, val } of svcEntries) {
    const fid = frontendId(k);
    let cf = frontends.get(fid);
    if (!cf) {
      cf = { vip: k.vip, port: k.port, protocol: k.protocol, ...(k.net ? { net: k.net } : {}), master: null, slots: [] };
      frontends.set(fid, cf);
    }
    if (k.slot === 0) cf.master = val;
    else slotSet(cf.slots, k.slot, val.id);
  }
  const backends = new Map<number, BackendAddr>();
  for (const b of backendEntries) backends.set(b.id, b.addr);
  return { frontends, backends };
}

/** Number of map writes/deletes in a plan (for tests and logs). */
export function countOps(p: Plan): { updates: number; deletes: number } {
  let updates = 0, deletes = 0;
  for (const op of [...[...p.perService.values()].flat(), ...p.cleanup]) {
    if (op.op === 'svc-del' || op.op === 'backend-del') deletes++;
    else updates++;
  }
  return { updates, deletes };
}
