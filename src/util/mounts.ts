import fs from 'node:fs';
import path from 'node:path';

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

/** The mount that holds path (the longest mount point that is path or one of its ancestors). */
export function mountOf(p: string, file?: string): MountEntry | undefined {
  const abs = path.resolve(p);
  return readMountInfo(file)
    .filter((m) => m.mountPoint === '/' || abs === m.mountPoint || abs.startsWith(m.mountPoint + '/'))
    .reduce<MountEntry | undefined>((best, m) => (!best || m.mountPoint.length >= best.mountPoint.length ? m : best), undefined);
}

/** Whether path lies in a bpf filesystem (pins can be made there). */
export function inBpffs(p: string, file?: string): boolean {
  return mountOf(p, file)?.fsType === 'bpf';
}

/**
 * mkdir -p that cannot hang. Workaround: Node 20's fs.mkdirSync({recursive: true}) spins forever
 * when mkdir(2) answers ENOENT although the parent exists, which is what sysfs does for
 * /sys/fs/bpf/<x> on a host where bpffs is not mounted (seen on a fresh VM without systemd:
 * the test run hung at 100% CPU). Here that ENOENT is thrown, naming the directory.
 */
export function mkdirp(dir: string, mode?: number): void {
  try {
    fs.mkdirSync(dir, { mode });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'EEXIST' && fs.statSync(dir).isDirectory()) return;
    const parent = path.dirname(dir);
    if (err.code !== 'ENOENT' || parent === dir || fs.existsSync(parent)) throw err;
    mkdirp(parent, mode);
    fs.mkdirSync(dir, { mode });
  }
}
