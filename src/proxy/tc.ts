/**
 * Redirect mode `ebpf`: bpf/redirect.bpf.c (built to build/bpf/redirect.bpf.o) as a tc ingress
 * filter on the interfaces where ingress traffic arrives, steered by one pinned hash map
 * (VIP, listen) / (host address, publish) -> listener port. No TPROXY rule.
 *
 * Which interfaces, by default: every bridge (Docker's docker0 and br-* networks: a container's
 * packet to the host is seen on its bridge, so its veth, a bridge port, needs nothing) and the
 * interfaces of the host's default routes (outside clients on a publish port). Not ifb, tunnels,
 * stray veths or loopback: the program only ever touches packets whose (address, port) is in its
 * map, but berth stays off devices it has no reason to be on. Outside clients arriving on another
 * NIC are served by redirect mode iptables (or `redirectInterfaces`). Host processes never need
 * it: the socket LB sends them straight to 127.0.0.1:listener. The list is re-read on every
 * apply, so a new Docker network is picked up by the next reconcile.
 *
 * Loading, pinning, attaching and map writes go through bpftool and tc (iproute2): the same
 * kernel objects the addon would create, thin edges that `berth cleanup` can also remove.
 * Pins: <pinDir>/redirect/{prog,berth_redir4}; the map outlives berthd so the redirect keeps
 * working across a restart, like the datapath's maps.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run } from '../util/exec';
import { ProxyError, ProxyErrorCode } from './errors';
import { DEFAULT_REDIRECT_NAMES, type RedirectEntry } from './redirect-types';

export interface TcOptions {
  pinDir: string;
  /** Interfaces to attach to; null = the default choice described above. */
  interfaces: string[] | null;
  /** tc filter priority (DEFAULT_REDIRECT_NAMES.tcPref). */
  tcPref: number;
}

/** tc filter priority reserved for berth's program (and the handle within it). */
export const TC_PREF = DEFAULT_REDIRECT_NAMES.tcPref;
export const TC_HANDLE = 1;
export const PROG_NAME = 'berth_redirect';
const MAP_NAME = 'berth_redir4';

export function objectPath(): string {
  return process.env.BERTH_REDIRECT_OBJ ?? path.resolve(__dirname, '../../../build/bpf/redirect.bpf.o');
}

function pins(pinDir: string): { dir: string; prog: string; map: string } {
  const dir = path.join(pinDir, 'redirect');
  return { dir, prog: path.join(dir, 'prog'), map: path.join(dir, MAP_NAME) };
}

async function must(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new ProxyError(ProxyErrorCode.REDIRECT, `${cmd} ${args.join(' ')}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

// ---- map codec: mirrors struct berth_redir4_key / berth_redir4_val in bpf/redirect.bpf.c ----

/** Key: IPv4 address and port in network byte order, 2 bytes of zero padding. */
export function encodeKey(addr: string, port: number): Buffer {
  const b = Buffer.alloc(8);
  addr.split('.').forEach((o, i) => b.writeUInt8(Number(o), i));
  b.writeUInt16BE(port, 4);
  return b;
}

/** Value: listener port in host byte order, 2 bytes of zero padding. */
export function encodeValue(listenerPort: number): Buffer {
  const b = Buffer.alloc(4);
  if (os.endianness() === 'LE') b.writeUInt16LE(listenerPort, 0);
  else b.writeUInt16BE(listenerPort, 0);
  return b;
}

const hex = (b: Buffer): string[] => [...b].map((x) => x.toString(16).padStart(2, '0'));

/** The map's wanted content, hex key -> hex value. Pure. */
export function mapEntries(entries: RedirectEntry[], hostAddrs: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of entries) {
    const v = hex(encodeValue(e.listenerPort)).join(' ');
    out.set(hex(encodeKey(e.vip, e.listen)).join(' '), v);
    if (e.publish !== null) for (const a of hostAddrs) out.set(hex(encodeKey(a, e.publish)).join(' '), v);
  }
  return out;
}

// ---- host facts ----

export interface Link {
  ifname: string;
  master?: string;
  link_type?: string;
  linkinfo?: { info_kind?: string };
}

async function links(): Promise<Link[]> {
  return JSON.parse(await must('ip', ['-d', '-j', 'link', 'show'])) as Link[];
}

async function defaultRouteDevices(): Promise<string[]> {
  const out: string[] = [];
  for (const f of ['-4', '-6']) {
    const r = await run('ip', [f, '-j', 'route', 'show', 'default']);
    if (r.code === 0 && r.stdout.trim()) for (const x of JSON.parse(r.stdout) as { dev?: string }[]) if (x.dev) out.push(x.dev);
  }
  return out;
}

/** Default attach points (see above): bridges and default-route devices, Ethernet only (the program parses L2). Pure. */
export function defaultInterfaces(ls: Link[], defaultDevs: string[]): string[] {
  return ls
    .filter((l) => l.ifname !== 'lo' && (l.link_type ?? 'ether') === 'ether' && !l.master)
    .filter((l) => l.linkinfo?.info_kind === 'bridge' || defaultDevs.includes(l.ifname))
    .map((l) => l.ifname)
    .sort();
}

async function hostAddresses(): Promise<string[]> {
  const ifs = JSON.parse(await must('ip', ['-j', '-4', 'addr', 'show'])) as { addr_info?: { local?: string }[] }[];
  return [...new Set(ifs.flatMap((i) => (i.addr_info ?? []).map((a) => a.local).filter((a): a is string => !!a)))].sort();
}

async function hasOurFilter(ifname: string, pref: number): Promise<boolean> {
  // Listed for this priority only (tc then omits "pref N" from its output).
  const r = await run('tc', ['filter', 'show', 'dev', ifname, 'ingress', 'pref', String(pref)]);
  return r.code === 0 && / bpf /.test(r.stdout) && r.stdout.includes(`name ${PROG_NAME} `);
}

// ---- load / attach / sync ----

/** Load the object (reusing the pinned map when there is one, so entries survive) and pin the program. */
async function loadProgram(pinDir: string): Promise<void> {
  const p = pins(pinDir);
  const obj = objectPath();
  if (!fs.existsSync(obj)) throw new ProxyError(ProxyErrorCode.REDIRECT_UNSUPPORTED, `${obj} is missing (npm run build compiles bpf/redirect.bpf.c)`);
  fs.mkdirSync(p.dir, { recursive: true });
  // bpffs refuses names with a dot (EPERM), hence no ".new".
  const tmp = `${p.prog}_new`;
  fs.rmSync(tmp, { force: true });
  const reuse = fs.existsSync(p.map) ? ['map', 'name', MAP_NAME, 'pinned', p.map] : [];
  await must('bpftool', ['prog', 'load', obj, tmp, 'type', 'classifier', ...reuse, ...(reuse.length ? [] : ['pinmaps', p.dir])]);
  // Swap the pin: filters already attached keep the program they hold until replaced.
  fs.rmSync(p.prog, { force: true });
  fs.renameSync(tmp, p.prog);
}

async function attach(ifname: string, prog: string, pref: number): Promise<void> {
  // clsact may exist already (ours from before, or someone else's): both are fine.
  const q = await run('tc', ['qdisc', 'add', 'dev', ifname, 'clsact']);
  if (q.code !== 0 && !/File exists|Exclusivity flag on/.test(q.stderr)) throw new ProxyError(ProxyErrorCode.REDIRECT, `tc qdisc add dev ${ifname} clsact: ${q.stderr.trim()}`);
  await must('tc', ['filter', 'replace', 'dev', ifname, 'ingress', 'pref', String(pref), 'handle', String(TC_HANDLE), 'bpf', 'direct-action', 'object-pinned', prog]);
}

/** Remove berth's filter; remove clsact too when nothing else is left on it. */
async function detach(ifname: string, pref: number): Promise<boolean> {
  const r = await run('tc', ['filter', 'del', 'dev', ifname, 'ingress', 'pref', String(pref)]);
  const ing = await run('tc', ['filter', 'show', 'dev', ifname, 'ingress']);
  const egr = await run('tc', ['filter', 'show', 'dev', ifname, 'egress']);
  if (ing.code === 0 && egr.code === 0 && !ing.stdout.trim() && !egr.stdout.trim()) await run('tc', ['qdisc', 'del', 'dev', ifname, 'clsact']);
  return r.code === 0;
}

async function syncMap(mapPin: string, want: Map<string, string>): Promise<void> {
  const dump = JSON.parse(await must('bpftool', ['-j', 'map', 'dump', 'pinned', mapPin])) as { key: string[]; value: string[] }[];
  const have = new Map(dump.map((e) => [e.key.map((x) => x.replace(/^0x/, '')).join(' '), e.value.map((x) => x.replace(/^0x/, '')).join(' ')]));
  for (const [k, v] of want) {
    if (have.get(k) !== v) await must('bpftool', ['map', 'update', 'pinned', mapPin, 'key', 'hex', ...k.split(' '), 'value', 'hex', ...v.split(' ')]);
  }
  for (const k of have.keys()) {
    if (!want.has(k)) await must('bpftool', ['map', 'delete', 'pinned', mapPin, 'key', 'hex', ...k.split(' ')]);
  }
}

/** State of one process: the program is (re)loaded on the first apply, then only kept in step. */
export class TcAttachment {
  private loaded = false;
  private attached: Set<string> | null = null;

  constructor(private readonly o: TcOptions) {}

  async apply(entries: RedirectEntry[]): Promise<void> {
    const p = pins(this.o.pinDir);
    if (!this.loaded) {
      await loadProgram(this.o.pinDir);
      this.loaded = true;
    }
    // Entries first: a newly attached program must find the map ready.
    await syncMap(p.map, mapEntries(entries, await hostAddresses()));
    const ls = await links();
    const present = new Set(ls.map((l) => l.ifname));
    const want = new Set((this.o.interfaces ?? defaultInterfaces(ls, await defaultRouteDevices())).filter((i) => present.has(i)));
    if (this.attached === null) {
      // First apply of this process: replace the filter everywhere (a new program), and find
      // interfaces a previous run attached to that are no longer wanted.
      this.attached = new Set();
      for (const l of ls) if (!want.has(l.ifname) && (await hasOurFilter(l.ifname, this.o.tcPref))) await detach(l.ifname, this.o.tcPref);
      for (const i of want) await attach(i, p.prog, this.o.tcPref);
      this.attached = want;
      return;
    }
    for (const i of want) if (!this.attached.has(i) || !(await hasOurFilter(i, this.o.tcPref))) await attach(i, p.prog, this.o.tcPref);
    for (const i of this.attached) if (!want.has(i) && present.has(i)) await detach(i, this.o.tcPref);
    this.attached = want;
  }
}

/** Every berth filter on every interface, and the pins. */
export async function removeTc(pinDir?: string, tcPref: number = TC_PREF): Promise<string[]> {
  const removed: string[] = [];
  let ls: Link[] = [];
  try {
    ls = await links();
  } catch { /* no iproute2: nothing can be attached either */ }
  for (const l of ls) {
    if ((await hasOurFilter(l.ifname, tcPref)) && (await detach(l.ifname, tcPref))) removed.push(`tc filter ${l.ifname} ingress pref ${tcPref} (${PROG_NAME})`);
  }
  if (pinDir) {
    const dir = pins(pinDir).dir;
    if (fs.existsSync(dir)) {
      fs.rmSync(dir, { recursive: true, force: true });
      removed.push(dir);
    }
  }
  return removed;
}

/**
 * Can this host do the ebpf redirect? Loads the real object into a throwaway pin (the verifier
 * checks bpf_sk_assign and the socket lookups on this kernel) and removes it again.
 */
export async function ebpfSupport(): Promise<{ ok: boolean; reason: string }> {
  const obj = objectPath();
  if (!fs.existsSync(obj)) return { ok: false, reason: `${obj} is missing (build berth with npm run build)` };
  if (!fs.existsSync('/sys/fs/bpf')) return { ok: false, reason: 'bpffs is not mounted at /sys/fs/bpf' };
  const pin = `/sys/fs/bpf/berth-redirect-probe-${process.pid}`;
  try {
    const r = await run('bpftool', ['prog', 'load', obj, pin, 'type', 'classifier']);
    if (r.code === 127) return { ok: false, reason: 'bpftool not found' };
    if (r.code !== 0) return { ok: false, reason: `the kernel refuses the tc program: ${(r.stderr.trim().split('\n').pop() ?? '').slice(0, 200)}` };
    const tc = await run('tc', ['-V']);
    if (tc.code !== 0) return { ok: false, reason: 'tc (iproute2) not found' };
    return { ok: true, reason: 'tc program with bpf_sk_assign loads on this kernel' };
  } finally {
    fs.rmSync(pin, { force: true });
  }
}
