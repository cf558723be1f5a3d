/**
 * Unreachable routes for the VIP ranges: a VIP packet that no socket hook rewrote (a connect
 * from a program that bypasses the hooks, a host-netns-only ingress VIP used from elsewhere
 * before the proxy's redirect is in) must never leave the machine.
 *
 * berth's routes are marked with protocol BERTH_RT_PROTO and a metric derived from the pin dir,
 * so several berthd instances (tests run side by side) each own their route, `ip route replace`
 * is idempotent on exactly berth's route, and removal never touches a route someone else added
 * for the same range (which would differ in protocol or metric).
 */
import { run } from '../util/exec';
import { DatapathError, DatapathErrorCode } from './errors';

/** Route protocol number berth marks its routes with (0x62, 'b'; unassigned in rt_protos). */
export const BERTH_RT_PROTO = 98;


/** The metric of this berth instance's routes: stable per pin dir (default dir -> 6606). */
export function routeMetric(pinDir: string): number {
  let h = 0x811c9dc5;
  for (const ch of Buffer.from(pinDir)) h = Math.imul(h ^ ch, 0x01000193) >>> 0;
  return 4096 + (h % 4096);
}

function familyFlag(cidr: string): '-4' | '-6' {
  return cidr.includes(':') ? '-6' : '-4';
}

function routeArgs(cidr: string, metric: number): string[] {
  return ['unreachable', cidr, 'metric', String(metric), 'proto', String(BERTH_RT_PROTO)];
}

/** Install (or keep) the unreachable route of each range. */
export async function ensureRoutes(cidrs: string[], metric: number): Promise<void> {
  for (const cidr of cidrs.filter(Boolean)) {
    const r = await run('ip', [familyFlag(cidr), 'route', 'replace', ...routeArgs(cidr, metric)]);
    if (r.code !== 0) throw new DatapathError(DatapathErrorCode.ROUTE, `ip route replace unreachable ${cidr}: ${r.stderr.trim() || `exit ${r.code}`}`);
  }
}

/** Is berth's route for this range in place? */
export async function hasRoute(cidr: string, metric: number): Promise<boolean> {
  const r = await run('ip', ['-j', familyFlag(cidr), 'route', 'show', 'exact', cidr, 'proto', String(BERTH_RT_PROTO)]);
  if (r.code !== 0) return false;
  try {
    const routes = JSON.parse(r.stdout || '[]') as { type?: string; metric?: number }[];
    return routes.some((x) => x.type === 'unreachable' && (x.metric ?? 0) === metric);
  } catch {
    return false;
  }
}

/** Remove berth's routes; returns the ranges whose route was removed. */
export async function removeRoutes(cidrs: string[], metric: number): Promise<string[]> {
  const removed: string[] = [];
  for (const cidr of cidrs.filter(Boolean)) {
    if (!(await hasRoute(cidr, metric))) continue;
    const r = await run('ip', [familyFlag(cidr), 'route', 'del', ...routeArgs(cidr, metric)]);
    if (r.code !== 0) throw new DatapathError(DatapathErrorCode.ROUTE, `ip route del unreachable ${cidr}: ${r.stderr.trim() || `exit ${r.code}`}`);
    removed.push(cidr);
  }
  return removed;
}
