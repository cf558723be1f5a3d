/**
 * Small IPv4/IPv6 helpers for the model: parse, canonical format, CIDR arithmetic.
 *
 * Addresses are held as a bigint so that both families share one set of range operations (a VIP
 * is "base + offset" in either). The canonical text form is what the rest of berth compares and
 * prints: dotted quad for IPv4, RFC 5952 for IPv6 (lower case, no leading zeros, the longest run
 * of two or more zero groups compressed, leftmost on a tie; IPv4-mapped addresses stay in hex, as
 * WHATWG URL does). Pure: no I/O.
 */
import net from 'node:net';

export type Family = 4 | 6;

export interface Addr {
  family: Family;
  value: bigint;
}

export interface Cidr {
  family: Family;
  /** Network address (host bits cleared). */
  base: bigint;
  prefix: number;
  /** Number of addresses in the range. */
  size: bigint;
  /** Canonical text, e.g. `10.96.0.0/16`. */
  text: string;
}

const BITS: Record<Family, number> = { 4: 32, 6: 128 };

/**
 * The value of `s` when it is an IPv4 address in canonical dotted-quad form (four decimal parts
 * 0-255, no leading zeros, nothing else), else -1. A hand-written scan: the model and the
 * datapath meet every backend address several times per full pass, and net.isIPv4's regular
 * expression was a visible share of a cold start at 40,000 containers (node --cpu-prof).
 */
export function canonicalV4Value(s: string): number {
  let value = 0, part = 0, digits = 0, dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || dots === 3) return -1;
      value = value * 256 + part;
      dots++;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return -1; // a leading zero
      part = part * 10 + (c - 48);
      if (part > 255) return -1;
      digits++;
    } else {
      return -1;
    }
  }
  if (digits === 0 || dots !== 3) return -1;
  return value * 256 + part;
}

/** Parses an IPv4 or IPv6 address (no zone id, no prefix); null when it is not one. */
export function parseIp(text: string): Addr | null {
  const v4 = canonicalV4Value(text);
  if (v4 >= 0) return { family: 4, value: BigInt(v4) };
  const s = text.trim();
  const kind = net.isIP(s);
  if (kind === 4) return { family: 4, value: parseV4(s) };
  // net.isIPv6 accepts zone ids ("fe80::1%eth0"); a VIP or subnet never carries one.
  if (kind === 6 && !s.includes('%')) return { family: 6, value: parseV6(s) };
  return null;
}

function parseV4(s: string): bigint {
  return s.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
}

/** Expands `a::b` and a trailing dotted quad; input already validated by net.isIPv6. */
function parseV6(s: string): bigint {
  const groups = (part: string): number[] => {
    if (part === '') return [];
    const out: number[] = [];
    for (const g of part.split(':')) {
      if (g.includes('.')) {
        const v4 = parseV4(g);
        out.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
      } else {
        out.push(parseInt(g, 16));
      }
    }
    return out;
  };
  const halves = s.split('::');
  const head = groups(halves[0]);
  const tail = halves.length > 1 ? groups(halves[1]) : [];
  const all = halves.length > 1 ? [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail] : head;
  return all.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
}

export function formatIp(a: Addr): string {
  if (a.family === 4) {
    const v = Number(a.value);
    // (join: a flat string; a template of 13+ characters is a rope that every VIP would keep.)
    return [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((a.value >> BigInt(i * 16)) & 0xffffn));
  // Longest run of zero groups (length >= 2), leftmost on a tie (RFC 5952 4.2).
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return [hex.slice(0, bestStart).join(':'), hex.slice(bestStart + bestLen).join(':')].join('::');
}

/** The canonical text of an address, or null when `text` is not an address. */
export function canonicalIp(text: string): string | null {
  // Canonical IPv4 text is returned as is (the same string: no copy kept per backend).
  if (canonicalV4Value(text) >= 0) return text;
  const a = parseIp(text);
  return a ? formatIp(a) : null;
}

/** Parses `addr/prefix`; host bits are cleared (`10.96.1.2/16` is `10.96.0.0/16`). */
export function parseCidr(text: string): Cidr | null {
  const m = /^([^/\s]+)\/(\d{1,3})$/.exec(text.trim());
  if (!m) return null;
  const a = parseIp(m[1]);
  if (!a) return null;
  const prefix = Number(m[2]);
  const bits = BITS[a.family];
  if (prefix > bits) return null;
  const hostBits = BigInt(bits - prefix);
  const base = (a.value >> hostBits) << hostBits;
  return { family: a.family, base, prefix, size: 1n << hostBits, text: `${formatIp({ family: a.family, value: base })}/${prefix}` };
}

export function cidrContains(c: Cidr, a: Addr): boolean {
  return a.family === c.family && a.value >= c.base && a.value < c.base + c.size;
}

/** The address `offset` places after the range's network address. */
export function cidrAt(c: Cidr, offset: bigint): Addr {
  return { family: c.family, value: c.base + offset };
}

/** The range's last address (IPv4 broadcast; kept out of VIPs in IPv6 too, for symmetry). */
export function cidrLast(c: Cidr): Addr {
  return { family: c.family, value: c.base + c.size - 1n };
}

const LOOPBACK4 = parseCidr('127.0.0.0/8')!;
const LOOPBACK6 = parseCidr('::1/128')!;
// ::ffff:127.0.0.0/104: IPv4 loopback reached through an IPv4-mapped IPv6 socket.
const MAPPED_LOOPBACK6 = parseCidr('::ffff:7f00:0/104')!;

export function isLoopback(a: Addr): boolean {
  return cidrContains(LOOPBACK4, a) || cidrContains(LOOPBACK6, a) || cidrContains(MAPPED_LOOPBACK6, a);
}

export function sameAddr(a: Addr, b: Addr): boolean {
  return a.family === b.family && a.value === b.value;
}
