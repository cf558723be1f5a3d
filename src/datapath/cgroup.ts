/**
 * Where the socket programs attach: the host's ROOT cgroup v2. Socket hooks run for the socket's
 * cgroup and its ancestors, so only the true root makes VIPs work for every process and
 * container. The trap (seeds/000): inside a private cgroup namespace, any cgroup2 mount shows the
 * namespace's own cgroup as its top, so attaching "at the top of the mount" silently covers only
 * berthd itself. Hence:
 *  - `auto`: if our cgroup namespace differs from PID 1's (<hostProc>/1/ns/cgroup; see hostNsPid), or no usable
 *    cgroup2 mount is visible, a forked child enters PID 1's cgroup and mount namespaces, mounts
 *    cgroup2 at <runDir>/cgroupv2 and hands back the directory fd; otherwise the cgroup2 mount
 *    from /proc/self/mountinfo (hybrid: /sys/fs/cgroup/unified; unified: /sys/fs/cgroup).
 *  - an explicit directory is used as given.
 * Either way the result is VERIFIED, not assumed: only the root cgroup lacks cgroup.type and
 * cgroup.events (the kernel creates them in every non-root cgroup).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { NativeAddon } from '../native';
import type { Logger } from '../util/log';
import { readMountInfo } from '../util/mounts';
import { DatapathError, DatapathErrorCode } from './errors';

const CGROUP2_SUPER_MAGIC = 0x63677270;

export interface CgroupRoot {
  /** The directory as the host sees it (for status and bpftool). */
  path: string;
  /** Open directory fd (O_RDONLY|O_DIRECTORY); the caller closes it. */
  fd: number;
  /** Verified: cgroup2 and the hierarchy's root. */
  isHostRoot: boolean;
  /** cgroup id (the cgroup2 inode number), as the kernel reports it for links. */
  cgroupId: bigint;
  /** How it was found, for logs and `berth status`. */
  how: 'explicit' | 'mountinfo' | 'host-namespace-mount';
  /** berth mounted cgroup2 itself (at <runDir>/cgroupv2) during this call. */
  mounted: boolean;
}


/** Is the directory behind fd a cgroup2 root? (Through /proc/self/fd, so it works for a
 * directory in another mount namespace.) */
export function isCgroup2Root(fd: number): boolean {
  const p = `/proc/self/fd/${fd}`;
  try {
    if (Number(fs.statfsSync(p).type) !== CGROUP2_SUPER_MAGIC) return false;
    if (!fs.existsSync(path.join(p, 'cgroup.procs'))) return false;
    return !fs.existsSync(path.join(p, 'cgroup.type')) && !fs.existsSync(path.join(p, 'cgroup.events'));
  } catch {
    return false;
  }
}

export function cgroupIdOf(fd: number): bigint {
  return fs.fstatSync(fd, { bigint: true }).ino;
}

/**
 * The host process whose namespaces define "the host": PID 1, or, where PID 1's ns links are
 * not accessible (a non-dumpable init, as on some VM init shims), kthreadd (PID 2), which as a
 * kernel thread always lives in the initial namespaces. null when neither is readable.
 */
export function hostNsPid(hostProc: string): number | null {
  const readable = (pid: number): boolean => {
    try {
      fs.readlinkSync(path.join(hostProc, String(pid), 'ns', 'cgroup'));
      fs.readlinkSync(path.join(hostProc, String(pid), 'ns', 'mnt'));
      return true;
    } catch {
      return false;
    }
  };
  if (readable(1)) return 1;
  try {
    if (fs.readFileSync(path.join(hostProc, '2', 'comm'), 'utf8').trim() === 'kthreadd' && readable(2)) return 2;
  } catch {
    // no such process
  }
  return null;
}

/** Does this process live in a cgroup namespace other than the host's? null when unknowable. */
export function privateCgroupNamespace(hostProc: string, pid: number | null = hostNsPid(hostProc)): boolean | null {
  if (pid === null) return null;
  try {
    return fs.readlinkSync(path.join(hostProc, String(pid), 'ns', 'cgroup')) !== fs.readlinkSync('/proc/self/ns/cgroup');
  } catch {
    return null;
  }
}

/** cgroup2 mounts whose top is the namespace's root ('/'), from mountinfo. */
export function cgroup2RootMounts(mountinfo = '/proc/self/mountinfo'): string[] {
  return readMountInfo(mountinfo).filter((m) => m.fsType === 'cgroup2' && m.root === '/').map((m) => m.mountPoint);
}

export async function resolveCgroupRoot(
  native: NativeAddon,
  o: { cgroupRoot: string; hostProc: string; runDir: string; logger: Logger },
): Promise<CgroupRoot> {
  const done = (p: string, fd: number, how: CgroupRoot['how'], mounted: boolean): CgroupRoot => ({
    path: p, fd, how, mounted, isHostRoot: isCgroup2Root(fd), cgroupId: cgroupIdOf(fd),
  });
  if (o.cgroupRoot !== 'auto') {
    const fd = native.openDir(o.cgroupRoot);
    if (Number(fs.statfsSync(`/proc/self/fd/${fd}`).type) !== CGROUP2_SUPER_MAGIC) {
      native.closeFd(fd);
      throw new DatapathError(DatapathErrorCode.CGROUP, `cgroupRoot ${o.cgroupRoot} is not a cgroup2 directory`);
    }
    return done(o.cgroupRoot, fd, 'explicit', false);
  }
  const pid = hostNsPid(o.hostProc);
  const priv = privateCgroupNamespace(o.hostProc, pid);
  if (priv === null) o.logger.warn({ hostProc: o.hostProc }, 'cannot read the host\'s namespaces (PID 1 or 2); trying the visible cgroup2 mounts');
  if (!priv) {
    for (const m of cgroup2RootMounts()) {
      let fd: number;
      try {
        fd = native.openDir(m);
      } catch {
        continue;
      }
      if (isCgroup2Root(fd)) return done(m, fd, 'mountinfo', false);
      native.closeFd(fd);
    }
  }
  const target = path.join(o.runDir, 'cgroupv2');
  o.logger.info({ target, privateCgroupNamespace: priv }, 'mounting cgroup2 from the host cgroup and mount namespaces');
  let r: { path: string; fd: number; mounted: boolean };
  try {
    r = await native.hostCgroup2({ hostProc: o.hostProc, target, enterCgroupns: true, pid: pid ?? 1 });
  } catch (e) {
    // Without the host's namespaces (wrong hostProc, no CAP_SYS_ADMIN/CAP_SYS_CHROOT over them)
    // berth could only attach to the cgroup it sees as the top, which is seed 000's bug: VIPs
    // would work for berthd's own cgroup and silently for nobody else. `auto` promises the host
    // root, so it refuses; an explicit cgroupRoot is the way to accept a partial attach.
    throw new DatapathError(DatapathErrorCode.CGROUP, `cgroupRoot auto: the host's root cgroup is not visible here (${priv === null ? 'cgroup namespace unknown' : 'private cgroup namespace'}) and cannot be reached through ${o.hostProc}/${pid ?? 1}/ns (${e instanceof Error ? e.message : String(e)}); give berthd the host's /proc as hostProc and CAP_SYS_ADMIN + CAP_SYS_CHROOT, or set cgroupRoot to a cgroup2 directory to attach there knowingly`);
  }
  const root = done(r.path, r.fd, 'host-namespace-mount', r.mounted);
  if (!root.isHostRoot) {
    native.closeFd(r.fd);
    throw new DatapathError(DatapathErrorCode.CGROUP, `cgroupRoot auto: the cgroup2 mounted from ${o.hostProc}/${pid ?? 1}'s namespaces at ${r.path} is not the root cgroup (is hostProc the host's /proc?)`);
  }
  return root;
}
