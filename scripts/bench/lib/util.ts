/**
 * Small shared pieces of the benchmark harness: paths, running programs, statistics, and the
 * bench's own names (every kernel object and container it creates carries one of these, so the
 * sweep at start and the cleanup at the end remove exactly what a bench run made).
 */
import path from 'node:path';
import { run, type ExecResult } from '../../../src/util/exec';

/** The repository root (this file runs as dist/scripts/bench/lib/util.js). */
export const REPO = path.resolve(__dirname, '../../../..');
export const OUT_DIR = path.join(REPO, '.bench');
export const BIN_DIR = path.join(OUT_DIR, 'bin');
export const LOADGEN = path.join(BIN_DIR, 'berth-bench');

export const NAMES = {
  /** Docker label on every bench container (outside berth.*: the model rejects unknown berth.* keys). */
  label: 'berth-test=bench',
  image: 'berth-bench/busybox',
  containerPrefix: 'bt-bench-',
  netnsPrefix: 'bt-bench-',
  /** iptables chains and rule comment. */
  chainPrefix: 'BERTH-BENCH-',
  comment: 'berth-bench',
  /** dummy interface that swallows the iptables baseline's VIP range (never leaves the host). */
  dummyLink: 'bt-bench0',
};

/** VIP ranges of the bench (unreachable/dummy-routed before any traffic goes there). */
export const RANGES = {
  /** berth socket LB (Datapath opened by the bench itself): 131,072 addresses for up to 100k VIPs. */
  sock: '10.98.0.0/15',
  sock6: 'fd00:98::/112',
  /** kube-proxy-like iptables DNAT baseline. */
  ipt: '10.97.0.0/16',
  /** berthd runs of the control-plane and L7 scenarios. */
  berthd: '10.95.0.0/16',
  berthd6: 'fd00:95::/112',
  /** the cold-start child (its own pins, no traffic). */
  cold: '10.94.0.0/16',
  cold6: 'fd00:94::/112',
};

export { run, type ExecResult };

/** Run and throw with stderr on a non-zero exit. */
export async function must(file: string, args: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<string> {
  const r = await run(file, args, opts);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} failed (${r.code}): ${(r.stderr || r.stdout).trim().slice(0, 800)}`);
  return r.stdout;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** Nearest-rank percentile of an unsorted list (p in 0..1). */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
}

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export interface Summary {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function summarize(xs: number[]): Summary {
  const v = xs.filter((x) => Number.isFinite(x));
  return { median: median(v), min: v.length ? Math.min(...v) : NaN, max: v.length ? Math.max(...v) : NaN, n: v.length };
}

/** 10.98.0.0 + n as dotted quad (IPv4 only). */
export function ipv4Add(base: string, n: number): string {
  const b = base.split('.').reduce((a, o) => a * 256 + Number(o), 0) + n;
  return [24, 16, 8, 0].map((s) => Math.floor(b / 2 ** s) % 256).join('.');
}

export function cidrBase(cidr: string): string {
  return cidr.split('/')[0];
}

export function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

/** A scenario part whose dependency is missing: reported as "not run: <reason>". */
export class NotRun extends Error {}

/** require() a module of berth's own that may not have landed yet; NotRun when missing. */
export function optionalRequire<T>(rel: string, what: string): T {
  const p = path.join(REPO, 'dist', rel);
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(p) as T;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'MODULE_NOT_FOUND' && String(err.message).includes(p)) throw new NotRun(`${what} (${rel}) is not built yet`);
    throw new NotRun(`${what} (${rel}) does not load: ${err.message.split('\n')[0]}`);
  }
}
