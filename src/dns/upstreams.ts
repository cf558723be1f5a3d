/**
 * Which resolvers names outside the zone are forwarded to. Pure apart from readUpstreams(), which
 * only reads the two files.
 *
 * 'auto' takes the host's own resolvers, so that pointing a client at berth never breaks other
 * names: the `nameserver` lines of /etc/resolv.conf, except when that file names
 * systemd-resolved's stub (127.0.0.53 or 127.0.0.54): then resolved's own upstream list,
 * /run/systemd/resolve/resolv.conf, which it keeps current (the stub would work too, but it would
 * route `~<zone>` straight back to berth once `berth dns setup` is applied, and costs a hop).
 * Never forwarded to: berth's own DNS VIPs, anything in a VIP range and berthd's own DNS sockets
 * (each would be a forwarding loop; resolved's list does contain the DNS VIP once it is set up).
 */
import fs from 'node:fs';
import net from 'node:net';
import { cidrContains, parseCidr, parseIp } from '../model/ip';

export const ETC_RESOLV_CONF = '/etc/resolv.conf';
export const RESOLVED_RESOLV_CONF = '/run/systemd/resolve/resolv.conf';
const RESOLVED_STUBS = new Set(['127.0.0.53', '127.0.0.54']);

export interface Upstream {
  ip: string;
  port: number;
}

export interface UpstreamChoice {
  upstreams: Upstream[];
  /** Where they came from, for logs and `berth status`: 'config', a file path, or 'none'. */
  source: string;
  /** Nameservers left out, with the reason (loops). */
  skipped: { ip: string; port: number; why: string }[];
}

/** `nameserver` addresses of a resolv.conf text, in order (zone ids like %eth0 dropped). */
export function parseResolvConf(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!m) continue;
    const ip = m[1].replace(/%.*$/, '');
    if (net.isIP(ip)) out.push(ip);
  }
  return out;
}

/** Parses the `dnsUpstreams` list: `ip`, `ip:port`, `[ip6]:port`, comma separated (default port 53). */
export function parseUpstreamList(s: string): Upstream[] {
  return s.split(',').map((item) => {
    const t = item.trim();
    const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(t) ?? /^([0-9.]+)(?::(\d+))?$/.exec(t);
    if (m) return { ip: m[1], port: m[2] ? Number(m[2]) : 53 };
    return { ip: t, port: 53 };
  });
}

export interface UpstreamInputs {
  /** Config dnsUpstreams: 'auto' or a list. */
  configured: string;
  /** Content of /etc/resolv.conf, or null if unreadable. */
  etcResolvConf: string | null;
  /** Content of /run/systemd/resolve/resolv.conf, or null when absent. */
  resolvedResolvConf: string | null;
  /** VIP ranges (IPv4 and IPv6 CIDRs): nothing inside is an upstream. */
  ranges: string[];
  /** berthd's own DNS sockets (address and port). */
  self: Upstream[];
}

/** The forwarding decision (see the module comment). */
export function chooseUpstreams(i: UpstreamInputs): UpstreamChoice {
  let list: Upstream[];
  let source: string;
  if (i.configured !== 'auto') {
    list = parseUpstreamList(i.configured);
    source = 'config';
  } else {
    const etc = i.etcResolvConf === null ? [] : parseResolvConf(i.etcResolvConf);
    const resolved = i.resolvedResolvConf === null ? [] : parseResolvConf(i.resolvedResolvConf);
    if (etc.some((a) => RESOLVED_STUBS.has(a)) && resolved.length > 0) {
      list = resolved.map((ip) => ({ ip, port: 53 }));
      source = RESOLVED_RESOLV_CONF;
    } else {
      list = etc.map((ip) => ({ ip, port: 53 }));
      source = ETC_RESOLV_CONF;
    }
  }
  const ranges = i.ranges.map(parseCidr).filter((c) => c !== null);
  const upstreams: Upstream[] = [];
  const skipped: UpstreamChoice['skipped'] = [];
  for (const u of list) {
    const a = parseIp(u.ip);
    if (!a) {
      skipped.push({ ...u, why: 'not an IP address' });
      continue;
    }
    if (ranges.some((r) => r.family === a.family && cidrContains(r, a))) {
      skipped.push({ ...u, why: 'inside a VIP range (berth itself: a forwarding loop)' });
      continue;
    }
    if (i.self.some((s) => s.port === u.port && parseIp(s.ip)?.value === a.value && parseIp(s.ip)?.family === a.family)) {
      skipped.push({ ...u, why: "berthd's own DNS socket (a forwarding loop)" });
      continue;
    }
    if (!upstreams.some((x) => x.ip === u.ip && x.port === u.port)) upstreams.push(u);
  }
  return { upstreams, source: upstreams.length ? source : list.length ? `${source} (all skipped)` : 'none', skipped };
}

function readOrNull(p: string): string | null {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return null;
  }
}

/** chooseUpstreams() over the host's files (paths overridable for tests). */
export function readUpstreams(
  configured: string, ranges: string[], self: Upstream[],
  files: { etc: string; resolved: string } = { etc: ETC_RESOLV_CONF, resolved: RESOLVED_RESOLV_CONF },
): UpstreamChoice {
  return chooseUpstreams({
    configured, ranges, self,
    etcResolvConf: configured === 'auto' ? readOrNull(files.etc) : null,
    resolvedResolvConf: configured === 'auto' ? readOrNull(files.resolved) : null,
  });
}
