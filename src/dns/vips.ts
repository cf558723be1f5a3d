/**
 * The DNS VIPs and the datapath entry that serves them.
 *
 * The DNS VIP (config `dnsVip`, default the range's .10 like Kubernetes' kube-dns 10.96.0.10; and
 * `dnsVip6`, default the v6 range's ::a) is reserved in the model (BuildOptions.reserved) so that
 * no service takes it, and programmed as one more frontend of the socket load balancer whose
 * single backend is berthd's own DNS socket on a HOST address ("backend is the host itself").
 *
 * Which host address: a socket in a container's network namespace reaches the host at a Docker
 * bridge gateway (docker0's 172.17.0.1 from the default bridge; from a user-defined network the
 * same address is still a local address of the host, so the packet is INPUT, not FORWARD, and
 * Docker's inter-network isolation does not apply). Host processes reach that address too. So
 * one backend serves both, without a per-namespace choice in BPF. Without any Docker gateway,
 * loopback is used (then only host processes can reach it, which are the only clients there).
 * Pure: no I/O.
 */
import type { NetworkInfo, Service } from '../model/types';
import { type Cidr, cidrAt, cidrContains, cidrLast, formatIp, parseCidr, parseIp, sameAddr } from '../model/ip';

/** Name of the DNS frontend in the datapath: not a DNS label, so no user service can have it. */
export const DNS_SERVICE_NAME = 'berth:dns';
/** Port of the DNS VIP (what clients' resolv.conf implies). */
export const DNS_VIP_PORT = 53;
/** Offset of the default DNS VIP in each range (10.96.0.10, fd00:96::a). */
const DEFAULT_OFFSET = 10n;

export interface DnsVips {
  vip: string;
  /** null when dnsVip6 is 'off'. */
  vip6: string | null;
}

/** Thrown by dnsVips(); `key` names the config key at fault. */
export class DnsVipError extends Error {
  constructor(readonly key: 'dnsVip' | 'dnsVip6', message: string) {
    super(message);
    this.name = 'DnsVipError';
  }
}

function pick(key: 'dnsVip' | 'dnsVip6', value: string, rangeText: string): string {
  const range: Cidr | null = parseCidr(rangeText);
  if (!range) throw new DnsVipError(key, `service range ${rangeText} is not a CIDR`);
  if (range.size <= DEFAULT_OFFSET + 1n && value === 'auto') {
    throw new DnsVipError(key, `the service range ${rangeText} is too small for the default (.10); set ${key}`);
  }
  const a = value === 'auto' ? cidrAt(range, DEFAULT_OFFSET) : parseIp(value);
  if (!a || a.family !== range.family) throw new DnsVipError(key, `"${value}" is not an IPv${range.family} address`);
  if (!cidrContains(range, a)) throw new DnsVipError(key, `${value} is outside the service range ${rangeText}`);
  if (a.value === range.base || sameAddr(a, cidrLast(range))) {
    throw new DnsVipError(key, `${value} is the network or last address of the service range ${rangeText}`);
  }
  return formatIp(a);
}

/**
 * The effective DNS VIPs of a configuration. Throws DnsVipError (naming the key) when an explicit
 * VIP lies outside its range or is the range's network/last address.
 */
export function dnsVips(c: { serviceCidr: string; serviceCidr6: string; dnsVip: string; dnsVip6: string }): DnsVips {
  return {
    vip: pick('dnsVip', c.dnsVip, c.serviceCidr),
    vip6: c.dnsVip6 === 'off' ? null : pick('dnsVip6', c.dnsVip6, c.serviceCidr6),
  };
}

/**
 * The host address berthd's DNS socket is reached at through the VIP: the IPv4 gateway of
 * Docker's default `bridge` network, else of the first network (by name) that has one, else
 * 127.0.0.1.
 */
export function hostBackendAddress(networks: NetworkInfo[]): string {
  const v4 = (n: NetworkInfo) => n.gateways.map((g) => parseIp(g)).find((a) => a?.family === 4);
  const bridge = networks.find((n) => n.name === 'bridge');
  const first = bridge && v4(bridge) ? bridge : [...networks].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)).find((n) => v4(n));
  const a = first ? v4(first) : undefined;
  return a ? formatIp(a) : '127.0.0.1';
}

/**
 * The DNS VIP as a service for datapath.sync(): UDP and TCP port 53 of both VIPs to
 * `backendIp:port`. The IPv6 VIP uses the v4-mapped backend (as the ingress VIP does): a
 * dual-stack socket reaches the IPv4 listener over TCP and connected UDP (connect6 may rewrite to
 * a v4-mapped address); an unconnected UDP sendto() cannot (the kernel's udpv6_sendmsg refuses a
 * v4-mapped rewrite with ENOTSUPP), nor can an IPV6_V6ONLY socket.
 */
export function dnsFrontendService(vips: DnsVips, backendIp: string, port: number): Service {
  return {
    name: DNS_SERVICE_NAME,
    kind: 'service',
    vip: vips.vip,
    vip6: vips.vip6,
    ports: [
      { port: DNS_VIP_PORT, protocol: 'udp', targetPort: port },
      { port: DNS_VIP_PORT, protocol: 'tcp', targetPort: port },
    ],
    backends: [{ container: 'berthd', id: 'host', ip: backendIp, ip6: vips.vip6 ? `::ffff:${backendIp}` : null }],
    routes: [],
    ingress: null,
    errors: [],
  };
}
