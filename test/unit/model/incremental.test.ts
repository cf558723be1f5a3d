/**
 * Property test of the incremental control plane (issue 11 part 4): random, seeded, bounded
 * sequences of container events (start, stop, kill, health, rename, network connect/disconnect,
 * label errors, pinned-VIP collisions in a tiny range, removal, berthd restarts in between), and
 * after EVERY step:
 *   - the incremental model equals buildDesiredState from scratch over the same containers and
 *     the store as it was before the step (services, label errors, and the store after);
 *   - the maps equal a full rebuild: the in-memory kernel model, written only with what
 *     MapView.plan() asked for the changed services, needs zero ops from a full plan(), and
 *     berth's view equals the kernel, including after injected write failures (a full map).
 * A failing seed and step are printed; re-run with BERTH_FUZZ_SEED=<seed> to reproduce.
 */
import test from 'ava';
import { buildDesiredState } from '../../../src/model/desired';
import { IncrementalModel } from '../../../src/model/incremental';
import { VipStore } from '../../../src/model/vipstore';
import type { ContainerInfo, DesiredState, LabelError, NetworkInfo } from '../../../src/model/types';
import { container, snapshot } from './fixtures';
import { MapView } from '../../../src/datapath/view';
import { newContainer, rng, step, type World } from '../../helpers/churn';
import { networkNumbers, type NetContext } from '../../../src/datapath/netlists';
import { backendId, countOps, frontendId, plan, type CurrentFrontend, type CurrentState, type Frontend, type Limits, type Op, type Plan } from '../../../src/datapath/plan';
import type { BackendAddr, SvcVal } from '../../../src/datapath/codec';

const CIDRS = { serviceCidr: '10.96.0.0/28', serviceCidr6: 'fd00:96::/124' };
const HOST = { addresses: ['127.0.0.1', '::1', '10.96.0.5'] };
const NETS: NetworkInfo[] = [
  { id: 'n-a', name: 'a', subnets: ['172.17.0.0/16'], gateways: ['172.17.0.1'] },
  { id: 'n-b', name: 'b', subnets: ['172.18.0.0/16', '10.96.0.8/30'], gateways: ['172.18.0.1'] },
];
const LIMITS: Limits = { maxServiceIds: 64, maxBackends: 64, maxSlots: 8 };
/**
 * Per-client-network lists (datapath/netlists.ts) as berthd plans them: churn connects backends
 * to network b as well, so services get per-network entries; even seeds use crossNetwork allow,
 * odd ones docker (every network without a backend gets an empty list).
 */
const netContext = (seed: number): NetContext => ({ mode: seed % 2 ? 'docker' : 'allow', numbers: networkNumbers(NETS) });

// ---- an honest in-memory model of the two maps, with an optional capacity --------------------

/** One frontend in the in-memory kernel: its master and slot -> backend id, as the map holds them. */
interface KernelFrontend {
  key: Frontend;
  master: SvcVal | null;
  slots: Map<number, number>;
}

class Kernel {
  /** Kept in its own plain form (a Map per frontend), independent of the datapath's SlotTable. */
  private readonly frontends = new Map<string, KernelFrontend>();
  private readonly backends = new Map<number, BackendAddr>();
  /** Service-map capacity (entries); a put beyond it fails like the kernel's E2BIG. */
  capacity = Infinity;

  svcEntries(): number {
    let n = 0;
    for (const cf of this.frontends.values()) n += cf.slots.size + (cf.master ? 1 : 0);
    return n;
  }

  /** What a dump of the maps gives (a fresh copy: plan() must not see later writes). */
  get state(): CurrentState {
    const frontends = new Map<string, CurrentFrontend>();
    for (const [fid, cf] of this.frontends) {
      const slots: (number | undefined)[] = [];
      for (const [s, id] of cf.slots) slots[s - 1] = id;
      frontends.set(fid, { ...cf.key, master: cf.master ? { ...cf.master } : null, slots });
    }
    return { frontends, backends: new Map(this.backends) };
  }

  /** One op; false when the kernel refuses it. Throws when an op's fid or bk is not its key's. */
  write(op: Op): boolean {
    // The view finds an op's frontend by the planner's fid (and a backend's address key by its
    // bk): a wrong one would record the write elsewhere than the kernel did.
    if ((op.op === 'svc-put' || op.op === 'svc-del') && op.fid !== undefined && op.fid !== frontendId(op.key)) {
      throw new Error(`op ${JSON.stringify(op)}: fid is not frontendId(key) ${frontendId(op.key)}`);
    }
    if (op.op === 'backend-put' && op.bk !== undefined && op.bk !== backendId(op.addr)) {
      throw new Error(`op ${JSON.stringify(op)}: bk is not backendId(addr) ${backendId(op.addr)}`);
    }
    switch (op.op) {
      case 'backend-put': this.backends.set(op.id, op.addr); return true;
      case 'backend-del': this.backends.delete(op.id); return true;
      case 'counter-reset': return true;
      case 'svc-put': {
        const fid = frontendId(op.key);
        let cf = this.frontends.get(fid);
        const exists = cf && (op.key.slot === 0 ? cf.master !== null : cf.slots.has(op.key.slot));
        if (!exists && this.svcEntries() >= this.capacity) return false;
        if (!cf) this.frontends.set(fid, (cf = { key: { vip: op.key.vip, port: op.key.port, protocol: op.key.protocol, ...(op.key.net ? { net: op.key.net } : {}) }, master: null, slots: new Map() }));
        if (op.key.slot === 0) cf.master = { ...op.val };
        else cf.slots.set(op.key.slot, op.val.id);
        return true;
      }
      case 'svc-del': {
        const cf = this.frontends.get(frontendId(op.key));
        if (!cf) return true;
        if (op.key.slot === 0) cf.master = null;
        else cf.slots.delete(op.key.slot);
        if (!cf.master && cf.slots.size === 0) this.frontends.delete(frontendId(op.key));
        return true;
      }
    }
  }
}

/**
 * What Datapath.applyPlan does, on the in-memory kernel: per-service ops in phases (a failed
 * service's later ops dropped), then cleanup; the view records exactly the accepted ops.
 */
function apply(p: Plan, kernel: Kernel, view: MapView | null, services: DesiredState['services']): { failed: Set<string>; ops: number } {
  const before = kernel.state;
  const phases: Op['op'][] = ['backend-put', 'counter-reset', 'svc-put', 'svc-del', 'backend-del'];
  const failed = new Set<string>();
  let ops = 0;
  const run = (items: { op: Op; owner: string }[]) => {
    for (const phase of phases) {
      for (const it of items) {
        if (it.op.op !== phase || failed.has(it.owner)) continue;
        if (kernel.write(it.op)) {
          ops++;
          view?.applied(it.op, it.owner);
        } else {
          failed.add(it.owner);
        }
      }
    }
  };
  run([...p.perService].flatMap(([owner, list]) => list.map((op) => ({ op, owner }))));
  // Backends a failed service's slots used before stay (as in the datapath).
  const used = new Set<number>();
  const vipOwner = new Map<string, string>();
  for (const s of services) for (const v of [s.vip, s.vip6]) if (v) vipOwner.set(v, s.name);
  for (const cf of before.frontends.values()) if (failed.has(vipOwner.get(cf.vip) ?? '')) for (const id of cf.slots) if (id !== undefined) used.add(id);
  run(p.cleanup.filter((op) => !(op.op === 'backend-del' && used.has(op.id))).map((op, i) => ({ op, owner: `(cleanup)#${i}` })));
  view?.settle();
  return { failed, ops };
}

/** Maps as addresses (ids are internal): frontend -> [flags, count, backend addresses in slot order]. */
function resolve(s: CurrentState): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [fid, cf] of [...s.frontends].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const addrs: string[] = [];
    cf.slots.forEach((id, i) => {
      if (id !== undefined) addrs.push(`${i + 1}=${s.backends.has(id) ? backendId(s.backends.get(id)!) : `missing#${id}`}`);
    });
    out[fid] = `${cf.master ? `id${cf.master.id} f${cf.master.flags} n${cf.master.count}` : 'no master'} ${addrs.join(' ')}`;
  }
  return out;
}

function errKey(e: LabelError): string {
  return `${e.container}|${e.label}|${e.code}|${e.error}`;
}

function canonical(st: DesiredState): { services: unknown; labelErrors: string[] } {
  return { services: JSON.parse(JSON.stringify(st.services)), labelErrors: st.labelErrors.map(errKey).sort() };
}

function runSeed(seed: number, steps: number): string | null {
  const r = rng(seed);
  const nets = netContext(seed);
  const world: World = { containers: new Map(), order: [], next: 1 };
  let store = VipStore.inMemory();
  let model = new IncrementalModel({ ...CIDRS, store }, HOST);
  model.apply([], [], { networks: NETS });
  const kernel = new Kernel();
  let view = new MapView(LIMITS);
  const history: string[] = [];
  for (let i = 0; i < steps; i++) {
    let what: string;
    let changed: DesiredState['services'] = [];
    let removed: string[] = [];
    if (r() < 0.04) {
      // berthd restarts: the store as saved, the maps as pinned; a full list and a full sync.
      store = VipStore.inMemory(store.list());
      model = new IncrementalModel({ ...CIDRS, store }, HOST);
      const before = VipStore.inMemory(store.list());
      model.resync({ containers: world.order.filter((id) => world.containers.has(id)).map((id) => world.containers.get(id)!), networks: NETS, takenAt: 0 });
      view = MapView.fromState(kernel.state, LIMITS);
      const p = plan(model.services(), kernel.state, { prune: true }, LIMITS, nets);
      apply(p, kernel, view, model.services());
      view.adoptNames(p.serviceIds);
      what = 'berthd restart';
      void before;
    } else {
      const ev = step(r, world);
      what = ev.what;
      const storeBefore = VipStore.inMemory(store.list());
      const d = model.apply(ev.upserts, ev.removed);
      // From scratch: the same containers, in creation order, with the store as it was.
      const scratch = buildDesiredState({ containers: model.containers(), networks: NETS, takenAt: 0 }, HOST, { ...CIDRS, store: storeBefore });
      const inc = canonical(model.state());
      const full = canonical(scratch);
      const fail = (why: string, a: unknown, b: unknown) =>
        `seed ${seed} step ${i} (${what}): ${why}\nincremental: ${JSON.stringify(a)}\nfrom scratch: ${JSON.stringify(b)}\nhistory:\n${history.slice(-8).join('\n')}`;
      if (JSON.stringify(inc.services) !== JSON.stringify(full.services)) return fail('services differ', inc.services, full.services);
      if (JSON.stringify(inc.labelErrors) !== JSON.stringify(full.labelErrors)) return fail('label errors differ', inc.labelErrors, full.labelErrors);
      // Seq numbers only order owners (a reloaded store restarts them after its highest): compare the order.
      const assignments = (st: VipStore) => st.list().map((a) => `${a.kind}/${a.name} ${a.vip} ${a.vip6}`);
      if (JSON.stringify(assignments(store)) !== JSON.stringify(assignments(storeBefore))) return fail('stores differ', store.list(), storeBefore.list());
      const names = new Set([...d.changed.map((s) => s.name), ...d.removed.map((s) => s.name)]);
      for (const n of names) {
        const mine = model.services().filter((s) => s.name === n);
        if (mine.length) changed = changed.concat(mine); else removed.push(n);
      }
      // Now and then the services map is full: the write fails mid-way for some service.
      kernel.capacity = r() < 0.1 ? Math.max(0, countEntries(kernel) + Math.floor(r() * 3)) : Infinity;
      const res = apply(view.plan(changed, removed, nets), kernel, view, changed);
      kernel.capacity = Infinity;
      const drift = view.diff(kernel.state);
      if (drift.serviceEntries || drift.backends) return fail('view differs from the kernel', resolve(view.state), resolve(kernel.state));
      if (res.failed.size) {
        // The next full sync retries: dump (the view is the kernel), full plan, apply.
        const p = plan(model.services(), kernel.state, { prune: true }, LIMITS, nets);
        apply(p, kernel, view, model.services());
        view.adoptNames(p.serviceIds);
        what += ` (full map for ${[...res.failed].join(',')}; resynced)`;
      }
      // Every service's frontends carry its own service id (the counters are per service).
      const idOf = new Map<number, string>();
      for (const sv of model.services()) {
        for (const v of [sv.vip, sv.vip6]) {
          for (const cf of kernel.state.frontends.values()) {
            if (cf.vip !== v || !cf.master) continue;
            const other = idOf.get(cf.master.id);
            if (other !== undefined && other !== sv.name) return fail(`service id ${cf.master.id} shared by ${other} and ${sv.name}`, resolve(view.state), resolve(kernel.state));
            idOf.set(cf.master.id, sv.name);
          }
        }
      }
      const need = plan(model.services(), kernel.state, { prune: true }, LIMITS, nets);
      const n = countOps(need);
      // A plan error (e.g. more backends than LIMITS allow) is a desired-state fact both share.
      if (n.updates + n.deletes > 0) {
        const ops = [...need.perService.values()].flat().concat(need.cleanup);
        return fail(`the maps need ${n.updates + n.deletes} more ops after the incremental update`, ops, resolve(kernel.state));
      }
    }
    history.push(`${i}: ${what}`);
  }
  return null;
}

function countEntries(k: Kernel): number {
  return k.svcEntries();
}

const SEEDS = process.env.BERTH_FUZZ_SEED ? [Number(process.env.BERTH_FUZZ_SEED)] : [1, 2, 3, 4, 5, 6];

// One test per seed: bounded (250 steps, a few seconds each), and ava sees progress per seed.
for (const seed of SEEDS) {
  test.serial(`seed ${seed}: incremental model and map updates equal a full rebuild after every random event`, (t) => {
    t.timeout(120000);
    const failure = runSeed(seed, 250);
    if (failure) t.fail(failure);
    else t.pass();
  });
}

test('the property check can fail: a model that forgets one removal is caught', (t) => {
  // Sanity of the harness itself: drop a container from the model's input without telling the
  // from-scratch build, and the comparison must report a difference.
  const store = VipStore.inMemory();
  const model = new IncrementalModel({ ...CIDRS, store }, HOST);
  const w: World = { containers: new Map(), order: [], next: 1 };
  const r = rng(99);
  const cs = [newContainer(r, w), newContainer(r, w), newContainer(r, w)].map((c) => ({ ...c, labels: { 'berth.service': 'web', 'berth.ports': '80' }, health: 'none' as const }));
  model.apply(cs, []);
  const scratch = buildDesiredState({ containers: cs.slice(1), networks: [], takenAt: 0 }, HOST, { ...CIDRS, store: VipStore.inMemory(store.list()) });
  t.notDeepEqual(canonical(model.state()).services, canonical(scratch).services);
});

test('resync counts drift only for containers the model keeps: clients without berth labels are in every list, never drift', (t) => {
  const model = new IncrementalModel({ ...CIDRS, store: VipStore.inMemory() }, HOST);
  const web = container('web-1', { 'berth.service': 'web', 'berth.ports': '80:8080' }, { created: 1 });
  const client = container('client-1', {}, { created: 2 });
  const bad = container('bad-1', { 'berth.service': 'bad', 'berth.ports': 'eighty' }, { created: 3 });
  const first = model.resync(snapshot([web, client, bad]), HOST);
  t.is(first.containersChanged, 2, 'web and the label-error container are new to the model; the client is not kept');
  const table: [string, ContainerInfo[], number][] = [
    ['the same list again: nothing differed', [web, client, bad], 0],
    ['a client came and went between lists: not drift', [web, bad], 0],
    ['web\'s state changed (a missed die event)', [{ ...web, state: 'exited' }, bad], 1],
    ['web gone, a new client: one removal', [bad, container('client-2', {}, { created: 4 })], 1],
    ['a client gained berth labels (recreated): it is drift now', [bad, container('client-2', { 'berth.service': 'c', 'berth.ports': '80' }, { created: 4 })], 1],
  ];
  for (const [what, list, n] of table) t.is(model.resync(snapshot(list), HOST).containersChanged, n, what);
});

test('resync does not count as drift the changes of containers whose events were pending (snapshot.pending)', (t) => {
  const model = new IncrementalModel({ ...CIDRS, store: VipStore.inMemory() }, HOST);
  const web = container('web-1', { 'berth.service': 'web', 'berth.ports': '80:8080' }, { created: 1 });
  const web2 = container('web-2', { 'berth.service': 'web', 'berth.ports': '80:8080' }, { created: 2 });
  model.resync(snapshot([web, web2]), HOST);
  const exited = { ...web, state: 'exited' as const };
  const table: [string, ReadonlySet<string> | undefined, number][] = [
    ['no pending events: the change is drift', undefined, 2],
    ['web-1 pending: only web-2\'s removal is drift', new Set([web.id]), 1],
    ['web-1 pending by its short id', new Set([web.id.slice(0, 12)]), 1],
    ['both pending: nothing missed', new Set([web.id, web2.id]), 0],
    ['another container pending: both still drift', new Set(['f'.repeat(64)]), 2],
  ];
  for (const [what, pending, n] of table) {
    const m = new IncrementalModel({ ...CIDRS, store: VipStore.inMemory() }, HOST);
    m.resync(snapshot([web, web2]), HOST);
    t.is(m.resync({ ...snapshot([exited]), ...(pending ? { pending } : {}) }, HOST).containersChanged, n, what);
  }
  // The model applies the change either way.
  model.resync({ ...snapshot([exited]), pending: new Set([web.id, web2.id]) }, HOST);
  t.deepEqual(model.state().services.find((s) => s.name === 'web')?.backends ?? [], []);
});
