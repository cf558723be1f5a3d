/** Capped exponential backoff with jitter, so many berthds do not hammer a restarting engine in step. */
export class Backoff {
  private attempt = 0;
  constructor(private readonly minMs = 250, private readonly maxMs = 10000, private readonly random: () => number = Math.random) {}

  /** The next delay: min·2^n capped at max, then ±20 % jitter (never above max). */
  next(): number {
    const base = Math.min(this.maxMs, this.minMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    const jittered = base * (0.8 + 0.4 * this.random());
    return Math.round(Math.min(this.maxMs, jittered));
  }

  reset(): void {
    this.attempt = 0;
  }
}
