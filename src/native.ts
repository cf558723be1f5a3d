/**
 * The one typed declaration of berth's native addon (native/src/*.cc, built by
 * `npm run build:native` into build/native/Release/berth.node) and its loader.
 *
 * Every function that fails throws a NativeError: `errno` (number), `code` ('E2BIG', 'ENOENT', ...)
 * and `syscall` (the operation, e.g. 'bpf_map_update_elem berth_services'); libbpf's own
 * explanation (verifier log, pinned-map mismatch) is appended to the message.
 * Fast syscalls are synchronous; anything that forks, enters namespaces or walks sockets returns
 * a Promise and runs off the main thread.
 */
import path from 'node:path';
import { packageRoot } from './util/root';

/** The Error shape every addon function throws. */
export interface NativeError extends Error {
  errno: number;
  code: string;
  syscall: string;
}

/** What a batched map write did: elements done in order, and the error of the next one. */
export interface BatchResult {
  done: number;
  error: NativeError | null;
  /** The kernel has no batch operations for this map (done 0): write element by element. */
  unsupported: boolean;
}

export function isNativeError(e: unknown): e is NativeError {
  return e instanceof Error && typeof (e as Partial<NativeError>).code === 'string' && typeof (e as Partial<NativeError>).errno === 'number';
}

/** Struct sizes of bpf/lb.h as the C compiler laid them out. */
export interface LbSizes {
  svcKey: number; svcVal: number; backendKey: number; backend: number;
  skRevnat: number; skRevnatEnt: number; counters: number; config: number; destroyKey: number;
  redir4Key: number; redir6Key: number; redirVal: number; flowKey: number; clientNets: number;
}

/** Field offsets of bpf/lb.h that codec.ts relies on. */
export interface LbOffsets {
  svcKeyPort: number; svcKeyProto: number; svcKeyFamily: number; svcKeySlot: number; svcKeyNet: number;
  svcValCount: number; svcValFlags: number; backendPort: number; backendFamily: number;
  skRevnatEntVip: number; skRevnatNext: number; countersNoBackend: number;
  destroyKeyPort: number; destroyKeyFamily: number; redir4KeyPort: number; redir6KeyPort: number;
}

/** #defines of bpf/lb.h. */
export interface LbConstants {
  MAX_SERVICE_ENTRIES: number; MAX_BACKENDS: number; MAX_SERVICE_IDS: number; SK_REVNAT_SLOTS: number;
  MAX_DESTROY: number; MAX_SLOTS: number; SVC_F_HOST_NETNS: number; FAMILY_V4: number; FAMILY_V6: number;
}

export interface LoadedProgram {
  name: string;
  /** ELF section, e.g. 'cgroup/connect4'. */
  section: string;
  fd: number;
  /** libbpf's name of the program type, e.g. 'cgroup_sock_addr'. */
  type: string;
  /** libbpf's name of the expected attach type, e.g. 'cgroup_inet4_connect'. */
  attachType: string;
  /** The numeric enum bpf_attach_type, for linkCreate. */
  attachTypeId: number;
}

export interface LoadedObject {
  /** For closeObject(). */
  handle: number;
  programs: LoadedProgram[];
  /** pinned: the map lives in pinRoot (reused or newly pinned). */
  maps: { name: string; fd: number; pinned: boolean }[];
  /** Optional programs left out because the object did not load with them (their fd is -1). */
  skipped: string[];
  /** libbpf's explanation of the failed first load, when something was skipped. */
  skipReason: string | null;
}

export interface MapInfo {
  id: number; name: string; type: string; keySize: number; valueSize: number;
  /** Bytes of one value through the syscall (per-CPU maps: 8-aligned slot per possible CPU). */
  valueBytes: number;
  maxEntries: number; flags: number;
}

export interface LinkInfo {
  id: number; progId: number; type: string;
  /** Cgroup links only. */
  cgroupId?: bigint; attachType?: string;
}

export interface TcTarget {
  ifindex: number;
  direction: 'ingress' | 'egress';
}

export interface NativeAddon {
  readonly sizes: LbSizes;
  readonly offsets: LbOffsets;
  readonly constants: LbConstants;

  /**
   * Open and load a BPF object file. Maps declared LIBBPF_PIN_BY_NAME are reused from pinRoot when
   * pinned there (and compatible; else the load fails saying so) and pinned there otherwise.
   * Program and map fds stay valid until closeObject(handle). If the load fails and `optional`
   * names programs, it is retried once without them (see LoadedObject.skipped).
   */
  loadObject(file: string, pinRoot?: string, optional?: string[]): LoadedObject;
  /** Close an object's fds; what is pinned stays in the kernel. */
  closeObject(handle: number): void;
  /** fd of a pinned map/program/link. */
  objGet(pinPath: string): number;
  /** Pin a map/program/link fd at a bpffs path. */
  objPin(fd: number, pinPath: string): void;
  closeFd(fd: number): void;

  /** bpf_link_create: attach progFd to targetFd (a cgroup dir fd) with an enum bpf_attach_type. */
  linkCreate(progFd: number, targetFd: number, attachTypeId: number): number;
  /** Replace the program behind a link atomically. */
  linkUpdate(linkFd: number, progFd: number): void;
  /** Detach a link now, even if it is pinned. */
  linkDetach(linkFd: number): void;
  linkInfo(fd: number): LinkInfo;
  progInfo(fd: number): { id: number; name: string; type: string; tag: string };

  mapInfo(fd: number): MapInfo;
  /** flags: BPF_ANY (0), BPF_NOEXIST (1), BPF_EXIST (2). */
  mapUpdate(fd: number, key: Buffer, value: Buffer, flags?: number): void;
  /** false when the key was not there. */
  mapDelete(fd: number, key: Buffer): boolean;
  /** The value (valueBytes long) or null. */
  mapLookup(fd: number, key: Buffer): Buffer | null;
  /** Every entry: keys and values concatenated (batched syscalls where the kernel supports it). */
  mapDump(fd: number): { count: number; keys: Buffer; values: Buffer };
  /**
   * BPF_MAP_UPDATE_BATCH: `count` keys and values, concatenated, written in order in one
   * syscall. `done` elements were written; `error` says why element `done` was not (E2BIG on a
   * full map); `unsupported` when the kernel has no batch ops for the map. Throws only when the
   * buffers do not fit the map.
   */
  mapUpdateBatch(fd: number, keys: Buffer, values: Buffer, count: number, flags?: number): BatchResult;
  /** BPF_MAP_DELETE_BATCH, as mapUpdateBatch (a missing key is an ENOENT error at its index). */
  mapDeleteBatch(fd: number, keys: Buffer, count: number): BatchResult;
  numPossibleCpus(): number;

  /**
   * Run an iterator program (e.g. berth_udp_destroy) once in each network namespace given by an
   * nsfs path (e.g. /proc/<pid>/ns/net); an empty list means the caller's netns. Namespaces that
   * cannot be entered are reported in errors, not thrown.
   */
  runIter(progFd: number, netnsPaths: string[]): Promise<{ runs: number; errors: string[] }>;

  /** Attach a sched_cls program on clsact (created when missing). */
  tcAttach(o: TcTarget & { progFd: number; priority?: number; handle?: number; replace?: boolean }): { priority: number; handle: number; progId: number };
  /** false when there was no such filter. */
  tcDetach(o: TcTarget & { priority: number; handle: number }): boolean;
  /** The attached program id, or null. */
  tcQuery(o: TcTarget & { priority: number; handle: number }): number | null;
  /** Delete the clsact qdisc with ALL its filters: only for a qdisc berth created. */
  tcHookDestroy(o: { ifindex: number }): boolean;

  /**
   * In a forked single-threaded child: enter <hostProc>/<pid>/ns/cgroup (unless enterCgroupns is
   * false) and <hostProc>/<pid>/ns/mnt (pid defaults to 1), mkdir -p target, mount cgroup2 there unless one is mounted,
   * and hand back the opened directory (fd, valid in this process whatever its mount namespace).
   */
  hostCgroup2(o: { hostProc: string; target: string; enterCgroupns?: boolean; pid?: number }): Promise<{ fd: number; path: string; mounted: boolean }>;
  /** In PID <pid>'s (default 1) mount namespace: umount target (if mounted) and rmdir it. */
  hostUmount(o: { hostProc: string; target: string; pid?: number }): Promise<{ path: string; unmounted: boolean }>;
  /** The cookie of berthd's network namespace, or of the one at nsPath (e.g. /proc/<pid>/ns/net), as
   * bpf_get_netns_cookie() sees it (SO_NETNS_COOKIE from a socket made in it by a thread of its own). */
  netnsCookie(nsPath?: string): bigint;
  /** Mount a bpf filesystem at dir unless one is there; true when it mounted. */
  mountBpffs(dir: string): boolean;
  /** open(path, O_RDONLY|O_DIRECTORY|O_CLOEXEC). */
  openDir(dirPath: string): number;
  /** One sd_notify datagram to a socket path or '@abstract' name. */
  sdNotify(socketPath: string, state: string): void;
  /**
   * glibc malloc_trim(0): return the C heap's free pages to the kernel (util/gc.ts calls it after
   * a full collection). true when memory was released; false when none was, or not glibc.
   */
  mallocTrim(): boolean;
  /**
   * One memory-reducing full collection now (V8's MemoryPressureNotification(kCritical); see
   * util/gc.ts reduceHeap). Absent when the addon was built without node's V8 headers; false when
   * there is no current isolate.
   */
  v8MemoryPressure?(): boolean;
  /**
   * glibc mallopt(M_ARENA_MAX, arenaMax) and mallopt(M_TRIM_THRESHOLD, trimThresholdBytes) (see
   * util/gc.ts limitCHeapArenas). true when glibc took both, false elsewhere; TypeError for
   * anything but integers in 1..2^30.
   */
  mallocLimitArenas(arenaMax: number, trimThresholdBytes: number): boolean;
}

let cached: NativeAddon | null = null;

/** Where the compiled BPF objects live (build/bpf/<name>.bpf.o). */
export function bpfObjectPath(name: string): string {
  const dir = process.env.BERTH_BPF_OBJECT_DIR || path.join(packageRoot(), 'build', 'bpf');
  return path.join(dir, `${name}.bpf.o`);
}

/** Load the addon once; fails with one message saying how to build it. */
export function loadNative(): NativeAddon {
  if (cached) return cached;
  const file = process.env.BERTH_NATIVE_ADDON || path.join(packageRoot(), 'build', 'native', 'Release', 'berth.node');
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    cached = require(file) as NativeAddon;
  } catch (e) {
    const why = e instanceof Error ? e.message.split('\n')[0] : String(e);
    throw new Error(`berth native addon not loadable from ${file} (${why}); build it with \`npm run build:native\``);
  }
  return cached;
}
