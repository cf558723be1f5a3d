/**
 * A memory-reducing collection once berthd goes quiet after work that grew its memory.
 *
 * Why: a burst of Docker events (at 10,000 services × 4, 10,000 events at ~500/s) leaves V8's
 * young generation regrown to its maximum (32 MB of semi-spaces) and the old generation holding
 * the garbage the burst promoted; berthd's RSS went from 162 MB at ready to 248 MB after the
 * burst, and V8's own memory reducer gave back only part of it (to 228 MB) ~33 s later
 * (profile-berthd.js --churn 10000 --idle-seconds 40, 2026-12-01). berthd collects after its
 * start-up and after every periodic full list (util/gc.ts); this does the same once the event
 * stream has paused, but only when memory grew enough since the last collection to be worth a
 * full collection (~0.4 s of CPU at 10,000 × 4), so a daemon that sees a `docker run` now and
 * then never pays for it, and a long churn pays at most one collection per `minGrowthBytes`.
 *
 * The clock and the memory reading are injected (unit tests drive them).
 */
export interface QuietCollectorOptions {
  /** How long without work (ms) before memory is looked at. */
  quietMs: number;
  /** Collect only when RSS grew by at least this much (bytes) since the last collection. */
  minGrowthBytes: number;
  /** Resident memory now (bytes): process.memoryUsage.rss in berthd. */
  rss: () => number;
  /** The collection itself (reduceHeap + trimCHeap in berthd); errors are the caller's to catch. */
  collect: () => void;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (handle: unknown) => void;
}

export class QuietCollector {
  private timer: unknown = null;
  private baseline: number;
  private stopped = false;

  constructor(private readonly o: QuietCollectorOptions) {
    if (!(o.quietMs > 0)) throw new Error(`quietMs must be > 0 (got ${o.quietMs})`);
    if (!(o.minGrowthBytes > 0)) throw new Error(`minGrowthBytes must be > 0 (got ${o.minGrowthBytes})`);
    this.baseline = o.rss();
  }

  /** A collection just ran elsewhere (start-up, full list): memory now is the new baseline. */
  collected(): void {
    this.baseline = this.o.rss();
  }

  /** Work was done: look at memory once `quietMs` pass with no further work. */
  touched(): void {
    if (this.stopped) return;
    this.cancel();
    const set = this.o.setTimer ?? ((fn: () => void, ms: number) => setTimeout(fn, ms).unref());
    this.timer = set(() => {
      this.timer = null;
      this.check();
    }, this.o.quietMs);
  }

  /**
   * Collect when RSS grew by `minGrowthBytes` or more since the baseline; the RSS after it is the
   * new baseline. Returns [RSS before, RSS after] in bytes when it collected, else null.
   */
  check(): [number, number] | null {
    if (this.stopped) return null;
    const before = this.o.rss();
    if (before - this.baseline < this.o.minGrowthBytes) return null;
    this.o.collect();
    this.baseline = this.o.rss();
    return [before, this.baseline];
  }

  /** No more checks (berthd stopping). */
  stop(): void {
    this.stopped = true;
    this.cancel();
  }

  private cancel(): void {
    if (this.timer === null) return;
    (this.o.clearTimer ?? ((h: unknown) => clearTimeout(h as NodeJS.Timeout)))(this.timer);
    this.timer = null;
  }
}
