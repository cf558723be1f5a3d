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
import fs from 'node:fs';
import path from 'node:path';
import type { Service } from '../model/types';
import { loadNative, bpfObjectPath, isNativeError, type NativeAddon } from '../native';
import type { DatapathApi, DatapathOptions, DatapathStatus, ServiceCounters, SyncResult } from './types';
import * as codec from './codec';
import { currentFrom, plan, type CurrentState, type Op } from './plan';
import { hostNsPid, resolveCgroupRoot, type CgroupRoot } from './cgroup';
import { ensureRoutes, removeRoutes, routeMetric } from './routes';
import { DatapathError, DatapathErrorCode } from './errors';
import { inBpffs, mkdirp } from '../util/mounts';

export const OBJECT_NAME = 'sock_lb';
export const MAP_NAMES = ['berth_services', 'berth_backends', 'berth_revnat', 'berth_counters', 'berth_config', 'berth_doomed'] as const;
type MapName = (typeof MAP_NAMES)[number];
export const ITER_PROGRAM = 'berth_udp_destroy';
const COUNTS_MAX_AGE_MS = 5000;
/** Pin name of a cgroup program's link. */
export const linkPinName = (prog: string): string => `link_${prog}`;
/** Pin name of a program kept for later runs (the UDP destroy iterator). */
export const progPinName = (prog: string): string => `prog_${prog}`;

export { DatapathError, DatapathErrorCode } from './errors';

/** 'cgroup/connect4' -> 'connect4'. */
function hookName(section: string): string {
  return section.replace(/^cgroup\//, '');
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
  private serviceIds = new Map<string, number>();
  private counts = { services: 0, backends: 0, revnat: 0 };
  private countsAt = 0;
  private closed = false;
  private queue: Promise<unknown> = Promise.resolve();

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
    let ok = false;
    try {
      for (const p of obj.programs) {
        if (!p.section.startsWith('cgroup/')) continue;
        attachCgroup(native, opts.pinDir, cg, p.name, p.fd, p.attachTypeId, log);
        attached.push(hookName(p.section));
      }
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
    // Count what an earlier berthd left in the maps (adopted as is until the first sync).
    dp.readCurrent();
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

  private apply(op: Op): void {
    const n = this.native, f = this.fds;
    switch (op.op) {
      case 'backend-put':
        n.mapUpdate(f.berth_backends, codec.encodeBackendKey(op.id), codec.encodeBackend(op.addr));
        return;
      case 'backend-del':
        n.mapDelete(f.berth_backends, codec.encodeBackendKey(op.id));
        return;
      case 'svc-put':
        n.mapUpdate(f.berth_services, codec.encodeSvcKey(op.key), codec.encodeSvcVal(op.val));
        return;
      case 'svc-del':
        n.mapDelete(f.berth_services, codec.encodeSvcKey(op.key));
        return;
      case 'counter-reset': {
        const ncpu = n.numPossibleCpus();
        n.mapUpdate(f.berth_counters, codec.encodeU32(op.id), Buffer.alloc(Math.ceil(codec.SIZES.counters / 8) * 8 * ncpu));
        return;
      }
    }
  }

  /** Syncs run one at a time (each plans against the maps the previous one left). */
  sync(services: Service[], opts: { prune: boolean }): Promise<SyncResult> {
    const next = this.queue.then(() => this.syncNow(services, opts));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async syncNow(services: Service[], opts: { prune: boolean }): Promise<SyncResult> {
    if (this.closed) throw new DatapathError(DatapathErrorCode.CLOSED, 'datapath is closed');
    const started = process.hrtime.bigint();
    const cur = this.readCurrent();
    const p = plan(services, cur, opts, {
      maxServiceIds: this.native.constants.MAX_SERVICE_IDS,
      maxBackends: this.native.constants.MAX_BACKENDS,
      maxSlots: this.native.constants.MAX_SLOTS,
    });
    const errors = [...p.errors];
    let updates = 0, deletes = 0;
    const failed = new Set<string>();
    for (const [service, ops] of p.perService) {
      for (const op of ops) {
        try {
          this.apply(op);
          if (op.op === 'svc-del' || op.op === 'backend-del') deletes++; else updates++;
        } catch (e) {
          // E2BIG/ENOSPC on a full map: this service stays as it was (or half-grown, its master
          // still naming the old count); the others go on.
          failed.add(service);
          errors.push({ service, error: `map update failed: ${errText(e)}` });
          break;
        }
      }
    }
    // Backends still referenced by a failed service's current slots must survive.
    const keep = new Set<number>();
    if (failed.size) {
      const wanted = new Map<string, string>();
      for (const s of services) for (const v of [s.vip, s.vip6]) if (v) wanted.set(codec.canonicalIp(v), s.name);
      for (const cf of cur.frontends.values()) {
        const owner = wanted.get(cf.vip);
        if (owner && failed.has(owner)) for (const id of cf.slots.values()) keep.add(id);
      }
    }
    const removedIds = new Set<number>();
    for (const op of p.cleanup) {
      if (op.op === 'backend-del' && keep.has(op.id)) continue;
      try {
        this.apply(op);
        deletes++;
        if (op.op === 'backend-del') removedIds.add(op.id);
      } catch (e) {
        errors.push({ service: '(cleanup)', error: errText(e) });
      }
    }
    for (const [name, id] of p.serviceIds) if (!failed.has(name) || this.serviceIds.get(name) === undefined) this.serviceIds.set(name, id);
    for (const name of [...this.serviceIds.keys()]) if (!p.serviceIds.has(name) && opts.prune) this.serviceIds.delete(name);
    const gone = p.removedBackends.filter((b) => removedIds.has(b.id)).map((b) => b.addr);
    if (gone.length) await this.destroyUdpSockets(gone);
    this.countsAt = 0;
    return { updates, deletes, errors, durationMs: Number(process.hrtime.bigint() - started) / 1e6 };
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
   * Entry counts need full map walks (the kernel keeps no element count for hash maps): at 100k
   * services that is most of a second, so status() refreshes them at most every few seconds.
   */
  status(): DatapathStatus {
    const now = Date.now();
    if (!this.closed && now - this.countsAt > COUNTS_MAX_AGE_MS) {
      try {
        const n = this.native;
        this.counts = {
          services: n.mapDump(this.fds.berth_services).count,
          backends: n.mapDump(this.fds.berth_backends).count,
          revnat: n.mapDump(this.fds.berth_revnat).count,
        };
        this.countsAt = now;
      } catch (e) {
        this.opts.logger.warn({ err: errText(e) }, 'reading map sizes failed');
      }
    }
    return {
      cgroupRoot: this.cgroup.path,
      cgroupIsHostRoot: this.cgroup.isHostRoot,
      attached: [...this.attached],
      counts: { ...this.counts },
    };
  }

  counters(): Map<string, ServiceCounters> {
    const out = new Map<string, ServiceCounters>();
    if (this.closed) return out;
    for (const [name, id] of this.serviceIds) {
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
