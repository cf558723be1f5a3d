/** Run the berth-bench client and parse its one JSON line. */
import { LOADGEN, run } from './util';

export type Mode = 'crr' | 'rr' | 'udp' | 'udpu';

export interface LoadResult {
  mode: Mode;
  count: number;
  errors: number;
  seconds: number;
  rate: number;
  p50_us: number;
  p90_us: number;
  p99_us: number;
  mean_us: number;
  cpu_s: number;
  cpu_us_per_op: number;
  sys_cpu_s: number;
  sys_cpu_us_per_op: number;
  first_error: string;
}

export interface LoadOpts {
  seconds: number;
  maxCount?: number;
  /** Run inside this command prefix (e.g. nsenter into a namespace). */
  prefix?: string[];
  /** Pin the client to this CPU. */
  cpu?: number;
}

export async function loadgen(mode: Mode, addr: string, port: number, o: LoadOpts): Promise<LoadResult> {
  const argv = [LOADGEN, 'client', mode, addr, String(port), '--seconds', String(o.seconds), '--max-count', String(o.maxCount ?? 2_000_000)];
  if (o.cpu !== undefined) argv.push('--cpu', String(o.cpu));
  const [file, ...args] = o.prefix ? [...o.prefix, ...argv] : argv;
  const r = await run(file, args, { timeoutMs: (o.seconds + 15) * 1000 });
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
  if (!line) throw new Error(`berth-bench client ${mode} ${addr}:${port} printed nothing (exit ${r.code}): ${r.stderr.trim()}`);
  const res = JSON.parse(line) as LoadResult;
  if (res.count === 0) throw new Error(`no successful ${mode} transaction to ${addr}:${port}: ${res.first_error}`);
  return res;
}
