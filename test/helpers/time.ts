/**
 * How much slower than this machine the tests may find the one they run on.
 *
 * BERTH_TEST_TIME_SCALE (a number ≥ 1, default 1) multiplies the bounds of the helpers that wait
 * for berthd or for a condition (Berthd.start/waitReady, waitFor). The VM kernel matrix
 * (test/vm/kernels.test.ts) sets it in guests that run under full emulation (TCG), where berthd's
 * start alone is tens of seconds of emulated CPU. Bounds that are the subject of a test (a
 * timeout berth itself must honour) are not scaled; on the host the scale is 1 and every bound
 * is what the test says.
 */

/** Parse BERTH_TEST_TIME_SCALE; throws naming the variable for anything but a number ≥ 1. */
export function parseTimeScale(raw: string | undefined): number {
  if (raw === undefined || raw === '') return 1;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 1) throw new Error(`BERTH_TEST_TIME_SCALE=${raw}: want a number >= 1`);
  return n;
}

/** The factor for this run (see the module comment). */
export const TIME_SCALE = parseTimeScale(process.env.BERTH_TEST_TIME_SCALE);

/** `ms` stretched by TIME_SCALE (whole milliseconds). */
export function scaled(ms: number): number {
  return Math.round(ms * TIME_SCALE);
}
