/**
 * VIP rules: which addresses of a service range may be a VIP, and the deterministic derivation
 * of a VIP from a name.
 *
 * Derivation hashes `kind/name` (sha256) into the range's usable addresses, i.e. without the
 * network and the last (broadcast) address. The same name and range give the same VIP on every
 * host and across restarts. An address that is forbidden (loopback, a host address, inside a
 * Docker subnet, a gateway) or taken by another service is skipped by rehashing with a counter
 * (`kind/name#1`, `#2`, ...); after MAX_REHASH attempts a bounded linear probe from the first hash
 * finds a free one if the range is nearly full. The kind is part of the hash so that a service and
 * an ingress of the same name get different VIPs. Pure: no I/O (hashing is computation).
 */
import { hash } from 'node:crypto';
import type { HostInfo, LabelError, NetworkInfo } from './types';
import { labelError } from './errors';
import { type Addr, type Cidr, cidrAt, cidrContains, cidrLast, formatIp, isLoopback, parseCidr, parseIp, sameAddr } from './ip';

export type ServiceKind = 'service' | 'ingress';

const MAX_REHASH = 64;
// Bound on the linear probe, so a huge range (an IPv6 /64) never turns a rebuild into a long loop.
const MAX_PROBE = 1n << 20n;

interface DockerNet {
  name: string;
  subnets: Cidr[];
  gateways: Addr[];
}

/** Everything a VIP of one family is checked against, parsed once per rebuild. */
export interface VipRules {
  range: Cidr;
  hostAddrs: Addr[];
  networks: DockerNet[];
  /** Addresses berth keeps for itself (the DNS VIP, src/dns/vips.ts): never a service's VIP. */
  reserved: Addr[];
}

/** `reserved`: addresses (either family; the other family's are ignored) no service may take. */
export function makeVipRules(range: Cidr, host: HostInfo, networks: NetworkInfo[], reserved: string[] = []): VipRules {
  const addrs = (list: string[]) =>
    list.map((s) => parseIp(s.replace(/%.*$/, ''))).filter((a): a is Addr => a !== null && a.family === range.family);
  return {
    range,
    hostAddrs: addrs(host.addresses),
    reserved: addrs(reserved),
    networks: [...networks]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((n) => ({
        name: n.name,
        subnets: n.subnets.map(parseCidr).filter((c): c is Cidr => c !== null && c.family === range.family),
        gateways: addrs(n.gateways),
      })),
  };
}

/** Why `a` cannot be a VIP, as a LabelError builder; null when it can (ownership aside). */
export function vipProblem(rules: VipRules, a: Addr): ((container: string, label: string) => LabelError) | null {
  // (The text only when there is a problem: this runs for every VIP of every full placement.)
  const r = rules.range;
  if (isLoopback(a)) return (c, l) => labelError(c, l, 'BERTH_VIP_LOOPBACK', formatIp(a));
  if (!cidrContains(r, a)) return (c, l) => labelError(c, l, 'BERTH_VIP_OUTSIDE_RANGE', formatIp(a), r.text);
  if (a.value === r.base || sameAddr(a, cidrLast(r))) return (c, l) => labelError(c, l, 'BERTH_VIP_RESERVED', formatIp(a), r.text);
  if (rules.reserved.some((h) => sameAddr(h, a))) return (c, l) => labelError(c, l, 'BERTH_VIP_BERTH_RESERVED', formatIp(a));
  if (rules.hostAddrs.some((h) => sameAddr(h, a))) return (c, l) => labelError(c, l, 'BERTH_VIP_HOST_ADDRESS', formatIp(a));
  // Gateways before subnets: a gateway lies inside its subnet, and "gateway" is the sharper reason.
  for (const n of rules.networks) {
    if (n.gateways.some((g) => sameAddr(g, a))) return (c, l) => labelError(c, l, 'BERTH_VIP_DOCKER_GATEWAY', formatIp(a), n.name);
  }
  for (const n of rules.networks) {
    const s = n.subnets.find((sub) => cidrContains(sub, a));
    if (s) return (c, l) => labelError(c, l, 'BERTH_VIP_DOCKER_SUBNET', formatIp(a), n.name, s.text);
  }
  return null;
}

/** Number of addresses a VIP can take: the range minus its network and last address. */
export function usableSize(range: Cidr): bigint {
  return range.size > 2n ? range.size - 2n : 0n;
}

/**
 * SHA-256 of a string as lowercase hex, by node's one-shot `crypto.hash` (node >= 20.12; berth
 * needs 20.17): no Hash object per digest. A cold start deriving 10,000 services' VIPs makes
 * 20,000 digests (v4 and v6); with createHash().update().digest() they took 113–165 ms, with
 * crypto.hash 37–49 ms (the same 20,000 strings, node 20.20 on this machine). Same digest.
 */
function sha256Hex(s: string): string {
  return hash('sha256', s, 'hex');
}

/** The n-th hash candidate for `kind/name` in the range (n = 0 is the name's "home" address). */
export function vipCandidate(kind: ServiceKind, name: string, range: Cidr, n: number): Addr | null {
  const usable = usableSize(range);
  if (usable === 0n) return null;
  const hex = sha256Hex(n === 0 ? `${kind}/${name}` : `${kind}/${name}#${n}`);
  const h = BigInt(`0x${hex.slice(0, 32)}`);
  return cidrAt(range, 1n + (h % usable));
}

/**
 * Derives the VIP of `kind/name`: the first hash candidate that is allowed and not taken, else a
 * bounded linear probe from the home address. Null when the range has no free address.
 */
export function deriveVip(kind: ServiceKind, name: string, rules: VipRules, taken: (a: Addr) => boolean): Addr | null {
  const free = (a: Addr) => !taken(a) && vipProblem(rules, a) === null;
  const home = vipCandidate(kind, name, rules.range, 0);
  if (!home) return null;
  for (let n = 0; n < MAX_REHASH; n++) {
    const a = n === 0 ? home : vipCandidate(kind, name, rules.range, n)!;
    if (free(a)) return a;
  }
  const usable = usableSize(rules.range);
  const start = home.value - rules.range.base - 1n;
  const steps = usable < MAX_PROBE ? usable : MAX_PROBE;
  for (let i = 1n; i < steps; i++) {
    const a = cidrAt(rules.range, 1n + ((start + i) % usable));
    if (free(a)) return a;
  }
  return null;
}
