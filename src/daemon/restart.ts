/**
 * Is this SIGTERM the first half of a restart? Then Envoy is left running for the next berthd
 * (issue 10: ingress VIPs must not pause across `systemctl restart` or an upgrade), while a plain
 * `systemctl stop` still stops it.
 *
 * systemd does not tell a service why it is stopped, but a restart is a job of type "restart"
 * on the unit while its stop half runs (`systemctl list-jobs`), and a stop is a "stop" job.
 */
import fs from 'node:fs';
import { run } from '../util/exec';

/** The unit berthd runs in, from its cgroup path (`0::/system.slice/berthd.service`), or null. */
export function ownUnit(cgroupText: string): string | null {
  for (const line of cgroupText.split('\n')) {
    const path = line.split(':').slice(2).join(':');
    const m = /\/([^/]+\.service)(\/|$)/.exec(path);
    if (m) return m[1];
  }
  return null;
}

/** True if `systemctl list-jobs` output shows a restart job for `unit`. */
export function restartJobListed(listJobs: string, unit: string): boolean {
  return listJobs.split('\n').some((l) => {
    const cols = l.trim().split(/\s+/);
    return cols[1] === unit && /restart/.test(cols[2] ?? '');
  });
}

/** Under systemd (INVOCATION_ID is set) and a restart of our unit is queued or running. */
export async function systemdRestartPending(): Promise<boolean> {
  if (!process.env.INVOCATION_ID) return false;
  let unit: string | null = null;
  try {
    unit = ownUnit(fs.readFileSync('/proc/self/cgroup', 'utf8'));
  } catch {
    return false;
  }
  if (!unit) return false;
  const r = await run('systemctl', ['list-jobs', '--no-legend', '--no-pager'], { timeoutMs: 3000 });
  return r.code === 0 && restartJobListed(r.stdout, unit);
}
