/**
 * Drive berth-probe (test/helpers/c/berth-probe.c) from the host or inside a container and
 * parse its JSON lines: which backend answered (by tag), what getpeername() said, where a UDP
 * reply came from, and the errno of a failed connect.
 */
import { run } from '../../src/util/exec';
import { execIn, TEST_BIN_DIR } from './docker';
import path from 'node:path';

export interface ProbeResult {
  ok: boolean;
  peer: string | null;
  reply: string | null;
  from: string | null;
  errno: string | null;
  ms: number;
}

export type ProbeMode = 'tcp' | 'udp' | 'udp-unconnected';

function args(mode: ProbeMode, addr: string, port: number, count: number, send: string): string[] {
  return [mode, addr, String(port), '--send', send, '--count', String(count), '--timeout-ms', '2000'];
}

function parse(stdout: string): ProbeResult[] {
  return stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as ProbeResult);
}

/** Run the probe on the host (the host's network namespace and root cgroup). */
export async function probeFromHost(mode: ProbeMode, addr: string, port: number, count = 1, send = 'ping'): Promise<ProbeResult[]> {
  const r = await run(path.join(TEST_BIN_DIR, 'berth-probe'), args(mode, addr, port, count, send), { timeoutMs: 5000 + count * 2500 });
  const out = parse(r.stdout);
  if (out.length === 0) throw new Error(`berth-probe printed nothing (exit ${r.code}): ${r.stderr}`);
  return out;
}

/** Run the probe inside a container (its own network namespace, a cgroup below the root). */
export async function probeFromContainer(container: string, mode: ProbeMode, addr: string, port: number, count = 1, send = 'ping'): Promise<ProbeResult[]> {
  const stdout = await execIn(container, ['berth-probe', ...args(mode, addr, port, count, send)]);
  const out = parse(stdout);
  if (out.length === 0) throw new Error(`berth-probe in ${container} printed nothing: ${stdout}`);
  return out;
}

/**
 * The backend tags seen in replies like "web-1:ping" or "web-1\n...". Every attempt must have
 * been answered: a failed one throws (listing the failures), so "served by a and b" can never
 * pass with only some of the clients served. Tests that expect failures look at the results.
 */
export function tags(results: ProbeResult[]): Set<string> {
  const failed = results.filter((r) => !r.ok || !r.reply);
  if (failed.length) throw new Error(`${failed.length} of ${results.length} probes got no answer: ${JSON.stringify(failed)}`);
  return new Set(results.map((r) => r.reply!.split(/[:\n]/)[0]));
}

/** "10.96.0.5:80" / "[fd00:96::5]:80" */
export function hostPort(addr: string, port: number): string {
  return addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}

/**
 * Assert that every probe succeeded and each took under 1 s (a connect left hanging, e.g. in a
 * firewall's drop, shows as a slow attempt). `what` names the case in the failure message.
 */
export function allFast(t: { true(v: boolean, m?: string): void }, res: ProbeResult[], what: string): void {
  t.true(res.every((r) => r.ok), `${what}: ${JSON.stringify(res.filter((r) => !r.ok))}`);
  t.true(res.every((r) => r.ms < 1000), `${what}: every attempt within 1 s (${res.map((r) => r.ms.toFixed(1)).join(', ')} ms)`);
}
