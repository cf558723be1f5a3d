/**
 * One full garbage collection on demand, for the end of a one-off heavy phase.
 *
 * Why: berthd's cold start at 10,000 services × 4 allocates a few hundred MB of short-lived
 * objects (the Docker list, the model build, 100,000 planned map writes), much of it promoted to
 * the old generation. V8 ran only two mark-compacts during that start (node --trace-gc: the old
 * generation grew from 54 to 212 MB used with ~126 MB live), and an idle berthd allocates too
 * little to trigger another, so the garbage stayed resident. Collecting once when the first full
 * reconcile is done returns it; berthd does the same after each later full reconcile (a periodic
 * full Docker list), whose temporaries also reach the old generation.
 *
 * How: node exposes gc() only with --expose-gc; setting that flag at run time and taking gc from
 * a fresh context is the way jest's leak detector does it (jest-leak-detector). Without it (a
 * runtime that refuses the flag) this does nothing.
 */
import v8 from 'node:v8';
import vm from 'node:vm';

let gcFn: (() => void) | null | undefined;

/** Run a full GC; returns how long it took (ms), or null when gc() is not available. */
/**
 * `compact`: move every live object of the old generation together (V8's
 * --compact-on-every-full-gc, set for this one collection only), so the pages the start-up's
 * garbage occupied are returned whole. Without it V8 compacts only the pages its heuristic picks:
 * after berthd's start-up collection at 10,000 services × 4 the old space held ~79 MB live in
 * 94–106 MB of committed pages. It costs the copy of the live set (more CPU than a plain
 * collection), so berthd asks for it once, at start-up.
 */
export function collectGarbage(opts: { compact?: boolean } = {}): number | null {
  if (gcFn === undefined) {
    try {
      v8.setFlagsFromString('--expose-gc');
      const f: unknown = vm.runInNewContext('gc');
      gcFn = typeof f === 'function' ? (f as () => void) : null;
    } catch {
      gcFn = null;
    }
  }
  if (!gcFn) return null;
  const t0 = process.hrtime.bigint();
  if (opts.compact) v8.setFlagsFromString('--compact-on-every-full-gc');
  try {
    gcFn();
  } finally {
    if (opts.compact) v8.setFlagsFromString('--no-compact-on-every-full-gc');
  }
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/**
 * One memory-reducing full collection: V8's own response to critical memory pressure
 * (Isolate::MemoryPressureNotification through berth's addon, native/src/memory.cc), run
 * synchronously. Unlike gc() it also shrinks the young generation back to its initial size and
 * compacts the fragmented old-space pages, which a plain collection leaves committed: at 10,000
 * services × 4 berthd's start-up collection by gc() left 27 MB of empty semi-space and RSS
 * 190 MB at ready; this left 1 MB and 162 MB (profile-berthd.js, 2026-12-01), in ~0.37 s of CPU
 * against ~0.6 s for gc() with --compact-on-every-full-gc.
 *
 * Returns how long it took (ms), or null when the addon cannot do it (not loadable, or built
 * without node's V8 headers); never throws: the caller falls back to collectGarbage().
 */
export function reduceHeap(load: () => { v8MemoryPressure?: () => boolean } = defaultAddon): number | null {
  try {
    const addon = load();
    if (typeof addon.v8MemoryPressure !== 'function') return null;
    const t0 = process.hrtime.bigint();
    if (!addon.v8MemoryPressure()) return null;
    return Number(process.hrtime.bigint() - t0) / 1e6;
  } catch {
    return null;
  }
}

/** What reduceHeapFully reads of V8's heap spaces (node's v8.getHeapSpaceStatistics() entries). */
export interface HeapSpaceLike {
  space_name: string;
  space_used_size: number;
  physical_space_size: number;
}

/**
 * Committed old-space bytes beyond the live objects in it after which reduceHeapFully collects a
 * second time. After a compacting collection berthd's old space at 10,000 services × 4 holds
 * ~3 MB of slack (81.5 MB committed for 78 live); after one that did not compact, ~22 MB.
 */
export const OLD_SPACE_SLACK_BYTES = 16 * 1048576;

/**
 * Bytes of old space committed beyond its live objects, or null when the statistics have no
 * old space or not finite sizes (then the caller cannot tell, and does not collect again).
 */
export function oldSpaceSlack(spaces: readonly HeapSpaceLike[]): number | null {
  const o = spaces.find((x) => x.space_name === 'old_space');
  if (!o || !Number.isFinite(o.space_used_size) || !Number.isFinite(o.physical_space_size)) return null;
  return Math.max(0, o.physical_space_size - o.space_used_size);
}

/**
 * reduceHeap, and once more when the old space still holds OLD_SPACE_SLACK_BYTES or more of
 * committed pages beyond its live objects: the first memory-reducing collection does not always
 * compact. At 10,000 services × 4 (profile-berthd.js, 2026-12-01 06:12–06:45 UTC, with and
 * without the start-up changes of that day alike) the start-up collection left the old space
 * at ~98–100 MB committed for ~76–79 MB live in about half of the runs (RSS at ready 171–184 MB),
 * at ~81 MB in the others
 * (155–158 MB); a second collection in the first case gave 81 MB and 154–155 MB every time, for
 * ~0.1–0.2 s more CPU. (Likely: the first one finished an incremental marking V8 had begun
 * without compaction, so its evacuation candidates were chosen for a plain collection; not
 * confirmed in V8's sources.) Returns the total ms and how many collections ran, or null when
 * the addon cannot collect (as reduceHeap); never throws.
 */
export function reduceHeapFully(
  load: () => { v8MemoryPressure?: () => boolean } = defaultAddon,
  spaces: () => readonly HeapSpaceLike[] = v8.getHeapSpaceStatistics,
): { ms: number; rounds: number } | null {
  const first = reduceHeap(load);
  if (first === null) return null;
  let slack: number | null;
  try {
    slack = oldSpaceSlack(spaces());
  } catch {
    slack = null;
  }
  if (slack === null || slack < OLD_SPACE_SLACK_BYTES) return { ms: first, rounds: 1 };
  const second = reduceHeap(load);
  return second === null ? { ms: first, rounds: 1 } : { ms: first + second, rounds: 2 };
}

/**
 * Return the C heap's free memory to the kernel (glibc malloc_trim(0) through berth's addon), for
 * right after collectGarbage(): the collection frees the backing stores of buffers that V8 held
 * (node's HTTP and JSON buffers of a Docker list of 40,000 containers, the map-write batches),
 * but glibc keeps freed memory inside its heap resident. At 10,000 services × 4 that was ~27 MB
 * of berthd's RSS at ready (see native/src/memory.cc for how it was measured).
 *
 * Returns how long it took (ms), or null when the addon cannot do it (not loadable, or an older
 * build without mallocTrim); never throws: this is only an optimisation.
 */
export function trimCHeap(load: () => { mallocTrim?: () => boolean } = defaultAddon): number | null {
  try {
    const addon = load();
    if (typeof addon.mallocTrim !== 'function') return null;
    const t0 = process.hrtime.bigint();
    addon.mallocTrim();
    return Number(process.hrtime.bigint() - t0) / 1e6;
  } catch {
    return null;
  }
}

/**
 * One glibc malloc arena for the whole process, and a fixed trim threshold (128 KiB), set before
 * berthd loads its modules (daemon/malloc-first.ts).
 *
 * Why: glibc gives each thread that allocates an arena of its own (V8's compiler and GC workers,
 * libuv's pool that runs the addon's map writes), and returns memory from an arena's top only
 * above a trim threshold that it raises by itself as large blocks are freed; malloc_trim(0)
 * (trimCHeap) empties the main arena's top but not a thread arena's. At 10,000 services × 4 four
 * thread arenas held ~30 MB after 10,000 events and ~10 MB at ready (profile-berthd.js --smaps
 * --churn 10000: four anonymous mappings of ~7.5 MB each, 2026-12-01); with one arena and a fixed
 * threshold berthd sat at 164 MB after the events and a collection, against 184–194 MB.
 * Threads then share the main arena's lock; berthd's threads allocate little between them.
 *
 * Does nothing when the operator set glibc's own MALLOC_ARENA_MAX or MALLOC_TRIM_THRESHOLD_
 * (their choice wins). Returns true when set, false when not glibc or skipped, null when the
 * addon cannot do it; never throws.
 */
export function limitCHeapArenas(
  env: NodeJS.ProcessEnv = process.env,
  load: () => { mallocLimitArenas?: (arenaMax: number, trimThresholdBytes: number) => boolean } = defaultAddon,
): boolean | null {
  if (env.MALLOC_ARENA_MAX !== undefined || env.MALLOC_TRIM_THRESHOLD_ !== undefined) return false;
  try {
    const addon = load();
    if (typeof addon.mallocLimitArenas !== 'function') return null;
    return addon.mallocLimitArenas(1, 128 * 1024);
  } catch {
    return null;
  }
}

function defaultAddon(): { mallocTrim?: () => boolean; v8MemoryPressure?: () => boolean; mallocLimitArenas?: (arenaMax: number, trimThresholdBytes: number) => boolean } {
  // Required lazily: loading gc.ts must not load the native addon (unit tests, the CLI).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('../native') as typeof import('../native')).loadNative();
}
