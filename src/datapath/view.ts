/**
 * PURE: berth's in-memory view of what the services and backends maps hold, and the incremental
 * planner over it. An event's services are planned against the view (no map dump), and the view
 * is updated with exactly the ops the kernel accepted (applyOps reports them), so after a write
 * that fails mid-way the view still equals the kernel. The periodic full sync (index.ts) dumps the
 * maps, counts where the kernel differs from the view (drift someone else made), adopts the dump
 * as the view and plans everything with plan() (which repairs drift and retries failed writes):
 * kube-proxy's partial syncs plus periodic full syncs (DESIGN lesson 13).
 *
 * Ordering rules are plan.ts's (frontendOps is shared), so a concurrent connect never sees a
 * half-written service.
 */
import type { Service } from '../model/types';
import type { BackendAddr, SvcKey, SvcVal } from './codec';
import {
  backendId, currentFrom, frontendId, frontendOps, frontendsWithNetworks, slotCount, slotDel, slotEntries, slotGet, slotSet, type CurrentFrontend, type CurrentState, type DesiredFrontend, type Frontend, type Limits, type Op, type Plan,
} from './plan';
import type { NetContext } from './netlists';

/** The service-map key of slot `slot` of frontend `f` (its per-network list number kept). */
function slotKey(f: Frontend, slot: number): SvcKey {
  return f.net ? { vip: f.vip, port: f.port, protocol: f.protocol, slot, net: f.net } : { vip: f.vip, port: f.port, protocol: f.protocol, slot };
}

/** Where the kernel and the view differ, by kind (entries; for the drift metric). */
export interface ViewDrift {
  /** Service-map entries (masters and slots) missing, extra or different in the kernel. */
  serviceEntries: number;
  /** Backend-map entries missing, extra or different. */
  backends: number;
}

/** Reusable ids: the lowest never-used id, or one freed earlier (any order). */
class Ids {
  private next = 1;
  /** A set: an id freed twice must still be handed out once. */
  private readonly freed = new Set<number>();
  constructor(private readonly used: (id: number) => boolean, private readonly max: number) {}
  take(): number | null {
    for (const id of this.freed) {
      this.freed.delete(id);
      if (!this.used(id)) return id;
    }
    while (this.next < this.max && this.used(this.next)) this.next++;
    if (this.next >= this.max) return null;
    return this.next++;
  }
  free(id: number): void {
    this.freed.add(id);
  }
}

/**
 * Slot references per backend id: a typed array indexed by id for the ids berth hands out
 * (1..maxBackends − 1), so that the cold start's 40,000 backends at 10,000 services × 4 cost one
 * 1 MiB buffer outside V8's heap instead of a Map of 40,000 entries in it (one lookup and one
 * store per slot written); ids beyond it (a dump can hold any u32 key) in a Map. A count never
 * goes below 0.
 */
export class RefCounts {
  private readonly dense: Uint32Array;
  private readonly sparse = new Map<number, number>();

  /** `size`: ids 0..size − 1 are counted in the array. Throws a RangeError for a bad size. */
  constructor(size: number) {
    if (!Number.isInteger(size) || size < 0 || size > 1 << 24) throw new RangeError(`reference table size ${size} is not in 0..${1 << 24}`);
    this.dense = new Uint32Array(size);
  }

  get(id: number): number {
    return id >= 0 && id < this.dense.length && Number.isInteger(id) ? this.dense[id] : (this.sparse.get(id) ?? 0);
  }

  /** Add `d` (may be negative) to the count of `id`, stopping at 0. */
  add(id: number, d: number): void {
    const n = Math.max(0, this.get(id) + d);
    if (id >= 0 && id < this.dense.length && Number.isInteger(id)) this.dense[id] = n;
    else if (n > 0) this.sparse.set(id, n);
    else this.sparse.delete(id);
  }
}

export class MapView {
  readonly frontends = new Map<string, CurrentFrontend>();
  readonly backends = new Map<number, BackendAddr>();
  /** backend address key -> id. */
  private readonly backendIds = new Map<string, number>();
  /** backend id -> slots referencing it. */
  private readonly refs: RefCounts;
  /** service id -> service name, and the frontends whose master carries that id. */
  private readonly idName = new Map<number, string>();
  private readonly serviceIds = new Map<string, number>();
  private readonly owned = new Map<number, Set<string>>();
  private readonly backendPool: Ids;
  private readonly svcPool: Ids;
  /** Service ids handed out by a plan but not yet on any master (counter reset done). */
  private readonly reserved = new Map<number, string>();

  constructor(private readonly limits: Limits) {
    this.refs = new RefCounts(limits.maxBackends);
    this.backendPool = new Ids((id) => this.backends.has(id), limits.maxBackends);
    this.svcPool = new Ids((id) => this.owned.has(id) || this.reserved.has(id), limits.maxServiceIds);
  }

  /** A view of decoded map contents (a dump); `names` maps service ids to names where known. */
  static fromState(cur: CurrentState, limits: Limits, names: Map<string, number> = new Map()): MapView {
    const v = new MapView(limits);
    for (const [id, a] of cur.backends) v.putBackend(id, a);
    for (const cf of cur.frontends.values()) {
      const mine = v.frontend(slotKey(cf, 0));
      for (const [slot, id] of slotEntries(cf.slots)) v.putSlot(mine, slot, id);
      if (cf.master) v.putMaster(mine, cf.master);
      v.dropIfEmpty(mine);
    }
    for (const [name, id] of names) if (v.owned.has(id)) v.name(id, name);
    return v;
  }

  /** The view as plan() reads current state. */
  get state(): CurrentState {
    return { frontends: this.frontends, backends: this.backends };
  }

  /** Service name -> service id, for the services the view knows by name. */
  ids(): Map<string, number> {
    return new Map(this.serviceIds);
  }

  /** Service-map entries (masters and slots) in the view, kept as entries come and go. */
  private svcEntries = 0;

  /** Entry counts (what the maps hold, as far as berth knows). */
  counts(): { services: number; backends: number } {
    return { services: this.svcEntries, backends: this.backends.size };
  }

  private name(id: number, name: string): void {
    const old = this.idName.get(id);
    if (old !== undefined && this.serviceIds.get(old) === id) this.serviceIds.delete(old);
    this.idName.set(id, name);
    this.serviceIds.set(name, id);
  }

  private frontend(k: SvcKey, fid: string = frontendId(k)): CurrentFrontend {
    let cf = this.frontends.get(fid);
    if (!cf) this.frontends.set(fid, (cf = { vip: k.vip, port: k.port, protocol: k.protocol, ...(k.net ? { net: k.net } : {}), master: null, slots: [] }));
    return cf;
  }

  private dropIfEmpty(cf: CurrentFrontend, fid?: string): void {
    if (!cf.master && cf.slots.length === 0) this.frontends.delete(fid ?? frontendId(cf));
  }

  private putBackend(id: number, a: BackendAddr, bk?: string): void {
    const old = this.backends.get(id);
    if (old) {
      const was = backendId(old);
      if (this.backendIds.get(was) === id) this.backendIds.delete(was);
    }
    this.backends.set(id, a);
    // (Each id string built once: a cold start records 40,000 backends at 10,000 services × 4.)
    const k = bk ?? backendId(a);
    if (!this.backendIds.has(k)) this.backendIds.set(k, id);
  }

  private delBackend(id: number): void {
    const a = this.backends.get(id);
    if (!a) return;
    this.backends.delete(id);
    if (this.backendIds.get(backendId(a)) === id) this.backendIds.delete(backendId(a));
    this.backendPool.free(id);
  }

  private ref(id: number, d: number): void {
    this.refs.add(id, d);
  }

  private putSlot(cf: CurrentFrontend, slot: number, id: number): void {
    const old = slotSet(cf.slots, slot, id);
    if (old !== undefined) this.ref(old, -1);
    else this.svcEntries++;
    this.ref(id, +1);
  }

  private putMaster(cf: CurrentFrontend, val: SvcVal, fid: string = frontendId(cf)): void {
    if (cf.master) this.unown(cf.master.id, fid);
    else this.svcEntries++;
    cf.master = { ...val };
    let set = this.owned.get(val.id);
    if (!set) this.owned.set(val.id, (set = new Set()));
    set.add(fid);
    this.reserved.delete(val.id);
  }

  private unown(id: number, fid: string): void {
    const set = this.owned.get(id);
    if (!set) return;
    set.delete(fid);
    if (set.size === 0) {
      this.owned.delete(id);
      if (!this.reserved.has(id)) {
        const name = this.idName.get(id);
        this.idName.delete(id);
        if (name !== undefined && this.serviceIds.get(name) === id) this.serviceIds.delete(name);
        this.svcPool.free(id);
      }
    }
  }

  /** Record one op the kernel accepted (`owner`: the service it was written for). */
  applied(op: Op, owner: string): void {
    switch (op.op) {
      case 'backend-put': this.putBackend(op.id, op.addr, op.bk); break;
      case 'backend-del': this.delBackend(op.id); break;
      case 'counter-reset':
        this.reserved.set(op.id, owner);
        this.name(op.id, owner);
        break;
      case 'svc-put': {
        const fid = op.fid ?? frontendId(op.key);
        const cf = this.frontend(op.key, fid);
        if (op.key.slot === 0) {
          this.putMaster(cf, op.val, fid);
          if (!this.idName.has(op.val.id)) this.name(op.val.id, owner);
        } else {
          this.putSlot(cf, op.key.slot, op.val.id);
        }
        break;
      }
      case 'svc-del': {
        const fid = op.fid ?? frontendId(op.key);
        const cf = this.frontends.get(fid);
        if (!cf) break;
        if (op.key.slot === 0) {
          if (cf.master) {
            this.unown(cf.master.id, fid);
            this.svcEntries--;
          }
          cf.master = null;
        } else {
          const old = slotDel(cf.slots, op.key.slot);
          if (old !== undefined) {
            this.ref(old, -1);
            this.svcEntries--;
          }
        }
        this.dropIfEmpty(cf, fid);
        break;
      }
    }
  }

  /** Name the service ids a full plan() kept or assigned (a dump does not know names). */
  adoptNames(ids: Map<string, number>): void {
    for (const [name, id] of ids) if (this.owned.has(id) || this.reserved.has(id)) this.name(id, name);
  }

  /** A plan's service ids that never reached a master (their service failed) are released. */
  settle(): void {
    for (const [id, name] of this.reserved) {
      if (this.owned.has(id)) continue;
      this.reserved.delete(id);
      if (this.serviceIds.get(name) === id) this.serviceIds.delete(name);
      this.idName.delete(id);
      this.svcPool.free(id);
    }
  }

  /**
   * The ops that make the maps hold `changed` and no longer hold `removed` (service names),
   * touching nothing else: the frontends these services own in the view and the backends only
   * they reference. A frontend another service owns is left to it and reported. `nets`: each
   * frontend's per-client-network lists (netlists.ts, as plan() writes them): they are owned like
   * list 0 (their masters carry the service id), so they are written, rewritten and removed with
   * the service. Pure: the view changes only through applied().
   */
  plan(changed: Service[], removed: string[], nets?: NetContext): Plan {
    const perService = new Map<string, Op[]>();
    const cleanup: Op[] = [];
    const serviceIds = new Map<string, number>();
    const errors: { service: string; error: string }[] = [];
    const removedBackends: { id: number; addr: BackendAddr }[] = [];
    const names = new Set([...changed.map((s) => s.name), ...removed]);
    /** Slot references that change: backend id -> delta. */
    const delta = new Map<number, number>();
    const bump = (id: number, d: number) => delta.set(id, (delta.get(id) ?? 0) + d);
    const newBackends = new Map<string, number>();
    const takenHere = new Set<number>();
    const backendPoolUsed = (id: number) => this.backends.has(id) || takenHere.has(id);
    const takeBackend = (): number | null => {
      for (;;) {
        const id = this.backendPool.take();
        if (id === null) return null;
        if (!backendPoolUsed(id)) {
          takenHere.add(id);
          return id;
        }
      }
    };
    const takenSvc: number[] = [];

    // One service may appear as both service and ingress name: plan by name, both kinds together.
    const byName = new Map<string, Service[]>();
    for (const s of changed) byName.set(s.name, [...(byName.get(s.name) ?? []), s]);
    // First what every name wants, so that a frontend moving from one of these services to
    // another (a VIP handed over in one change) is rewritten by its new owner, never deleted.
    const wantedBy = new Map<string, DesiredFrontend[]>();
    const claimed = new Map<string, string>();
    for (const name of [...names].sort()) {
      const wanted: DesiredFrontend[] = [];
      for (const s of byName.get(name) ?? []) {
        const d = frontendsWithNetworks(s, this.limits, nets);
        for (const e of d.errors) errors.push({ service: name, error: e });
        for (const f of d.frontends) {
          const fid = frontendId(f);
          const cf = this.frontends.get(fid);
          const ownerId = cf?.master?.id;
          const owner = ownerId !== undefined ? this.idName.get(ownerId) : undefined;
          const other = claimed.get(fid) ?? (owner !== undefined && owner !== name && !names.has(owner) ? owner : undefined);
          if (other !== undefined) {
            // (A per-network list follows its list 0: reported once, as plan() does.)
            if (!f.net) errors.push({ service: name, error: `${f.vip}:${f.port}/${f.protocol} is already service ${other}'s` });
            continue;
          }
          claimed.set(fid, name);
          wanted.push(f);
        }
      }
      wantedBy.set(name, wanted);
    }
    for (const name of [...names].sort()) {
      const ops: Op[] = [];
      perService.set(name, ops);
      const wanted = wantedBy.get(name)!;
      const mine = this.serviceIds.get(name);
      const ownedNow = mine !== undefined ? [...(this.owned.get(mine) ?? [])] : [];
      const wantedIds = new Set(wanted.map(frontendId));
      let sid = mine;
      if (sid === undefined && wanted.length > 0) {
        // (A freed id and the pool's next id may coincide: skip what this plan already took.)
        let got = this.svcPool.take();
        while (got !== null && takenSvc.includes(got)) got = this.svcPool.take();
        if (got === null) {
          errors.push({ service: name, error: `no free service id (at most ${this.limits.maxServiceIds - 1} services)` });
          continue;
        }
        takenSvc.push(got);
        sid = got;
        ops.push({ op: 'counter-reset', id: sid });
      }
      if (sid !== undefined && wanted.length > 0) serviceIds.set(name, sid);
      let failed = false;
      for (const f of wanted) {
        const fid = frontendId(f);
        const cf = this.frontends.get(fid);
        const ids: number[] = [];
        for (const a of f.backends) {
          const bk = backendId(a);
          let id = this.backendIds.get(bk) ?? newBackends.get(bk);
          if (id === undefined) {
            const got = takeBackend();
            if (got === null) {
              errors.push({ service: name, error: `no free backend id (at most ${this.limits.maxBackends - 1} backends)` });
              failed = true;
              break;
            }
            id = got;
            newBackends.set(bk, id);
            ops.push({ op: 'backend-put', id, addr: a, bk });
          }
          ids.push(id);
        }
        if (failed) break;
        for (const op of frontendOps(f, cf, sid!, ids, true, fid)) ops.push(op);
        if (cf) for (const id of cf.slots) if (id !== undefined) bump(id, -1);
        for (const id of ids) bump(id, +1);
      }
      if (failed) {
        perService.set(name, []);
        continue;
      }
      // Frontends this service owns that it no longer wants: master first, then slots.
      for (const fid of ownedNow) {
        if (wantedIds.has(fid) || claimed.has(fid)) continue;
        const cf = this.frontends.get(fid)!;
        ops.push({ op: 'svc-del', key: slotKey(cf, 0) });
        for (const [s, id] of slotEntries(cf.slots)) {
          ops.push({ op: 'svc-del', key: slotKey(cf, s) });
          bump(id, -1);
        }
      }
    }
    // Backends no slot references any more.
    for (const [id, d] of delta) {
      if (d >= 0 || !this.backends.has(id)) continue;
      if (this.refs.get(id) + d <= 0) {
        cleanup.push({ op: 'backend-del', id });
        removedBackends.push({ id, addr: this.backends.get(id)! });
      }
    }
    // Ids were only peeked at: the pools hand them out again unless applied() uses them.
    for (const id of takenHere) this.backendPool.free(id);
    for (const id of takenSvc) this.svcPool.free(id);
    return { perService, cleanup, serviceIds, removedBackends, errors };
  }

  /** Where `cur` (a dump) differs from this view. */
  diff(cur: CurrentState): ViewDrift {
    let serviceEntries = 0;
    let backends = 0;
    const sameVal = (a: SvcVal | null, b: SvcVal | null) => (a === null ? b === null : b !== null && a.id === b.id && a.count === b.count && a.flags === b.flags);
    for (const [fid, cf] of cur.frontends) {
      const mine = this.frontends.get(fid);
      if (!sameVal(cf.master, mine?.master ?? null)) serviceEntries++;
      for (const [s, id] of slotEntries(cf.slots)) if ((mine ? slotGet(mine.slots, s) : undefined) !== id) serviceEntries++;
      if (mine) for (const [s] of slotEntries(mine.slots)) if (slotGet(cf.slots, s) === undefined) serviceEntries++;
    }
    for (const [fid, mine] of this.frontends) {
      if (cur.frontends.has(fid)) continue;
      serviceEntries += slotCount(mine.slots) + (mine.master ? 1 : 0);
    }
    for (const [id, a] of cur.backends) {
      const mine = this.backends.get(id);
      if (!mine || backendId(mine) !== backendId(a)) backends++;
    }
    for (const id of this.backends.keys()) if (!cur.backends.has(id)) backends++;
    return { serviceEntries, backends };
  }
}

/** A view from decoded dump entries (codec's decode output). */
export function viewFromEntries(svcEntries: { key: SvcKey; val: SvcVal }[], backendEntries: { id: number; addr: BackendAddr }[], limits: Limits, names?: Map<string, number>): MapView {
  return MapView.fromState(currentFrom(svcEntries, backendEntries), limits, names);
}
