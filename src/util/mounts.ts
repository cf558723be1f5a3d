import fs from 'node:fs';

export interface MountEntry {
  mountPoint: string;
  /** Path of the mount's root inside its filesystem (for cgroup2: the cgroup it shows as its top). */
  root: string;
  fsType: string;
}

/** Undo mountinfo's octal escapes (\040 for a space, ...). */
function unescape(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parse /proc/<pid>/mountinfo (proc(5)): fields 4 and 5 are root and mount point, the type follows ' - '. */
export function readMountInfo(file = '/proc/self/mountinfo'): MountEntry[] {
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((line) => {
    const [pre, post] = line.split(' - ');
    const f = pre.split(' ');
    return { root: unescape(f[3]), mountPoint: unescape(f[4]), fsType: (post ?? '').split(' ')[0] };
  });
}

export function findCgroup2Mounts(file?: string): string[] {
  return readMountInfo(file).filter((m) => m.fsType === 'cgroup2').map((m) => m.mountPoint);
}

/** Mount points at or below dir, deepest first. */
export function mountsBelow(dir: string, file?: string): string[] {
  return readMountInfo(file)
    .map((m) => m.mountPoint)
    .filter((m) => m === dir || m.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length);
}
