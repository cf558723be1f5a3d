/**
 * The running kernel's release, for the few behaviours berth can only tell apart by version
 * (a helper that exists on both sides but accepts more from a given release on).
 */
import fs from 'node:fs';

/**
 * Whether `release` (default: the running kernel's, from /proc/sys/kernel/osrelease, e.g.
 * "5.10.0-46-amd64") is at least major.minor. Throws on a string that is no release.
 */
export function kernelAtLeast(major: number, minor: number, release = fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8')): boolean {
  const [maj, min] = release.trim().split(/[.-]/).map((x) => parseInt(x, 10));
  if (Number.isNaN(maj) || Number.isNaN(min)) throw new Error(`not a kernel release: ${release}`);
  return maj > major || (maj === major && min >= minor);
}

/**
 * Whether bpf_sk_assign (tc) accepts a listener in an SO_REUSEPORT group: from Linux 6.5
 * (commit 9c02bec95954, "bpf, net: Support SO_REUSEPORT sockets with bpf_sk_assign"; before it
 * the helper refuses such sockets and the packet goes on unassigned). Envoy binds its listeners
 * with SO_REUSEPORT by default (one socket per worker), so on older kernels berth asks Envoy for
 * one shared socket per listener instead (Listener.enable_reuse_port = false).
 */
export function skAssignTakesReuseport(release?: string): boolean {
  return kernelAtLeast(6, 5, release);
}
