/**
 * The only place in src/ that knows byte order and the byte layout of bpf/lb.h. Each encoder
 * names the C struct it mirrors; the sizes and offsets used here are checked against the ones
 * the addon exports from lb.h (checkLayout(), unit-tested), so a change to lb.h that is not
 * mirrored here fails loudly instead of corrupting maps.
 *
 * Conventions of lb.h: addresses and ports in network order (the bytes of the address as
 * written), everything else in host order.
 */
import net from 'node:net';
import os from 'node:os';
import type { Protocol } from '../model/types';
import type { LbOffsets, LbSizes } from '../native';
import { DatapathError, DatapathErrorCode } from './errors';
import { canonicalV4Value } from '../model/ip';

export const FAMILY_V4 = 4;
export const FAMILY_V6 = 6;
export type Family = typeof FAMILY_V4 | typeof FAMILY_V6;

export const SVC_F_HOST_NETNS = 0x1;
/** BERTH_SVC_F_NETS: per-network backend lists exist for this frontend (lb.h). */
export const SVC_F_NETS = 0x2;
/** BERTH_CLIENT_NETS: networks per client the connect hook looks at. */
export const CLIENT_NETS = 4;

/** Layout this module writes; must equal the addon's (bpf/lb.h as compiled). */
export const SIZES: LbSizes = {
  svcKey: 24, svcVal: 8, backendKey: 4, backend: 20, skRevnat: 152, skRevnatEnt: 36, counters: 16, config: 16, destroyKey: 20,
  redir4Key: 8, redir6Key: 20, redirVal: 4, flowKey: 40, clientNets: 8,
};
export const OFFSETS: LbOffsets = {
  svcKeyPort: 16, svcKeyProto: 18, svcKeyFamily: 19, svcKeySlot: 20, svcKeyNet: 22, svcValCount: 4, svcValFlags: 6,
  backendPort: 16, backendFamily: 18, skRevnatEntVip: 20, skRevnatNext: 144, countersNoBackend: 8,
  destroyKeyPort: 16, destroyKeyFamily: 18, redir4KeyPort: 4, redir6KeyPort: 16,
};

/** Differences between this module's layout and the addon's, as readable lines (empty = same). */
export function checkLayout(sizes: LbSizes, offsets: LbOffsets): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(SIZES)) {
    const got = (sizes as unknown as Record<string, number>)[k];
    if (got !== v) out.push(`sizeof ${k}: codec ${v}, lb.h ${got}`);
  }
  for (const [k, v] of Object.entries(OFFSETS)) {
    const got = (offsets as unknown as Record<string, number>)[k];
    if (got !== v) out.push(`offset ${k}: codec ${v}, lb.h ${got}`);
  }
  return out;
}

const LE = os.endianness() === 'LE';
function u16(b: Buffer, off: number, v: number): void { if (LE) b.writeUInt16LE(v, off); else b.writeUInt16BE(v, off); }
function u32(b: Buffer, off: number, v: number): void { if (LE) b.writeUInt32LE(v, off); else b.writeUInt32BE(v, off); }
function r16(b: Buffer, off: number): number { return LE ? b.readUInt16LE(off) : b.readUInt16BE(off); }
function r32(b: Buffer, off: number): number { return LE ? b.readUInt32LE(off) : b.readUInt32BE(off); }
function r64(b: Buffer, off: number): bigint { return LE ? b.readBigUInt64LE(off) : b.readBigUInt64BE(off); }

export const PROTO_NUM: Record<Protocol, number> = { tcp: 6, udp: 17 };
const PROTO_NAME: Record<number, Protocol> = { 6: 'tcp', 17: 'udp' };

/** Encoding/decoding failures (code BERTH_DP_CODEC). */
export class CodecError extends DatapathError {
  constructor(message: string) {
    super(DatapathErrorCode.CODEC, message);
  }
}

/** The address family of an IP string (4 or 6); throws on anything else. */
export function familyOf(ip: string): Family {
  if (canonicalV4Value(ip) >= 0) return FAMILY_V4;
  const known = ipCache.get(ip);
  if (known) return known.family;
  if (parseV6Into(ip, scratch, 0)) return FAMILY_V6;
  if (net.isIPv4(ip)) return FAMILY_V4;
  if (net.isIPv6(ip)) return FAMILY_V6;
  throw new CodecError(`not an IP address: '${ip}'`);
}

/** 16 bytes: IPv4 in the first 4 (rest zero), IPv6 as its 16 bytes. */
export function ipToBytes(ip: string): Buffer {
  const out = Buffer.alloc(16);
  writeIp(out, 0, ip);
  return out;
}

/**
 * Write the 16 address bytes of `ip` (ipToBytes) at `off` of `b`, which must be zero there;
 * returns its family. Canonical IPv4 text is written without an intermediate buffer (the batch
 * writers encode 100,000 keys in a cold start).
 */
export function writeIp(b: Buffer, off: number, ip: string): Family {
  const v4 = canonicalV4Value(ip);
  if (v4 >= 0) {
    b.writeUInt32BE(v4, off);
    return FAMILY_V4;
  }
  // IPv6 (and any IPv4 text net.isIPv4 takes that the scan did not): parsed once per address
  // (memoized, bounded), since every service's v6 VIP is in several keys of every full sync.
  let m = ipCache.get(ip);
  if (m === undefined) {
    m = { bytes: ipToBytesSlow(ip), family: familyOf(ip) };
    if (ipCache.size >= 65536) ipCache.clear();
    ipCache.set(ip, m);
  }
  m.bytes.copy(b, off);
  return m.family;
}

/** Address text -> its 16 bytes and family (writeIp's memo; the bytes are only copied from). */
const ipCache = new Map<string, { bytes: Buffer; family: Family }>();

/** 16 bytes parseV6Into may scribble on (familyOf's check). */
const scratch = Buffer.alloc(16);

const hexValue = (c: number): number => (c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1);

/**
 * The common IPv6 text forms in one scan, without a regex or intermediate arrays (a cold start
 * at 10,000 services parses 10,000 IPv6 VIPs, and the regex of net.isIPv6 plus split/map cost
 * ~0.25 s of CPU there): 1–4 hex digit groups, at most one `::` standing for one or more zero
 * groups, optionally a dotted IPv4 tail in net.isIPv4's strict form (no leading zeros). Writes
 * the 16 bytes at `off` of `out` and returns true; returns false for anything else (zone ids
 * `%eth0` included), and then ipToBytesSlow decides with net.isIPv6. Accepts nothing
 * net.isIPv6 rejects (test/unit/datapath/codec.test.ts checks this on random strings).
 */
export function parseV6Into(s: string, out: Buffer, off: number): boolean {
  const n = s.length;
  if (n < 2 || n > 45) return false;
  const groups: number[] = [];
  let gap = -1; // index in groups where '::' stands
  let i = 0;
  if (s.charCodeAt(0) === 58) {
    if (s.charCodeAt(1) !== 58) return false;
    gap = 0;
    i = 2;
  }
  while (i < n) {
    // A dotted IPv4 tail? (digits followed by '.' before the next ':')
    let j = i, v = 0, digits = 0;
    while (j < n && digits <= 4) {
      const h = hexValue(s.charCodeAt(j));
      if (h < 0) break;
      v = v * 16 + h;
      digits++;
      j++;
    }
    if (j < n && s.charCodeAt(j) === 46) {
      const v4 = canonicalV4Value(s.slice(i));
      if (v4 < 0 || groups.length > 6) return false;
      groups.push(Math.floor(v4 / 65536), v4 & 0xffff);
      i = n;
      break;
    }
    if (digits === 0 || digits > 4) return false;
    groups.push(v);
    if (groups.length > 8) return false;
    i = j;
    if (i === n) break;
    if (s.charCodeAt(i) !== 58) return false;
    i++;
    if (i < n && s.charCodeAt(i) === 58) {
      if (gap >= 0) return false;
      gap = groups.length;
      i++;
    } else if (i === n) {
      return false; // a single trailing ':'
    }
  }
  if (gap < 0 ? groups.length !== 8 : groups.length > 7) return false;
  const zeros = 8 - groups.length;
  let g = 0;
  for (let k = 0; k < 8; k++) {
    const x = gap >= 0 && k >= gap && k < gap + zeros ? 0 : groups[g++];
    out[off + 2 * k] = x >> 8;
    out[off + 2 * k + 1] = x & 255;
  }
  return true;
}

function ipToBytesSlow(ip: string): Buffer {
  const out = Buffer.alloc(16);
  if (parseV6Into(ip, out, 0)) return out;
  if (net.isIPv4(ip)) {
    ip.split('.').forEach((p, i) => { out[i] = Number(p); });
    return out;
  }
  const v6 = parseV6Split(ip);
  if (!v6) throw new CodecError(`not an IP address: '${ip}'`);
  return v6;
}

/**
 * IPv6 text -> its 16 bytes the general way: net.isIPv6 decides, then split/map (a `%zone`
 * dropped, an embedded IPv4 tail and `::` expanded). Null when net.isIPv6 rejects the text.
 * The path behind parseV6Into's fast scan, and the oracle its tests compare that scan with.
 * @throws CodecError when the groups do not make eight.
 */
export function parseV6Split(ip: string): Buffer | null {
  if (!net.isIPv6(ip)) return null;
  const out = Buffer.alloc(16);
  let s = ip.split('%')[0];
  const tail: number[] = [];
  const v4 = s.match(/(\d+\.\d+\.\d+\.\d+)$/);
  if (v4) {
    const b = v4[1].split('.').map(Number);
    tail.push((b[0] << 8) | b[1], (b[2] << 8) | b[3]);
    s = s.slice(0, -v4[1].length);
    if (s.endsWith(':') && !s.endsWith('::')) s = s.slice(0, -1);
  }
  const [head, rest] = s.includes('::') ? s.split('::') : [s, null];
  const h = head ? head.split(':').filter((x) => x !== '').map((x) => parseInt(x, 16)) : [];
  const r = rest ? rest.split(':').filter((x) => x !== '').map((x) => parseInt(x, 16)) : [];
  const fill = 8 - h.length - r.length - tail.length;
  const groups = rest === null ? [...h, ...tail] : [...h, ...new Array<number>(fill).fill(0), ...r, ...tail];
  if (groups.length !== 8) throw new CodecError(`bad IPv6 address: '${ip}'`);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

/** The text form of 16 address bytes (RFC 5952 for IPv6; ::ffff:a.b.c.d for v4-mapped). */
export function bytesToIp(b: Buffer, family: Family, off = 0): string {
  // (join: a flat string; the view keeps one per backend, and a 13+ character template is a rope.)
  if (family === FAMILY_V4) return [b[off], b[off + 1], b[off + 2], b[off + 3]].join('.');
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push(b.readUInt16BE(off + i * 2));
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) {
    return `::ffff:${b[off + 12]}.${b[off + 13]}.${b[off + 14]}.${b[off + 15]}`;
  }
  // Longest run (>= 2) of zero groups becomes '::'.
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(':');
  return [hex.slice(0, best).join(':'), hex.slice(best + bestLen).join(':')].join('::');
}

const v6Canonical = new Map<string, string>();

/** Canonical text of an address (so map dumps and the model compare equal). Hot at 100k
 * services: valid IPv4 text is already canonical (net.isIPv4 rejects leading zeros), and IPv6
 * results are memoized (bounded). */
export function canonicalIp(ip: string): string {
  if (canonicalV4Value(ip) >= 0) return ip;
  let c = v6Canonical.get(ip);
  if (c === undefined) {
    if (net.isIPv4(ip)) return ip;
    c = bytesToIp(ipToBytes(ip), familyOf(ip));
    if (v6Canonical.size >= 65536) v6Canonical.clear();
    v6Canonical.set(ip, c);
  }
  return c;
}

/** struct berth_svc_key */
export interface SvcKey {
  vip: string;
  port: number;
  protocol: Protocol;
  slot: number;
  /** Per-network list number (lb.h `net`); absent or 0 = list 0. */
  net?: number;
}

export function encodeSvcKey(k: SvcKey): Buffer {
  const b = Buffer.alloc(SIZES.svcKey);
  encodeSvcKeyInto(b, 0, k);
  return b;
}

/** encodeSvcKey into `b` at `off` (zeroed bytes), for batches encoded into one buffer. */
export function encodeSvcKeyInto(b: Buffer, off: number, k: SvcKey): void {
  const family = writeIp(b, off, k.vip);
  b.writeUInt16BE(k.port, off + OFFSETS.svcKeyPort);
  b[off + OFFSETS.svcKeyProto] = PROTO_NUM[k.protocol];
  b[off + OFFSETS.svcKeyFamily] = family;
  u16(b, off + OFFSETS.svcKeySlot, k.slot);
  if (k.net) u16(b, off + OFFSETS.svcKeyNet, k.net);
}

export function decodeSvcKey(b: Buffer, off = 0): SvcKey {
  const family = b[off + OFFSETS.svcKeyFamily] as Family;
  const protocol = PROTO_NAME[b[off + OFFSETS.svcKeyProto]];
  if ((family !== FAMILY_V4 && family !== FAMILY_V6) || !protocol) {
    throw new CodecError(`berth_svc_key with family ${family} proto ${b[off + OFFSETS.svcKeyProto]}`);
  }
  const net = r16(b, off + OFFSETS.svcKeyNet);
  return {
    vip: bytesToIp(b, family, off),
    port: b.readUInt16BE(off + OFFSETS.svcKeyPort),
    protocol,
    slot: r16(b, off + OFFSETS.svcKeySlot),
    ...(net ? { net } : {}),
  };
}

/** struct berth_svc_val: slot 0 {id = service id, count, flags}; slot n {id = backend id}. */
export interface SvcVal {
  id: number;
  count: number;
  flags: number;
}

export function encodeSvcVal(v: SvcVal): Buffer {
  const b = Buffer.alloc(SIZES.svcVal);
  encodeSvcValInto(b, 0, v);
  return b;
}

/** encodeSvcVal into `b` at `off`. */
export function encodeSvcValInto(b: Buffer, off: number, v: SvcVal): void {
  u32(b, off, v.id);
  u16(b, off + OFFSETS.svcValCount, v.count);
  b[off + OFFSETS.svcValFlags] = v.flags;
}

export function decodeSvcVal(b: Buffer, off = 0): SvcVal {
  return { id: r32(b, off), count: r16(b, off + OFFSETS.svcValCount), flags: b[off + OFFSETS.svcValFlags] };
}

/** struct berth_backend_key */
export function encodeBackendKey(id: number): Buffer {
  const b = Buffer.alloc(SIZES.backendKey);
  encodeU32Into(b, 0, id);
  return b;
}

export function decodeBackendKey(b: Buffer, off = 0): number {
  return r32(b, off);
}

/** struct berth_backend (and the address half of berth_destroy_key). */
export interface BackendAddr {
  ip: string;
  port: number;
}

export function encodeBackend(a: BackendAddr): Buffer {
  const b = Buffer.alloc(SIZES.backend);
  encodeBackendInto(b, 0, a);
  return b;
}

/** encodeBackend into `b` at `off` (zeroed bytes). */
export function encodeBackendInto(b: Buffer, off: number, a: BackendAddr): void {
  const family = writeIp(b, off, a.ip);
  b.writeUInt16BE(a.port, off + OFFSETS.backendPort);
  b[off + OFFSETS.backendFamily] = family;
}

export function decodeBackend(b: Buffer, off = 0): BackendAddr {
  const family = b[off + OFFSETS.backendFamily] as Family;
  if (family !== FAMILY_V4 && family !== FAMILY_V6) throw new CodecError(`berth_backend with family ${family}`);
  return { ip: bytesToIp(b, family, off), port: b.readUInt16BE(off + OFFSETS.backendPort) };
}

/** struct berth_destroy_key; a v4-mapped IPv6 address is keyed as IPv4, as the iterator does. */
export function encodeDestroyKey(a: BackendAddr): Buffer {
  const b = Buffer.alloc(SIZES.destroyKey);
  const bytes = ipToBytes(a.ip);
  let family = familyOf(a.ip);
  if (family === FAMILY_V6 && bytes.subarray(0, 10).every((x) => x === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    family = FAMILY_V4;
    bytes.copy(b, 0, 12, 16);
  } else {
    bytes.copy(b, 0);
  }
  b.writeUInt16BE(a.port, OFFSETS.destroyKeyPort);
  b[OFFSETS.destroyKeyFamily] = family;
  return b;
}

/** struct berth_config */
export function encodeConfig(c: { hostNetnsCookie: bigint }): Buffer {
  const b = Buffer.alloc(SIZES.config);
  if (LE) b.writeBigUInt64LE(c.hostNetnsCookie, 0); else b.writeBigUInt64BE(c.hostNetnsCookie, 0);
  return b;
}

export function decodeConfig(b: Buffer): { hostNetnsCookie: bigint } {
  return { hostNetnsCookie: r64(b, 0) };
}

/** u32 key of the array maps (counters, config). */
export function encodeU32(v: number): Buffer {
  const b = Buffer.alloc(4);
  u32(b, 0, v);
  return b;
}

/** A u32 in host order into `b` at `off` (backend ids, array map keys). */
export function encodeU32Into(b: Buffer, off: number, v: number): void {
  u32(b, off, v);
}

/** struct berth_counters, per CPU: the syscall returns one 8-aligned slot per possible CPU. */
export function decodeCountersPercpu(b: Buffer): { connects: number; noBackend: number } {
  const slot = Math.ceil(SIZES.counters / 8) * 8;
  let connects = 0n, noBackend = 0n;
  for (let off = 0; off + slot <= b.length; off += slot) {
    connects += r64(b, off);
    noBackend += r64(b, off + OFFSETS.countersNoBackend);
  }
  return { connects: Number(connects), noBackend: Number(noBackend) };
}

/**
 * struct berth_redir4_key or berth_redir6_key, by the address's family: the destination and
 * port in network order (the ingress redirect's maps, bpf/redirect.bpf.c).
 */
export function encodeRedirKey(addr: string, port: number): Buffer {
  const v6 = !net.isIPv4(addr);
  const b = Buffer.alloc(v6 ? SIZES.redir6Key : SIZES.redir4Key);
  ipToBytes(addr).copy(b, 0, 0, v6 ? 16 : 4);
  b.writeUInt16BE(port, v6 ? OFFSETS.redir6KeyPort : OFFSETS.redir4KeyPort);
  return b;
}

/** struct berth_redir_val: the Envoy listener port, host order. */
export function encodeRedirVal(listenerPort: number): Buffer {
  const b = Buffer.alloc(SIZES.redirVal);
  u16(b, 0, listenerPort);
  return b;
}

/** berth_netns key: a network namespace cookie (__u64, host order). */
export function encodeNetnsKey(cookie: bigint): Buffer {
  const b = Buffer.alloc(8);
  if (LE) b.writeBigUInt64LE(cookie); else b.writeBigUInt64BE(cookie);
  return b;
}

export function decodeNetnsKey(b: Buffer, off = 0): bigint {
  return r64(b, off);
}

/** struct berth_client_nets: up to CLIENT_NETS network numbers (1..65535), the rest zero. */
export function encodeClientNets(nets: number[]): Buffer {
  if (nets.length > CLIENT_NETS) throw new CodecError(`berth_client_nets holds at most ${CLIENT_NETS} networks, got ${nets.length}`);
  const b = Buffer.alloc(SIZES.clientNets);
  nets.forEach((n, i) => {
    if (!Number.isInteger(n) || n < 1 || n > 0xffff) throw new CodecError(`network number ${n} is outside 1-65535`);
    u16(b, i * 2, n);
  });
  return b;
}

export function decodeClientNets(b: Buffer, off = 0): number[] {
  const out: number[] = [];
  for (let i = 0; i < CLIENT_NETS; i++) {
    const n = r16(b, off + i * 2);
    if (n === 0) break;
    out.push(n);
  }
  return out;
}
