/**
 * Redirect mode `ebpf`: bpf/redirect.bpf.c (built to build/bpf/redirect.bpf.o) as a tc ingress
 * filter on the interfaces where ingress traffic arrives, steered by one pinned hash map
 * (VIP, listen) / (host address, publish) -> listener port. No TPROXY rule.
 *
 * Which interfaces, by default: every Ethernet interface that is not a bridge port, not loopback
 * and not an ifb - i.e. the Docker bridges (docker0, br-*: a container's packet to the host is
 * seen on its bridge, so its veth, a bridge port, needs nothing), the NICs (outside clients on a
 * publish port, whichever NIC they come in on) and the host ends of veths to other namespaces
 * (a VM or netns "LAN"). The program only ever touches packets whose (address, port) is in its
 * map, so being on an interface costs one hash lookup per IP packet. Not L3 devices (tun,
 * WireGuard): the program parses an Ethernet header. Host processes never need it: the socket LB
 * sends them straight to 127.0.0.1:listener. The list is re-read on every apply, so a new Docker
 * network or NIC is picked up by the next reconcile.
 *
 * Loading, pinning, attaching and map writes go through berth's addon (src/native.ts, libbpf's
 * bpf_tc_* underneath); only listing an interface's other filters uses tc(8). Pins:
 * <pinDir>/redirect/{prog,berth_redir4}; the map outlives berthd so the redirect keeps working
 * across a restart, like the datapath's maps.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { run } from '../util/exec';
import { inBpffs, mkdirp } from '../util/mounts';
import { encodeRedirKey, encodeRedirVal } from '../datapath/codec';
import { bpfObjectPath, loadNative, type NativeAddon } from '../native';
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
const MAP4 = 'berth_redir4';
const MAP6 = 'berth_redir6';

export function objectPath(): string {
  return bpfObjectPath('redirect');
}

function pins(pinDir: string): { dir: string; prog: string; map4: string; map6: string } {
  const dir = path.join(pinDir, 'redirect');
  return { dir, prog: path.join(dir, 'prog'), map4: path.join(dir, MAP4), map6: path.join(dir, MAP6) };
}

async function must(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new ProxyError(ProxyErrorCode.REDIRECT, `${cmd} ${args.join(' ')}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

// ---- map content (the encoding is src/datapath/codec.ts's, checked against bpf/lb.h) ----

const hex = (b: Buffer): string[] => [...b].map((x) => x.toString(16).padStart(2, '0'));

/** The maps' wanted content, hex key -> hex value, per family. Pure. */
export function mapEntries(entries: RedirectEntry[], hostAddrs: string[]): { v4: Map<string, string>; v6: Map<string, string> } {
  const v4 = new Map<string, string>();
  const v6 = new Map<string, string>();
  const put = (addr: string, port: number, v: string) => {
    (net.isIPv4(addr) ? v4 : v6).set(hex(encodeRedirKey(addr, port)).join(' '), v);
  };
  for (const e of entries) {
    const v = hex(encodeRedirVal(e.listenerPort)).join(' ');
    put(e.vip, e.listen, v);
    if (e.vip6) put(e.vip6, e.listen, v);
    if (e.publish !== null) for (const a of hostAddrs) put(a, e.publish, v);
  }
  return { v4, v6 };
}

// ---- host facts ----

export interface Link {
  ifname: string;
  ifindex: number;
  master?: string;
  link_type?: string;
  linkinfo?: { info_kind?: string };
}

async function links(): Promise<Link[]> {
  return JSON.parse(await must('ip', ['-d', '-j', 'link', 'show'])) as Link[];
}

/** Default attach points (see above). Pure. */
export function defaultInterfaces(ls: Link[]): string[] {
  return ls
    .filter((l) => l.ifname !== 'lo' && (l.link_type ?? 'ether') === 'ether' && !l.master && l.linkinfo?.info_kind !== 'ifb')
    .map((l) => l.ifname)
    .sort();
}

async function hostAddresses(): Promise<string[]> {
  const ifs = JSON.parse(await must('ip', ['-j', 'addr', 'show'])) as { addr_info?: { local?: string }[] }[];
  return [...new Set(ifs.flatMap((i) => (i.addr_info ?? []).map((a) => a.local).filter((a): a is string => !!a)))].sort();
}

// ---- load / attach / sync, through the addon (src/native.ts: libbpf underneath) ----

function addon(): NativeAddon {
  try {
    return loadNative();
  } catch (e) {
    throw new ProxyError(ProxyErrorCode.REDIRECT_UNSUPPORTED, (e as Error).message);
  }
}

/** Run fn with an fd of a pinned object, closing it afterwards. */
function withPinned<T>(n: NativeAddon, pin: string, fn: (fd: number) => T): T {
  const fd = n.objGet(pin);
  try {
    return fn(fd);
  } finally {
    n.closeFd(fd);
  }
}

function hasOurFilter(n: NativeAddon, ifindex: number, pref: number): boolean {
  try {
    return n.tcQuery({ ifindex, direction: 'ingress', priority: pref, handle: TC_HANDLE }) !== null;
  } catch {
    return false; // no clsact on this interface: nothing of ours either
  }
}

/**
 * Load the object and pin the program. The map is LIBBPF_PIN_BY_NAME under the same directory:
 * reused when pinned there, so its entries (and the redirect) survive a berthd restart.
 */
function loadProgram(n: NativeAddon, pinDir: string): void {
  const p = pins(pinDir);
  const file = objectPath();
  if (!fs.existsSync(file)) throw new ProxyError(ProxyErrorCode.REDIRECT_UNSUPPORTED, `${file} is missing (npm run build compiles bpf/redirect.bpf.c)`);
  mkdirp(p.dir);
  const obj = n.loadObject(file, p.dir);
  try {
    const prog = obj.programs.find((x) => x.name === PROG_NAME);
    if (!prog) throw new ProxyError(ProxyErrorCode.REDIRECT, `${file} has no program ${PROG_NAME}`);
    // Replace the pin: filters already attached keep the program they hold until re-attached.
    fs.rmSync(p.prog, { force: true });
    n.objPin(prog.fd, p.prog);
  } finally {
    n.closeObject(obj.handle);
  }
}

function attach(n: NativeAddon, l: Link, prog: string, pref: number): void {
  // The addon creates clsact when missing and keeps one that exists (ours or someone else's).
  withPinned(n, prog, (fd) => n.tcAttach({ ifindex: l.ifindex, direction: 'ingress', progFd: fd, priority: pref, handle: TC_HANDLE, replace: true }));
}

/** Remove berth's filter; remove clsact too when nothing else is left on it. */
async function detach(n: NativeAddon, l: Link, pref: number): Promise<boolean> {
  let removed = false;
  try {
    removed = n.tcDetach({ ifindex: l.ifindex, direction: 'ingress', priority: pref, handle: TC_HANDLE });
  } catch { /* interface gone meanwhile */ }
  const ing = await run('tc', ['filter', 'show', 'dev', l.ifname, 'ingress']);
  const egr = await run('tc', ['filter', 'show', 'dev', l.ifname, 'egress']);
  if (ing.code === 0 && egr.code === 0 && !ing.stdout.trim() && !egr.stdout.trim()) {
    try {
      n.tcHookDestroy({ ifindex: l.ifindex });
    } catch { /* no clsact (anymore) */ }
  }
  return removed;
}

const VALUE_SIZE = 4;
const toHex = (b: Buffer): string => hex(b).join(' ');
const fromHex = (h: string): Buffer => Buffer.from(h.replace(/ /g, ''), 'hex');

function syncMap(n: NativeAddon, mapPin: string, keySize: number, want: Map<string, string>): void {
  const KEY_SIZE = keySize;
  withPinned(n, mapPin, (fd) => {
    const d = n.mapDump(fd);
    const have = new Map<string, string>();
    for (let i = 0; i < d.count; i++) {
      have.set(toHex(d.keys.subarray(i * KEY_SIZE, (i + 1) * KEY_SIZE)), toHex(d.values.subarray(i * VALUE_SIZE, (i + 1) * VALUE_SIZE)));
    }
    for (const [k, v] of want) if (have.get(k) !== v) n.mapUpdate(fd, fromHex(k), fromHex(v));
    for (const k of have.keys()) if (!want.has(k)) n.mapDelete(fd, fromHex(k));
  });
}

/** State of one process: the program is (re)loaded on the first apply, then only kept in step. */
export class TcAttachment {
  private loaded = false;
  private attached: Set<string> | null = null;

  constructor(private readonly o: TcOptions) {}

  async apply(entries: RedirectEntry[]): Promise<void> {
    const n = addon();
    const p = pins(this.o.pinDir);
    if (!this.loaded) {
      loadProgram(n, this.o.pinDir);
      this.loaded = true;
    }
    // Entries first: a newly attached program must find the map ready.
    const want = mapEntries(entries, await hostAddresses());
    syncMap(n, p.map4, 8, want.v4);
    syncMap(n, p.map6, 20, want.v6);
    const ls = await links();
    const byName = new Map(ls.map((l) => [l.ifname, l]));
    const ifs = new Set((this.o.interfaces ?? defaultInterfaces(ls)).filter((i) => byName.has(i)));
    const pref = this.o.tcPref;
    if (this.attached === null) {
      // First apply of this process: (re)attach everywhere (a freshly loaded program), and drop
      // interfaces a previous run attached to that are no longer wanted.
      for (const l of ls) if (!ifs.has(l.ifname) && hasOurFilter(n, l.ifindex, pref)) await detach(n, l, pref);
      for (const i of ifs) attach(n, byName.get(i)!, p.prog, pref);
      this.attached = ifs;
      return;
    }
    for (const i of ifs) if (!this.attached.has(i) || !hasOurFilter(n, byName.get(i)!.ifindex, pref)) attach(n, byName.get(i)!, p.prog, pref);
    for (const i of this.attached) if (!ifs.has(i) && byName.has(i)) await detach(n, byName.get(i)!, pref);
    this.attached = ifs;
  }
}

/** Every berth filter on every interface, and the pins. */
export async function removeTc(pinDir?: string, tcPref: number = TC_PREF): Promise<string[]> {
  const removed: string[] = [];
  let n: NativeAddon | null = null;
  try {
    n = loadNative();
  } catch { /* no addon: berth cannot have attached anything with it either */ }
  let ls: Link[] = [];
  try {
    ls = await links();
  } catch { /* no iproute2 */ }
  for (const l of ls) {
    if (n && hasOurFilter(n, l.ifindex, tcPref) && (await detach(n, l, tcPref))) removed.push(`tc filter ${l.ifname} ingress pref ${tcPref} (${PROG_NAME})`);
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
  const file = objectPath();
  if (!fs.existsSync(file)) return { ok: false, reason: `${file} is missing (build berth with npm run build)` };
  let n: NativeAddon;
  try {
    n = loadNative();
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
  if (!inBpffs('/sys/fs/bpf')) return { ok: false, reason: 'bpffs is not mounted at /sys/fs/bpf (berthd mounts it at start; cannot probe before that)' };
  // A pin root of its own: the map is pinned by name, and must not land anywhere that matters.
  const dir = `/sys/fs/bpf/berth-redirect-probe-${process.pid}`;
  try {
    fs.mkdirSync(dir);
    const obj = n.loadObject(file, dir);
    n.closeObject(obj.handle);
    return { ok: true, reason: 'tc program with bpf_sk_assign loads on this kernel' };
  } catch (e) {
    return { ok: false, reason: `the kernel refuses the tc program: ${((e as Error).message.split('\n')[0] ?? '').slice(0, 200)}` };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
