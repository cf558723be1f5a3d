/**
 * Start-up phase marks: where berthd's cold start spends its wall time and its CPU time.
 *
 * Why CPU time too: the machine berth is measured on is shared (other test suites, QEMU guests),
 * so wall time between two marks says as much about the neighbours as about berthd; the process's
 * own user + system CPU (process.cpuUsage(): every thread, so V8's GC helpers and libuv's pool
 * count) is what an A/B comparison can trust. Both are measured from the process's start
 * (performance.now() counts from node's time origin; cpuUsage() from the process's creation).
 *
 * Each name is recorded once, the first time it is marked (a later full list marks nothing new),
 * and marks stop once `done()` ran (berthd: at READY), so this costs nothing after the start.
 * berthd logs the list once at READY (`start-up phases`, info); scripts/bench/profile-berthd.ts
 * reads that line.
 */
import v8 from 'node:v8';
import { performance } from 'node:perf_hooks';

/** One phase mark: wall and CPU (user + system) ms since the process started, when it was reached. */
export interface PhaseMark {
  name: string;
  wallMs: number;
  cpuMs: number;
}

const marks: PhaseMark[] = [];
const seen = new Set<string>();
let closed = false;

/** Record that start-up reached `name` (first time only; nothing once done() ran). */
export function phase(name: string): void {
  if (closed || seen.has(name)) return;
  seen.add(name);
  const cpu = process.cpuUsage();
  marks.push({ name, wallMs: Math.round(performance.now()), cpuMs: Math.round((cpu.user + cpu.system) / 1000) });
}

/** Stop recording and return the marks in the order they were reached. */
export function done(): PhaseMark[] {
  closed = true;
  return marks.slice();
}

/** One V8 heap space at a moment: MB in use by live and not yet collected objects, and MB committed. */
export interface HeapSpaceMb {
  space: string;
  usedMb: number;
  committedMb: number;
}

/**
 * V8's heap spaces now (`v8.getHeapSpaceStatistics`), in MB to one decimal: where the heap part
 * of berthd's RSS is (the young generation's semi-spaces, old space, code, large objects).
 * Logged with the phases at READY, after the start-up collection, so `used` is about the live set.
 */
export function heapSpaces(): HeapSpaceMb[] {
  const mb = (b: number): number => Math.round(b / 1e5) / 10;
  return v8.getHeapSpaceStatistics().map((s) => ({ space: s.space_name, usedMb: mb(s.space_used_size), committedMb: mb(s.physical_space_size) }));
}
