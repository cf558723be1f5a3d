/**
 * The datapath: berth's socket load balancer in the kernel, driven from pinned BPF maps.
 *
 * open() loads bpf/sock_lb.bpf.o with its maps pinned by name in the pin dir (reused when a
 * previous berthd left them, so VIPs keep working across restarts), attaches the cgroup
 * programs at the verified host root cgroup through pinned bpf_links (the programs outlive
 * berthd; a restart swaps the program behind the existing link instead of attaching twice),
 * writes the host netns cookie and installs the unreachable routes of the VIP ranges.
 * sync() dumps the maps, plans the difference (plan.ts) and applies it.
 */
import { phase } from '../util/phases';
import fs from 'node:fs';
import path from 'node:path';
import type { Service } from '../model/types';
import { loadNative, bpfObjectPath, isNativeError, type BatchResult, type NativeAddon, type NativeError } from '../native';
import type { DatapathApi, DatapathOptions, DatapathStatus, ServiceCounters, SyncResult } from './types';
export { MapView } from './view';
import * as codec from './codec';
import { currentFrom, plan, type CurrentState, type Limits, type Op, type Plan } from './plan';
import { MapView, type ViewDrift } from './view';
import { hostNsPid, resolveCgroupRoot, type CgroupRoot } from './cgroup';
import { ensureRoutes, removeRoutes, routeMetric } from './routes';
import { DatapathError, DatapathErrorCode } from './errors';
import { inBpffs, mkdirp } from '../util/mounts';
import { loadFlows, removeFlows, type FlowsState } from './flows';
import type { NetContext } from './netlists';

export const OBJECT_NAME = 'sock_lb';
export const MAP_NAMES = ['berth_services', 'berth_backends', 'berth_sk_revnat', 'berth_counters', 'berth_config', 'berth_doomed', 'berth_netns'] as const;
type MapName = (typeof MAP_NAMES)[number];
export const ITER_PROGRAM = 'berth_udp_destroy';
/** Elements per batched map write (bounds the encoded buffers alive at once). */
const BATCH = 4096;

/**
 * Ops with the service (owner) each was planned for, as two arrays of one length: the apply path
 * handles every op of a cold start (110,000 at 10,000 services × 4), and an object per op pair
 * was one more object per map entry to allocate and collect.
 */
interface OpList {
  ops: Op[];
  owners: string[];
}

/** The ops of `l` whose index and owner `keep` accepts, in order. */
function filterOps(l: OpList, keep: (i: number, owner: string) => boolean): OpList {
  const out: OpList = { ops: [], owners: [] };
  for (let i = 0; i < l.ops.length; i++) {
    if (!keep(i, l.owners[i])) continue;
    out.ops.push(l.ops[i]);
    out.owners.push(l.owners[i]);
  }
  return out;
}

/** The write phases in order (Datapath.applyOps), and each op kind's place in it. */
const PHASES: Op['op'][] = ['backend-put', 'counter-reset', 'svc-put', 'svc-del', 'backend-del'];
const PHASE_OF: Record<Op['op'], number> = { 'backend-put': 0, 'counter-reset': 1, 'svc-put': 2, 'svc-del': 3, 'backend-del': 4 };
/** Pin name of a cgroup program's link. */
export const linkPinName = (prog: string): string => `link_${prog}`;
/** Pin name of a program kept for later runs (the UDP destroy iterator). */
export const progPinName = (prog: string): string => `prog_${prog}`;

export { DatapathError, DatapathErrorCode } from './errors';

/** 'cgroup/connect4' -> 'connect4'. */
function hookName(section: string): string {
  return section.replace(/^cgroup(_skb)?\//, '');
}

function errText(e: unknown): string {
  if (isNativeError(e)) return `${e.code}: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}

/**
 * Make sure pinDir lies in a bpf filesystem: hosts without systemd boot without /sys/fs/bpf
 * mounted, and then berth mounts one on pinDir's parent itself (pins are what let the programs
 * outlive berthd; the kernel drops an unpinned program with its last fd).
 */
function ensureBpffs(native: NativeAddon, pinDir: string): void {
  const parent = path.dirname(pinDir);
  try {
    if (!inBpffs(parent)) {
      mkdirp(parent);
      native.mountBpffs(parent);
    }
    mkdirp(pinDir, 0o700);
  } catch (e) {
    throw new DatapathError(DatapathErrorCode.BPFFS, `bpfPinDir ${pinDir}: cannot make it a directory in a bpf filesystem (${errText(e)}); berth mounts bpffs on its parent, so the parent must be creatable and mountable`);
  }
}

export class Datapath implements DatapathApi {
  private fds: Record<MapName, number>;
  private iterFd: number;
  /** What berth believes the services and backends maps hold (see view.ts). */
  private view: MapView;
  /** True once a full sync has made the view berth's own (before: adopted from a dump). */
  private synced = false;
  private counts = { services: 0, backends: 0 };
  private closed = false;
  private queue: Promise<unknown> = Promise.resolve();
  /** Maps the kernel has no batch operations for (written element by element). */
  private readonly batchless = new Set<MapName>();
  /** Container id -> its netns cookie (syncClients). */
  private readonly cookies = new Map<string, bigint>();
  /** What berth believes berth_netns holds: netns cookie -> network numbers joined by ','; null before the first syncClients. */
  private netnsView: Map<bigint, string> | null = null;
  /** The balanced-flow programs of crossNetwork `allow` (flows.ts). */
  flows: FlowsState = { matchPin: null, recording: false, error: 'not loaded' };

  private constructor(
    private readonly native: NativeAddon,
    private readonly opts: DatapathOptions,
    private readonly cgroup: { path: string; isHostRoot: boolean },
    private readonly attached: string[],
    fds: Record<MapName, number>,
    iterFd: number,
  ) {
    this.fds = fds;
    this.iterFd = iterFd;
    this.view = new MapView(this.limits);
  }

  private get limits(): Limits {
    return {
      maxServiceIds: this.native.constants.MAX_SERVICE_IDS,
      maxBackends: this.native.constants.MAX_BACKENDS,
      maxSlots: this.native.constants.MAX_SLOTS,
    };
  }

  static async open(opts: DatapathOptions): Promise<Datapath> {
    const native = loadNative();
    const log = opts.logger;
    const drift = codec.checkLayout(native.sizes, native.offsets);
    if (drift.length) throw new DatapathError(DatapathErrorCode.LAYOUT, `codec.ts does not match bpf/lb.h: ${drift.join('; ')}`);
    ensureBpffs(native, opts.pinDir);
    // Routes first: from here on a VIP packet that no hook rewrites can never leave the host.
    await ensureRoutes([opts.serviceCidr, opts.serviceCidr6], routeMetric(opts.pinDir));

    const cg: CgroupRoot = await resolveCgroupRoot(native, opts);
    log.info({ cgroupRoot: cg.path, how: cg.how, isHostRoot: cg.isHostRoot, mounted: cg.mounted }, 'cgroup v2 attach point');
    let obj;
    try {
      // The UDP destroy iterator needs the bpf_sock_destroy kfunc (kernel >= 6.5); without it
      // the load balancer still works, and connected UDP sockets simply keep a removed backend.
      obj = native.loadObject(bpfObjectPath(OBJECT_NAME), opts.pinDir, [ITER_PROGRAM]);
    } catch (e) {
      native.closeFd(cg.fd);
      if (e instanceof Error && /reuse pinned map|mismatch/i.test(e.message)) {
        throw new DatapathError(DatapathErrorCode.OBJECT, `the maps pinned in ${opts.pinDir} do not fit this berth's programs (left by another version?): ` +
          `run \`berth cleanup\` (VIPs stop until berthd restarts) and start again. ${e.message}`);
      }
      throw e;
    }
    const attached: string[] = [];
    let flows: FlowsState = { matchPin: null, recording: false, error: 'crossNetwork docker: not loaded' };
    let ok = false;
    try {
      for (const p of obj.programs) {
        if (!p.section.startsWith('cgroup/')) continue;
        attachCgroup(native, opts.pinDir, cg, p.name, p.fd, p.attachTypeId, log);
        attached.push(hookName(p.section));
      }
      // crossNetwork `allow`: the balanced-flow recorder on the same root (flows.ts).
      if ((opts.crossNetwork ?? 'allow') === 'allow') {
        flows = loadFlows(native, opts, (name, fd, type) => attachCgroup(native, opts.pinDir, cg, name, fd, type, log));
        if (flows.recording) attached.push('egress');
        else log.warn({ reason: flows.error }, 'balanced-flow recording unavailable; crossNetwork allow falls back to opening the backends\' ports between networks');
      } else {
        const removed = removeFlows(native, opts.pinDir);
        if (removed.length) log.info({ removed }, 'crossNetwork docker: balanced-flow recording removed');
      }
      // SO_NETNS_COOKIE (5.14) replaced by a sock_create hook on older kernels (netns_cookie.bpf.c).
      if (netnsCookieShim(native, opts, (name, fd, type) => attachCgroup(native, opts.pinDir, cg, name, fd, type, log), log)) attached.push('sock_create');
      const iter = obj.programs.find((p) => p.name === ITER_PROGRAM);
      if (!iter) throw new DatapathError(DatapathErrorCode.OBJECT, `${OBJECT_NAME}.bpf.o has no ${ITER_PROGRAM} program`);
      const iterPin = path.join(opts.pinDir, progPinName(ITER_PROGRAM));
      fs.rmSync(iterPin, { force: true });
      if (obj.skipped.includes(ITER_PROGRAM)) {
        log.warn({ reason: obj.skipReason?.split('\n').slice(-6).join(' | ') }, 'UDP socket destroy unavailable on this kernel (needs bpf_sock_destroy, >= 6.5); connected UDP clients keep a removed backend');
      } else {
        native.objPin(iter.fd, iterPin);
      }
      ok = true;
    } finally {
      native.closeFd(cg.fd);
      // What was attached stays (pinned); the object's own fds must not leak on failure.
      if (!ok) native.closeObject(obj.handle);
    }
    const fds = {} as Record<MapName, number>;
    try {
      for (const m of MAP_NAMES) fds[m] = native.objGet(path.join(opts.pinDir, m));
    } finally {
      native.closeObject(obj.handle);
    }
    const iterFd = obj.skipped.includes(ITER_PROGRAM) ? -1 : native.objGet(path.join(opts.pinDir, progPinName(ITER_PROGRAM)));
    // The netns whose sockets host-netns-only services (ingress -> 127.0.0.1:proxyPort) serve:
    // berthd's own, which is where it runs Envoy.
    native.mapUpdate(fds.berth_config, codec.encodeU32(0), codec.encodeConfig({ hostNetnsCookie: native.netnsCookie() }));
    const dp = new Datapath(native, opts, { path: cg.path, isHostRoot: cg.isHostRoot }, attached, fds, iterFd);
    dp.flows = flows;
    // Adopt what an earlier berthd left in the maps as the view (kept as is until the first sync).
    dp.view = MapView.fromState(dp.readCurrent(), dp.limits);
    return dp;
  }

  /** Remove everything berth put in the kernel for these options; returns what was removed. */
  static async cleanup(opts: DatapathOptions): Promise<string[]> {
    const removed: string[] = [];
    let native: NativeAddon | null = null;
    try {
      native = loadNative();
    } catch (e) {
      opts.logger.warn({ err: errText(e) }, 'addon not loadable; unpinning without explicit detach');
    }
    if (fs.existsSync(opts.pinDir)) {
      for (const name of fs.readdirSync(opts.pinDir).sort()) {
        const p = path.join(opts.pinDir, name);
        if (name.startsWith('link_') && native) {
          // Detach explicitly: a link someone still holds open would otherwise stay attached.
          try {
            const fd = native.objGet(p);
            try { native.linkDetach(fd); } finally { native.closeFd(fd); }
          } catch (e) {
            opts.logger.warn({ pin: p, err: errText(e) }, 'detaching a pinned link failed; unpinning it');
          }
        }
        // Subdirectories are other parts' pins (the proxy's redirect/): bpffs, no mounts below.
        fs.rmSync(p, { recursive: true, force: true });
        removed.push(`pin ${p}`);
      }
      fs.rmdirSync(opts.pinDir);
      removed.push(opts.pinDir);
    }
    for (const cidr of await removeRoutes([opts.serviceCidr, opts.serviceCidr6], routeMetric(opts.pinDir))) removed.push(`route unreachable ${cidr}`);
    const target = path.join(opts.runDir, 'cgroupv2');
    if (native) {
      try {
        const r = await native.hostUmount({ hostProc: opts.hostProc, target, pid: hostNsPid(opts.hostProc) ?? 1 });
        if (r.unmounted) removed.push(`mount ${target}`);
      } catch (e) {
        opts.logger.warn({ target, err: errText(e) }, 'unmounting berth\'s cgroup2 mount failed');
      }
    }
    return removed;
  }

  /** Decode the services and backends maps. */
  private readCurrent(): CurrentState {
    const n = this.native;
    const svc = n.mapDump(this.fds.berth_services);
    const be = n.mapDump(this.fds.berth_backends);
    const sk = codec.SIZES.svcKey, sv = codec.SIZES.svcVal, bk = codec.SIZES.backendKey, bv = codec.SIZES.backend;
    const svcEntries = [];
    for (let i = 0; i < svc.count; i++) {
      try {
        svcEntries.push({ key: codec.decodeSvcKey(svc.keys, i * sk), val: codec.decodeSvcVal(svc.values, i * sv) });
      } catch (e) {
        this.opts.logger.warn({ err: errText(e) }, 'undecodable service entry ignored');
      }
    }
    const beEntries = [];
    for (let i = 0; i < be.count; i++) {
      try {
        beEntries.push({ id: codec.decodeBackendKey(be.keys, i * bk), addr: codec.decodeBackend(be.values, i * bv) });
      } catch (e) {
        this.opts.logger.warn({ err: errText(e) }, 'undecodable backend entry ignored');
      }
    }
    this.counts = { ...this.counts, services: svc.count, backends: be.count };
    return currentFrom(svcEntries, beEntries);
  }

  /** Which map an op writes, and whether it deletes. */
  private static target(op: Op): { map: MapName; del: boolean } {
    switch (op.op) {
      case 'backend-put': return { map: 'berth_backends', del: false };
      case 'backend-del': return { map: 'berth_backends', del: true };
      case 'svc-put': return { map: 'berth_services', del: false };
      case 'svc-del': return { map: 'berth_services', del: true };
      case 'counter-reset': return { map: 'berth_counters', del: false };
    }
  }

  private encodeKey(op: Op): Buffer {
    switch (op.op) {
      case 'backend-put': case 'backend-del': return codec.encodeBackendKey(op.id);
      case 'svc-put': case 'svc-del': return codec.encodeSvcKey(op.key);
      case 'counter-reset': return codec.encodeU32(op.id);
    }
  }

  /** Bytes of one key and one value of the map an op writes (the batch buffers' strides). */
  private sizesOf(op: Op): { key: number; value: number } {
    switch (op.op) {
      case 'backend-put': case 'backend-del': return { key: codec.SIZES.backendKey, value: codec.SIZES.backend };
      case 'svc-put': case 'svc-del': return { key: codec.SIZES.svcKey, value: codec.SIZES.svcVal };
      case 'counter-reset': return { key: 4, value: Math.ceil(codec.SIZES.counters / 8) * 8 * this.native.numPossibleCpus() };
    }
  }

  /**
   * Encode a batch (`count` ops of `all` from `from`) into one buffer of keys and one of values,
   * element i at i × size:
   * no buffer per element (a cold start at 10,000 services × 4 writes 100,000 elements).
   * Counter resets write zeroes: their value bytes stay as allocated.
   */
  private encodeBatch(all: Op[], from: number, count: number, values: boolean): { keys: Buffer; values: Buffer | null } {
    const z = this.sizesOf(all[from]);
    const keys = Buffer.alloc(z.key * count);
    const vals = values ? Buffer.alloc(z.value * count) : null;
    for (let i = 0; i < count; i++) {
      const op = all[from + i];
      switch (op.op) {
        case 'backend-put':
          codec.encodeU32Into(keys, i * z.key, op.id);
          codec.encodeBackendInto(vals!, i * z.value, op.addr);
          break;
        case 'backend-del': codec.encodeU32Into(keys, i * z.key, op.id); break;
        case 'svc-put':
          codec.encodeSvcKeyInto(keys, i * z.key, op.key);
          codec.encodeSvcValInto(vals!, i * z.value, op.val);
          break;
        case 'svc-del': codec.encodeSvcKeyInto(keys, i * z.key, op.key); break;
        case 'counter-reset': codec.encodeU32Into(keys, i * z.key, op.id); break;
      }
    }
    return { keys, values: vals };
  }

  private encodeValue(op: Op): Buffer {
    switch (op.op) {
      case 'backend-put': return codec.encodeBackend(op.addr);
      case 'svc-put': return codec.encodeSvcVal(op.val);
      case 'counter-reset': return Buffer.alloc(Math.ceil(codec.SIZES.counters / 8) * 8 * this.native.numPossibleCpus());
      default: throw new DatapathError(DatapathErrorCode.CODEC, `${op.op} has no value`);
    }
  }

  /**
   * Write one run of ops (all on one map, all puts or all deletes) in order: one batch syscall,
   * or element by element where the kernel has no batch ops for the map. An element that fails
   * is reported for its owner, whose later elements are dropped; the others go on. A delete of
   * a key that is not there counts as done. Appends the ops that were written to `written`.
   */
  private writeRun(map: MapName, del: boolean, run: OpList, failed: Set<string>, onError: (owner: string, e: Error) => void, written: OpList): void {
    const n = this.native, fd = this.fds[map];
    let rest = failed.size ? filterOps(run, (_, owner) => !failed.has(owner)) : run;
    // rest.ops[from..] is what is left to write (an index, not a copy of the tail per chunk).
    let from = 0;
    while (from < rest.ops.length) {
      let r: BatchResult;
      const left = rest.ops.length - from;
      if (this.batchless.has(map)) {
        r = { done: left, error: null, unsupported: false };
        for (let i = 0; i < left; i++) {
          const op = rest.ops[from + i];
          try {
            if (del) n.mapDelete(fd, this.encodeKey(op));
            else n.mapUpdate(fd, this.encodeKey(op), this.encodeValue(op));
          } catch (e) {
            r = { done: i, error: e as NativeError, unsupported: false };
            break;
          }
        }
      } else {
        // At most BATCH elements per syscall: the encoded buffers of one batch are alive at
        // once, and 110,000 of them raised berthd's peak RSS by ~50 MB (npm run bench, cold).
        const count = Math.min(BATCH, left);
        const b = this.encodeBatch(rest.ops, from, count, !del);
        r = del ? n.mapDeleteBatch(fd, b.keys, count) : n.mapUpdateBatch(fd, b.keys, b.values!, count);
        if (r.unsupported) {
          this.opts.logger.info({ map }, 'no batch map operations on this kernel; writing element by element');
          this.batchless.add(map);
          continue;
        }
      }
      for (let i = 0; i < r.done; i++) {
        written.ops.push(rest.ops[from + i]);
        written.owners.push(rest.owners[from + i]);
      }
      if (!r.error) {
        from += r.done; // the next chunk, or nothing left
        continue;
      }
      const at = from + r.done;
      const bad = rest.ops[at], owner = rest.owners[at];
      if (del && r.error.code === 'ENOENT') {
        written.ops.push(bad);
        written.owners.push(owner);
      } else {
        onError(owner, r.error);
        failed.add(owner);
      }
      rest = filterOps(rest, (i, o) => i > at && !failed.has(o));
      from = 0;
    }
  }

  /**
   * Apply ops in runs by phase (below) and, inside a phase, one run per map. Each owner's own
   * order is kept: its ops are taken in order into the phases, and the phase order is the order
   * plan.ts emits per frontend: backends, counters, service entries (slots, then the master that
   * makes them visible, or the smaller master first when shrinking), then deletions of tail
   * slots and unused backends. Services never depend on each other's writes (each one writes
   * the backends it uses), so batching across services changes nothing a reader can see.
   * Returns the ops written, with their owners.
   */
  private applyOps(items: OpList, failed: Set<string>, onError: (owner: string, e: Error) => void): OpList {
    // One pass sorts the ops into their phases (stable: each owner's order is kept).
    const runs: OpList[] = PHASES.map(() => ({ ops: [], owners: [] }));
    for (let i = 0; i < items.ops.length; i++) {
      const run = runs[PHASE_OF[items.ops[i].op]];
      run.ops.push(items.ops[i]);
      run.owners.push(items.owners[i]);
    }
    const written: OpList = { ops: [], owners: [] };
    for (const run of runs) {
      if (!run.ops.length) continue;
      const t = Datapath.target(run.ops[0]);
      this.writeRun(t.map, t.del, run, failed, onError, written);
    }
    return written;
  }

  /**
   * Full sync: dump the maps, count where they differ from berth's view (drift someone else
   * made: `drift`), adopt the dump as the view, plan every service with plan() and apply it (which
   * repairs that drift and retries writes that failed before). Syncs and updates run one at a time.
   */
  sync(services: Service[], opts: { prune: boolean; nets?: NetContext }): Promise<SyncResult> {
    return this.enqueue(() => {
      const started = process.hrtime.bigint();
      const cur = this.readCurrent();
      phase('maps dumped');
      const drift: ViewDrift | null = this.synced ? this.view.diff(cur) : null;
      // The view is rebuilt from the dump only where they differ: a periodic sync that finds the
      // maps as berth left them keeps its view, instead of replacing ~50,000 long-lived objects
      // (at 10,000 services × 4) that the garbage collector has to move and free every period.
      if (!drift || drift.serviceEntries + drift.backends > 0) this.view = MapView.fromState(cur, this.limits, this.view.ids());
      phase('view built from the dump');
      const p = plan(services, cur, opts, this.limits, opts.nets);
      phase('full sync planned');
      const r = this.applyPlan(p, services, cur);
      phase('map writes done');
      this.view.adoptNames(r.serviceIds);
      if (opts.prune) this.synced = true;
      return r.done(started, drift ? { ...drift, plan: r.updates + r.deletes } : undefined);
    });
  }

  /**
   * Incremental update: only these services (changed: their current state; removed: names) are
   * planned, against berth's in-memory view of the maps (no dump), and only their entries are
   * written. The view is updated with exactly what the kernel accepted. `nets`: per-client-network
   * lists (netlists.ts) of these services, written and removed with them.
   */
  update(changed: Service[], removed: string[], opts: { nets?: NetContext } = {}): Promise<SyncResult> {
    return this.enqueue(() => {
      const started = process.hrtime.bigint();
      const p = this.view.plan(changed, removed, opts.nets);
      return this.applyPlan(p, changed, this.view.state).done(started);
    });
  }

  private enqueue(fn: () => Promise<SyncResult>): Promise<SyncResult> {
    const next = this.queue.then(() => {
      if (this.closed) throw new DatapathError(DatapathErrorCode.CLOSED, 'datapath is closed');
      return fn();
    });
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Apply a plan, recording every accepted op in the view. */
  private applyPlan(p: Plan, services: Service[], cur: CurrentState): { serviceIds: Map<string, number>; updates: number; deletes: number; done: (started: bigint, drift?: SyncResult['drift']) => Promise<SyncResult> } {
    const errors = [...p.errors];
    let updates = 0, deletes = 0;
    const failed = new Set<string>();
    const record = (op: Op, owner: string): void => {
      this.view.applied(op, owner);
      if (op.op === 'svc-del' || op.op === 'backend-del') deletes++; else updates++;
    };
    // E2BIG/ENOSPC on a full map: that service stays as it was (or half-grown, its master still
    // naming the old count); the others go on. (Ops and owners as two arrays: no object per op,
    // and a cold start at 10,000 services × 4 writes 110,000.)
    const items: OpList = { ops: [], owners: [] };
    for (const [service, ops] of p.perService) {
      for (const op of ops) {
        items.ops.push(op);
        items.owners.push(service);
      }
    }
    const done = this.applyOps(items, failed, (service, e) => errors.push({ service, error: `map update failed: ${errText(e)}` }));
    for (let i = 0; i < done.ops.length; i++) record(done.ops[i], done.owners[i]);
    // Backends still referenced by a failed service's current slots must survive.
    const keep = new Set<number>();
    if (failed.size) {
      const wanted = new Map<string, string>();
      for (const s of services) for (const v of [s.vip, s.vip6]) if (v) wanted.set(codec.canonicalIp(v), s.name);
      for (const cf of cur.frontends.values()) {
        const owner = wanted.get(cf.vip);
        if (owner && failed.has(owner)) for (const id of cf.slots) if (id !== undefined) keep.add(id);
      }
    }
    const removedIds = new Set<number>();
    // Each cleanup op is its own owner: one failure does not stop the rest.
    const cleanupOps = p.cleanup.filter((op) => !(op.op === 'backend-del' && keep.has(op.id)));
    const cleanup: OpList = { ops: cleanupOps, owners: cleanupOps.map((_, i) => `(cleanup)#${i}`) };
    const cleaned = this.applyOps(cleanup, new Set(), (_, e) => errors.push({ service: '(cleanup)', error: errText(e) }));
    for (let i = 0; i < cleaned.ops.length; i++) {
      const op = cleaned.ops[i];
      record(op, cleaned.owners[i]);
      if (op.op === 'backend-del') removedIds.add(op.id);
    }
    this.view.settle();
    const serviceIds = new Map([...p.serviceIds].filter(([name]) => !failed.has(name)));
    const gone = p.removedBackends.filter((b) => removedIds.has(b.id)).map((b) => b.addr);
    return {
      serviceIds, updates, deletes,
      done: async (started, drift) => {
        if (gone.length) await this.destroyUdpSockets(gone);
        return { updates, deletes, errors, durationMs: Number(process.hrtime.bigint() - started) / 1e6, ...(drift ? { drift } : {}) };
      },
    };
  }

  /**
   * Destroy connected UDP sockets whose peer is one of these backends, in every network
   * namespace on the host (an iter/udp run only sees its own netns). Best effort: logged.
   */
  async destroyUdpSockets(backends: codec.BackendAddr[]): Promise<{ runs: number; errors: string[] }> {
    const n = this.native, fd = this.fds.berth_doomed;
    if (this.iterFd < 0) return { runs: 0, errors: ['UDP socket destroy unavailable on this kernel'] };
    const batch = backends.slice(0, n.constants.MAX_DESTROY);
    for (const a of batch) n.mapUpdate(fd, codec.encodeDestroyKey(a), Buffer.from([1]));
    try {
      const r = await n.runIter(this.iterFd, netnsPaths(this.opts.hostProc));
      if (r.errors.length) this.opts.logger.debug({ errors: r.errors.slice(0, 5) }, 'some network namespaces were not walked');
      return r;
    } finally {
      for (const a of batch) n.mapDelete(fd, codec.encodeDestroyKey(a));
    }
  }

  /**
   * Make berth_netns map each client container's netns cookie to its network numbers
   * (netlists.ts clientNetworks), writing only the difference. A container's cookie is learned
   * once (cached by container id; dropped as soon as the container is not in `clients`, i.e.
   * stopped, so a restarted container, which has a new netns, is resolved again): its first process from the container's cgroup v2
   * `cgroup.procs` (cgroupfs and systemd drivers), then SO_NETNS_COOKIE from a socket made in
   * `<hostProc>/<pid>/ns/net`. No Docker call: a cold start with thousands of containers makes no
   * inspect. Containers whose netns cannot be found yet are left out (they get list 0 until the
   * next reconcile) and counted in the result. O(clients) with a map dump: for full syncs; the
   * result's `drift` counts entries the map held that berth's view did not expect (changed by
   * someone else), repaired here. Between full syncs, updateClients() writes single containers.
   */
  syncClients(clients: { id: string; nets: number[] }[]): { written: number; deleted: number; unresolved: string[]; drift: number } {
    const n = this.native;
    const want = new Map<bigint, number[]>();
    const unresolved: string[] = [];
    const live = new Set<string>();
    for (const c of clients) {
      live.add(c.id);
      const cookie = this.cachedCookieOf(c.id);
      if (cookie === null) {
        unresolved.push(c.id);
        continue;
      }
      want.set(cookie, c.nets);
    }
    for (const id of [...this.cookies.keys()]) if (!live.has(id)) this.cookies.delete(id);
    const have = this.dumpNetns();
    let drift = 0;
    if (this.netnsView) {
      for (const [cookie, nets] of have) if (this.netnsView.get(cookie) !== nets) drift++;
      for (const cookie of this.netnsView.keys()) if (!have.has(cookie)) drift++;
    }
    // The view is the kernel's from here on; each write below updates it once it succeeded.
    const view = (this.netnsView = have);
    let written = 0, deleted = 0;
    for (const [cookie, nets] of want) {
      const text = nets.join(',');
      if (view.get(cookie) === text) continue;
      n.mapUpdate(this.fds.berth_netns, codec.encodeNetnsKey(cookie), codec.encodeClientNets(nets));
      view.set(cookie, text);
      written++;
    }
    for (const cookie of [...view.keys()]) {
      if (want.has(cookie)) continue;
      n.mapDelete(this.fds.berth_netns, codec.encodeNetnsKey(cookie));
      view.delete(cookie);
      deleted++;
    }
    return { written, deleted, unresolved, drift };
  }

  /**
   * berth_netns for these containers only (an event's), against berth's view of the map: no dump
   * and no walk of the other containers, so the cost follows the change, not the host. A
   * container with `nets` null is no client any more: its cached cookie and entry go (a restarted
   * container has a new netns and is resolved again). Before the first syncClients the view is
   * taken from one dump. A failed write throws with the view still equal to the map (the next
   * full syncClients repairs the rest).
   */
  updateClients(clients: { id: string; nets: number[] | null }[]): { written: number; deleted: number; unresolved: string[] } {
    const n = this.native;
    const view = (this.netnsView ??= this.dumpNetns());
    const unresolved: string[] = [];
    let written = 0, deleted = 0;
    for (const c of clients) {
      if (c.nets === null) {
        const cookie = this.cookies.get(c.id);
        this.cookies.delete(c.id);
        if (cookie === undefined || !view.has(cookie)) continue;
        n.mapDelete(this.fds.berth_netns, codec.encodeNetnsKey(cookie));
        view.delete(cookie);
        deleted++;
        continue;
      }
      const cookie = this.cachedCookieOf(c.id);
      if (cookie === null) {
        unresolved.push(c.id);
        continue;
      }
      const text = c.nets.join(',');
      if (view.get(cookie) === text) continue;
      n.mapUpdate(this.fds.berth_netns, codec.encodeNetnsKey(cookie), codec.encodeClientNets(c.nets));
      view.set(cookie, text);
      written++;
    }
    return { written, deleted, unresolved };
  }

  /** berth_netns as the kernel holds it: netns cookie -> network numbers joined by ','. */
  private dumpNetns(): Map<bigint, string> {
    const have = new Map<bigint, string>();
    const dump = this.native.mapDump(this.fds.berth_netns);
    const ks = 8, vs = codec.SIZES.clientNets;
    for (let i = 0; i < dump.count; i++) have.set(codec.decodeNetnsKey(dump.keys, i * ks), codec.decodeClientNets(dump.values, i * vs).join(','));
    return have;
  }

  /** cookieOf, remembered per container id once found (a container keeps its netns while it runs). */
  private cachedCookieOf(id: string): bigint | null {
    const known = this.cookies.get(id);
    if (known !== undefined) return known;
    const got = this.cookieOf(id);
    if (got !== null) this.cookies.set(id, got);
    return got;
  }

  /** A running container's netns cookie, or null when its cgroup or process cannot be found. */
  private cookieOf(id: string): bigint | null {
    const root = this.cgroup.path;
    for (const dir of [`docker/${id}`, `system.slice/docker-${id}.scope`]) {
      let pid = '';
      try {
        pid = fs.readFileSync(path.join(root, dir, 'cgroup.procs'), 'utf8').split('\n')[0].trim();
      } catch {
        continue;
      }
      if (!/^\d+$/.test(pid)) continue;
      try {
        return this.native.netnsCookie(path.join(this.opts.hostProc, pid, 'ns', 'net'));
      } catch (e) {
        this.opts.logger.debug({ container: id, err: errText(e) }, 'netns cookie of a container not readable');
        return null;
      }
    }
    return null;
  }

  /** Entry counts from berth's view of the maps (equal to the kernel's; no map walk). */
  status(): DatapathStatus {
    if (!this.closed) this.counts = this.view.counts();
    return {
      cgroupRoot: this.cgroup.path,
      cgroupIsHostRoot: this.cgroup.isHostRoot,
      attached: [...this.attached],
      counts: { ...this.counts },
      flows: { ...this.flows },
    };
  }

  counters(): Map<string, ServiceCounters> {
    const out = new Map<string, ServiceCounters>();
    if (this.closed) return out;
    for (const [name, id] of this.view.ids()) {
      const v = this.native.mapLookup(this.fds.berth_counters, codec.encodeU32(id));
      out.set(name, v ? codec.decodeCountersPercpu(v) : { connects: 0, noBackend: 0 });
    }
    return out;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of Object.values(this.fds)) this.native.closeFd(fd);
    if (this.iterFd >= 0) this.native.closeFd(this.iterFd);
  }
}

/**
 * Attach one cgroup program through a pinned link, idempotently:
 *  - pinned link on this cgroup: swap its program for the freshly loaded one (an upgrade keeps
 *    exactly one attachment, and no moment without one);
 *  - pinned link elsewhere (cgroupRoot changed): detach and replace it;
 *  - none: create and pin.
 */
function attachCgroup(native: NativeAddon, pinDir: string, cg: CgroupRoot, name: string, progFd: number, attachTypeId: number, log: DatapathOptions['logger']): void {
  const pin = path.join(pinDir, linkPinName(name));
  if (fs.existsSync(pin)) {
    let fd = -1;
    try {
      fd = native.objGet(pin);
      const info = native.linkInfo(fd);
      if (info.cgroupId === cg.cgroupId) {
        native.linkUpdate(fd, progFd);
        log.debug({ prog: name, link: info.id }, 'adopted pinned link');
        return;
      }
      log.warn({ prog: name, was: String(info.cgroupId), now: String(cg.cgroupId) }, 'pinned link is on another cgroup; moving it');
      native.linkDetach(fd);
    } catch (e) {
      log.warn({ prog: name, err: errText(e) }, 'pinned link unusable; replacing it');
    } finally {
      if (fd >= 0) native.closeFd(fd);
    }
    fs.rmSync(pin, { force: true });
  }
  const link = native.linkCreate(progFd, cg.fd, attachTypeId);
  try {
    native.objPin(link, pin);
  } finally {
    native.closeFd(link);
  }
}

export const NETNS_COOKIE_OBJECT = 'netns_cookie';
export const NETNS_COOKIE_PROGRAM = 'berth_netns_cookie';

/**
 * Make sure berth can learn netns cookies (native.netnsCookie(): its own netns for host-only
 * VIPs, containers' for per-network backend lists). Linux >= 5.14 has getsockopt(SO_NETNS_COOKIE)
 * and nothing is loaded. Before, bpf/netns_cookie.bpf.o (cgroup/sock_create, Linux 5.7) is
 * attached at the root cgroup with `attach`: it hands the cookie to a probe socket that
 * native.netnsCookie() makes when the option is missing. A link an earlier berthd pinned is
 * updated, whatever the kernel (it touches only the probe sockets). Returns whether it is
 * attached; throws a DatapathError (OBJECT) naming the kernel features when neither way works.
 */
function netnsCookieShim(native: NativeAddon, opts: DatapathOptions, attach: (name: string, progFd: number, attachTypeId: number) => void, log: DatapathOptions['logger']): boolean {
  const pinned = fs.existsSync(path.join(opts.pinDir, linkPinName(NETNS_COOKIE_PROGRAM)));
  if (!pinned) {
    try {
      native.netnsCookie();
      return false;
    } catch (e) {
      if (!isNativeError(e) || e.code !== 'ENOPROTOOPT') throw e;
    }
  }
  const missing = 'this kernel has no getsockopt(SO_NETNS_COOKIE) (Linux 5.14), and berth\'s replacement for it ' +
    '(bpf_get_netns_cookie in a cgroup/sock_create program, Linux 5.7) does not work';
  let obj;
  try {
    obj = native.loadObject(bpfObjectPath(NETNS_COOKIE_OBJECT), opts.pinDir, []);
  } catch (e) {
    throw new DatapathError(DatapathErrorCode.OBJECT, `${missing}: ${errText(e).split('\n').slice(-3).join(' | ')}`);
  }
  try {
    const p = obj.programs.find((x) => x.name === NETNS_COOKIE_PROGRAM);
    if (!p) throw new DatapathError(DatapathErrorCode.OBJECT, `${NETNS_COOKIE_OBJECT}.bpf.o has no ${NETNS_COOKIE_PROGRAM} program`);
    attach(p.name, p.fd, p.attachTypeId);
  } finally {
    native.closeObject(obj.handle);
  }
  try {
    native.netnsCookie();
  } catch (e) {
    throw new DatapathError(DatapathErrorCode.OBJECT, `${missing}: attached, but the probe socket still gets no cookie (${errText(e)})`);
  }
  if (!pinned) log.warn({}, 'getsockopt(SO_NETNS_COOKIE) is missing (kernel < 5.14): a cgroup sock_create hook hands netns cookies to berth\'s probe sockets instead');
  return true;
}

/** One nsfs path per distinct network namespace of the host's processes. */
export function netnsPaths(hostProc: string): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  let pids: string[] = [];
  try {
    pids = fs.readdirSync(hostProc).filter((d) => /^\d+$/.test(d));
  } catch {
    return out;
  }
  for (const pid of pids) {
    const p = path.join(hostProc, pid, 'ns', 'net');
    try {
      const st = fs.statSync(p, { bigint: true });
      const id = `${st.dev}:${st.ino}`;
      if (seen.has(id)) continue;
      seen.add(id);
      out.push(p);
    } catch {
      // The process exited, or is a kernel thread without a readable ns link.
    }
  }
  return out;
}
