/**
 * "The machine is as before": a snapshot of everything berth (or a test) could leave behind in the
 * kernel, in Docker and in bpffs, and a diff that names what changed.
 *
 *   const before = await snapshotHostState();
 *   …run berthd, berth cleanup…
 *   t.deepEqual(diffHostState(before, await snapshotHostState()), []);
 *
 * Each field is a sorted list of normalised lines. Normalisation drops what changes without
 * anyone leaking anything: BPF program ids (a re-attach gets a new id), iptables counters, the
 * `linkdown` flag of a bridge, link-local/multicast routes and anything on container veths (they
 * come and go with other tests' containers).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { TestFn } from 'ava';
import { run } from '../../src/util/exec';

export interface HostState {
  /** `bpftool cgroup tree`: "<cgroup> <attach type> <flags> <program name>" per attached program. */
  bpftoolCgroupTree: string[];
  /** iptables-save and ip6tables-save lines mentioning berth (counters stripped). */
  iptablesSave: string[];
  /** `nft list ruleset` lines mentioning berth. */
  nftBerth: string[];
  /** `ip rule` and `ip -6 rule`. */
  ipRules: string[];
  /** `ip netns list` names. */
  ipNetns: string[];
  /** Containers carrying any berth.* label (name). */
  berthContainers: string[];
  /** Paths under /sys/fs/bpf whose name contains "berth", and everything below them. */
  bpffsBerth: string[];
  /** IPv4 and IPv6 routes of all tables, normalised as above. */
  routes: string[];
  /** Entries named *berth* directly in /run and /var/lib, and what is directly inside them. */
  berthDirs: string[];
}

/** Runs a command of the snapshot; how (tests of the helper itself pass one that fails). */
export type SnapshotRunner = (file: string, args: string[]) => Promise<{ code: number; stdout: string; stderr: string }>;

const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/**
 * The system's own binary, never a PATH lookup: npm puts node_modules/.bin first in PATH, and
 * there `nft` is @vercel/nft (a file tracer, pulled in by the build tools) that prints an error for
 * `nft list ruleset` and exits 0 -- the nft part of the snapshot was silently always empty.
 */
export function systemCommand(name: string): string {
  for (const d of SYSTEM_DIRS) if (fs.existsSync(path.join(d, name))) return path.join(d, name);
  throw new Error(`host snapshot: ${name} not found in ${SYSTEM_DIRS.join(', ')}`);
}

const defaultRunner: SnapshotRunner = (file, args) => run(systemCommand(file), args, { timeoutMs: 30000 });

/**
 * stdout of a snapshot command. A command that fails throws, naming it: an empty "before" and an
 * empty "after" would otherwise compare equal and hide whatever was left behind.
 */
async function out(runner: SnapshotRunner, file: string, args: string[]): Promise<string> {
  const r = await runner(file, args);
  if (r.code !== 0) throw new Error(`host snapshot: \`${[file, ...args].join(' ')}\` failed (exit ${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** readdir that treats only "gone" as empty; any other error fails the snapshot. */
function readdirOrGone(dir: string): fs.Dirent[] {
  try {
    return fs.readdirSync(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new Error(`host snapshot: cannot read ${dir}: ${(e as Error).message}`);
  }
}

const lines = (s: string): string[] => s.split('\n').map((l) => l.trimEnd()).filter((l) => l.trim() !== '');
const sorted = (a: string[]): string[] => [...a].sort();

export function parseCgroupTree(text: string): string[] {
  const res: string[] = [];
  let cgroup = '';
  for (const l of lines(text)) {
    if (l.startsWith('/')) cgroup = l.trim();
    else {
      const m = /^\s*(\d+)\s+(\S+)\s+(\S*)\s*(\S*)\s*$/.exec(l);
      // "ID AttachType AttachFlags Name": keep everything but the id.
      if (m) res.push(`${cgroup} ${m[2]} ${m[3]} ${m[4]}`.trim());
    }
  }
  return sorted(res);
}

export function normaliseIptables(text: string): string[] {
  return sorted(lines(text).filter((l) => /berth/i.test(l)).map((l) => l.replace(/\[\d+:\d+\]/g, '').trim()));
}

export function normaliseRoutes(text: string): string[] {
  return sorted(
    lines(text)
      .filter((l) => !/\bdev veth/.test(l) && !/fe80::|ff00::\/8/.test(l))
      .map((l) => l.replace(/\blinkdown\b/g, '').replace(/\bexpires \d+sec\b/g, '').replace(/\s+/g, ' ').trim()),
  );
}

/** Top-level *berth* entries of dir and their direct children (no deeper: /var/lib holds Docker's trees). */
function berthEntries(dir: string): string[] {
  const res: string[] = [];
  if (!fs.existsSync(dir)) throw new Error(`host snapshot: ${dir} does not exist`);
  for (const e of readdirOrGone(dir).filter((x) => /berth/i.test(x.name))) {
    const p = path.join(dir, e.name);
    res.push(p);
    if (e.isDirectory()) for (const c of readdirOrGone(p)) res.push(path.join(p, c.name));
  }
  return res.sort();
}

function walkBerth(root: string): string[] {
  const res: string[] = [];
  const walk = (dir: string, inside: boolean): void => {
    for (const e of readdirOrGone(dir)) {
      const p = path.join(dir, e.name);
      const mine = inside || /berth/i.test(e.name);
      if (mine) res.push(path.relative(root, p));
      if (e.isDirectory() && res.length < 10000) walk(p, mine);
    }
  };
  if (!fs.existsSync(root)) throw new Error(`host snapshot: ${root} does not exist`);
  walk(root, false);
  return sorted(res);
}

async function berthContainers(runner: SnapshotRunner): Promise<string[]> {
  const text = await out(runner, 'docker', ['ps', '-a', '--format', '{{.Names}}\t{{.Labels}}']);
  return sorted(lines(text).filter((l) => /(^|,|\t)berth\./.test(l.split('\t')[1] ?? '')).map((l) => l.split('\t')[0]));
}

/**
 * Everything berth could leave behind, now. Throws (naming the command or directory) when any part
 * cannot be read: a snapshot with a hole in it would let that part pass unseen.
 */
export async function snapshotHostState(runner: SnapshotRunner = defaultRunner): Promise<HostState> {
  const o = (file: string, args: string[]) => out(runner, file, args);
  const [tree, ipt4, ipt6, nft, rule4, rule6, netns, containers, r4, r6] = await Promise.all([
    o('bpftool', ['cgroup', 'tree']),
    o('iptables-save', []),
    o('ip6tables-save', []),
    o('nft', ['list', 'ruleset']),
    o('ip', ['rule']),
    o('ip', ['-6', 'rule']),
    o('ip', ['netns', 'list']),
    berthContainers(runner),
    o('ip', ['-4', 'route', 'show', 'table', 'all']),
    o('ip', ['-6', 'route', 'show', 'table', 'all']),
  ]);
  return {
    bpftoolCgroupTree: parseCgroupTree(tree),
    iptablesSave: normaliseIptables(`${ipt4}\n${ipt6}`),
    nftBerth: sorted(lines(nft).filter((l) => /berth/i.test(l)).map((l) => l.trim())),
    ipRules: sorted([...lines(rule4), ...lines(rule6).map((l) => `v6 ${l}`)]),
    ipNetns: sorted(lines(netns).map((l) => l.split(/\s/)[0])),
    berthContainers: containers,
    bpffsBerth: walkBerth('/sys/fs/bpf'),
    routes: normaliseRoutes(`${r4}\n${r6}`),
    berthDirs: [...berthEntries('/run'), ...berthEntries('/var/lib')],
  };
}

/**
 * What changed between two snapshots, one message per line added or removed, e.g.
 *   'routes: + unreachable 10.96.0.0/16'   'bpffsBerth: - berth/maps/services'
 * Empty when the host is as before. `ignore` skips fields (e.g. berthContainers while another
 * suite runs containers concurrently).
 */
export function diffHostState(before: HostState, after: HostState, ignore: (keyof HostState)[] = []): string[] {
  const res: string[] = [];
  for (const key of Object.keys(before) as (keyof HostState)[]) {
    if (ignore.includes(key)) continue;
    const count = (a: string[]): Map<string, number> => {
      const m = new Map<string, number>();
      for (const x of a) m.set(x, (m.get(x) ?? 0) + 1);
      return m;
    };
    const b = count(before[key]);
    const a = count(after[key] ?? []);
    for (const [line, n] of b) for (let i = a.get(line) ?? 0; i < n; i++) res.push(`${key}: - ${line}`);
    for (const [line, n] of a) for (let i = b.get(line) ?? 0; i < n; i++) res.push(`${key}: + ${line}`);
  }
  return res;
}

/**
 * The host-as-before check every integration file ends with: a snapshot before the file's first
 * hook, and after its last cleanup hook a diff that must be empty (also when a test failed: its
 * teardown must still leave nothing behind).
 *
 * AVA runs hooks of one kind in the order they are declared, so call this after the file's own
 * `test.after.always` hooks and before its own `test.before` hooks (files without hooks: anywhere,
 * by convention at the end).
 */
export function hostAsBefore(test: TestFn, opts: { ignore?: (keyof HostState)[]; ownLeftovers?: RegExp } = {}): void {
  let before: HostState | null = null;
  test.before('host snapshot before the suite', async () => {
    before = await snapshotHostState();
  });
  test.after.always('host as before the suite', async (t) => {
    if (!before) return t.fail('no snapshot was taken before the suite');
    const diff = diffHostState(before, await snapshotHostState(), opts.ignore ?? []);
    // A suite that first removes what a crashed earlier run of itself left behind (its own
    // names only) may find the host cleaner than before; anything else is a difference.
    const own = (l: string): boolean => !!opts.ownLeftovers && /^\w+: - /.test(l) && opts.ownLeftovers.test(l);
    if (diff.some(own)) t.log(`removed leftovers of an earlier run of this suite:\n${diff.filter(own).join('\n')}`);
    t.deepEqual(diff.filter((l) => !own(l)), [], 'the host is as it was before this file ran');
  });
}
