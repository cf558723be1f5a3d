/**
 * The L7 bench's WebSocket load (issue 10): arguments and output of ../ws-client.ts, and running
 * it inside a namespace. Pure parts (argument check, output parse, percentile) are unit-tested in
 * test/unit/bench/wsload.test.ts.
 */
import path from 'node:path';
import { run } from './util';

/** One ws-client run: echoes counted over all connections during `seconds`. */
export interface WsResult {
  /** connections that completed the handshake */
  connections: number;
  /** echoes received (= round trips) */
  messages: number;
  /** connections that failed (handshake, reset, close, no echo within 2 s) */
  errors: number;
  /** measured time, s */
  seconds: number;
  /** messages / seconds */
  rate: number;
  /** round trip (frame written → echo parsed), ms */
  p50_ms: number;
  p99_ms: number;
  first_error: string;
}

export interface WsClientArgs {
  addr: string;
  port: number;
  /** Host header of the upgrade request */
  host: string;
  path: string;
  connections: number;
  seconds: number;
  maxCount: number;
}

/**
 * ws-client's argv (after the script): `ADDR PORT HOST --connections N --seconds S
 * [--max-count M] [--path P]`. Throws naming the bad argument; bounds: 1-256 connections,
 * (0, 60] seconds, 1-2,000,000 messages.
 */
export function wsClientArgs(argv: string[]): WsClientArgs {
  const [addr, port, host, ...rest] = argv;
  const opt: Record<string, string> = {};
  for (let i = 0; i < rest.length; i += 2) {
    const k = rest[i];
    if (!['--connections', '--seconds', '--max-count', '--path'].includes(k) || rest[i + 1] === undefined) throw new Error(`ws-client: unknown or incomplete option ${k}`);
    opt[k] = rest[i + 1];
  }
  if (!addr || !/^[0-9a-fA-F.:]+$/.test(addr)) throw new Error(`ws-client: ADDR must be an IP address, got ${addr ?? 'nothing'}`);
  const p = Number(port);
  if (!(Number.isInteger(p) && p >= 1 && p <= 65535)) throw new Error(`ws-client: PORT must be 1-65535, got ${port ?? 'nothing'}`);
  if (!host || /[\s]/.test(host)) throw new Error(`ws-client: HOST must be a host name, got ${host ?? 'nothing'}`);
  const connections = Number(opt['--connections'] ?? 8);
  if (!(Number.isInteger(connections) && connections >= 1 && connections <= 256)) throw new Error(`ws-client: --connections must be 1-256, got ${opt['--connections']}`);
  const seconds = Number(opt['--seconds'] ?? 1);
  if (!(seconds > 0 && seconds <= 60)) throw new Error(`ws-client: --seconds must be in (0, 60], got ${opt['--seconds']}`);
  const maxCount = Number(opt['--max-count'] ?? 2_000_000);
  if (!(Number.isInteger(maxCount) && maxCount >= 1 && maxCount <= 2_000_000)) throw new Error(`ws-client: --max-count must be 1-2000000, got ${opt['--max-count']}`);
  const pth = opt['--path'] ?? '/';
  if (!pth.startsWith('/') || /\s/.test(pth)) throw new Error(`ws-client: --path must start with / and have no spaces, got ${pth}`);
  return { addr, port: p, host, path: pth, connections, seconds, maxCount };
}

/** Nearest-rank percentile (p in 0..1) of an ascending list; NaN when empty. */
export function percentileSorted(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

/**
 * The result line of ws-client's stdout (the last line that starts with `{`). Throws when there
 * is none, when the client reported an error, or when a field is missing or not a number.
 */
export function parseWsResult(out: string): WsResult {
  const line = out.split('\n').filter((l) => l.startsWith('{')).pop();
  if (!line) throw new Error(`ws-client printed no result: ${out.trim().slice(0, 300)}`);
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`ws-client printed bad JSON: ${line.slice(0, 300)}`);
  }
  if (typeof o.error === 'string') throw new Error(`ws-client: ${o.error}`);
  const num = (k: keyof WsResult) => {
    const v = o[k];
    // No echo, no percentile: JSON.stringify writes NaN as null.
    if (v === null && (k === 'p50_ms' || k === 'p99_ms') && o.messages === 0) return NaN;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new Error(`ws-client result lacks a number ${k}: ${line.slice(0, 300)}`);
    return v;
  };
  return {
    connections: num('connections'), messages: num('messages'), errors: num('errors'), seconds: num('seconds'),
    rate: num('rate'), p50_ms: num('p50_ms'), p99_ms: num('p99_ms'), first_error: typeof o.first_error === 'string' ? o.first_error : '',
  };
}

/**
 * Run ws-client (host node, inside `prefix`, e.g. nsenter -n into a client container) against
 * addr:port and return its result. Throws when it fails, or when a connection failed or fewer
 * connections than asked completed the handshake (a closed loop that lost a connection measures
 * something else).
 */
export async function wsLoad(prefix: string[], addr: string, port: number, host: string, o: { connections: number; seconds: number }): Promise<WsResult> {
  const script = path.join(__dirname, '..', 'ws-client.js');
  const argv = [...prefix, process.execPath, script, addr, String(port), host, '--connections', String(o.connections), '--seconds', String(o.seconds)];
  const r = await run(argv[0], argv.slice(1), { timeoutMs: (o.seconds + 20) * 1000 });
  const res = parseWsResult(r.stdout);
  if (res.messages === 0 || res.errors > 0 || res.connections < o.connections) {
    throw new Error(`ws ${addr}:${port}: ${res.messages} messages, ${res.connections}/${o.connections} connections, ${res.errors} errors${res.first_error ? ` (${res.first_error})` : ''}`);
  }
  return res;
}
