/**
 * Small address helpers for picking test subnets that clash with nothing on this machine
 * (Docker networks, the VM's own LAN, other tests' namespaces).
 */
import { run } from '../../src/util/exec';

export function v4ToInt(a: string): number {
  return a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0) >>> 0;
}

export function intToV4(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
}

/** Do two IPv4 CIDRs (or plain addresses, as /32) overlap? */
export function v4Overlap(a: string, b: string): boolean {
  const [ia, la] = a.split('/');
  const [ib, lb] = b.split('/');
  const len = Math.min(Number(la ?? 32), Number(lb ?? 32));
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  return ((v4ToInt(ia) & mask) >>> 0) === ((v4ToInt(ib) & mask) >>> 0);
}

/** Every IPv4 prefix in the host's routing tables (all tables, including local addresses). */
export async function hostV4Prefixes(): Promise<string[]> {
  const out: string[] = [];
  for (const r of (await run('ip', ['-4', 'route', 'show', 'table', 'all'])).stdout.split('\n')) {
    const m = /^(?:local |broadcast |unreachable |blackhole |prohibit |throw )?(\d+\.\d+\.\d+\.\d+(?:\/\d+)?)\s/.exec(r);
    if (m) out.push(m[1].includes('/') ? m[1] : `${m[1]}/32`);
  }
  return out;
}

/** A stable 32-bit hash of a name (FNV-1a), to spread tests over address blocks. */
export function nameHash(name: string): number {
  let h = 2166136261;
  for (const ch of name) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  return h;
}
