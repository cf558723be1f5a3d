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

async function out(file: string, args: string[]): Promise<string> {
  const r = await run(file, args, { timeoutMs: 30000 });
  return r.code === 0 ? r.stdout : '';
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
  let top: fs.Dirent[];
  try {
    top = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return res;
  }
  for (const e of top.filter((x) => /berth/i.test(x.name))) {
    const p = path.join(dir, e.name);
    res.push(p);
    if (e.isDirectory()) {
      try {
        for (const c of fs.readdirSync(p)) res.push(path.join(p, c));
      } catch {
        // vanished meanwhile
      }
    }
  }
  return res.sort();
}

function walkBerth(root: string): string[] {
  const res: string[] = [];
  const walk = (dir: string, inside: boolean): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(dir, e.name);
      const mine = inside || /berth/i.test(e.name);
      if (mine) res.push(path.relative(root, p));
      if (e.isDirectory() && res.length < 10000) walk(p, mine);
    }
  };
  walk(root, false);
  return sorted(res);
}

async function berthContainers(): Promise<string[]> {
  const text = await out('docker', ['ps', '-a', '--format', '{{.Names}}\t{{.Labels}}']);
  return sorted(lines(text).filter((l) => /(^|,|\t)berth\./.test(l.split('\t')[1] ?? '')).map((l) => l.split('\t')[0]));
}

export async function snapshotHostState(): Promise<HostState> {
  const [tree, ipt4, ipt6, nft, rule4, rule6, netns, containers, r4, r6] = await Promise.all([
    out('bpftool', ['cgroup', 'tree']),
    out('iptables-save', []),
    out('ip6tables-save', []),
    out('nft', ['list', 'ruleset']),
    out('ip', ['rule']),
    out('ip', ['-6', 'rule']),
    out('ip', ['netns', 'list']),
    berthContainers(),
    out('ip', ['-4', 'route', 'show', 'table', 'all']),
    out('ip', ['-6', 'route', 'show', 'table', 'all']),
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
