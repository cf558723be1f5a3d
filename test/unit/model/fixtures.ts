/** Builders for model unit tests: containers and snapshots with only the fields a test cares about. */
import type { ContainerInfo, DockerSnapshot, HostInfo, NetworkInfo } from '../../../src/model/types';

/** A stable per-name address, so two builds from the same names are comparable. */
function ipOf(name: string): string {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) % 250;
  return `172.17.0.${h + 2}`;
}

export function container(name: string, labels: Record<string, string>, over: Partial<ContainerInfo> = {}): ContainerInfo {
  return {
    id: over.id ?? `${name}-id`.padEnd(64, '0'),
    name,
    labels,
    state: 'running',
    health: 'none',
    stopping: false,
    exposedPorts: [],
    networks: [{ name: 'bridge', id: 'n-bridge', ip: ipOf(name), ip6: null }],
    ...over,
  };
}

export const BRIDGE: NetworkInfo = { id: 'n-bridge', name: 'bridge', subnets: ['172.17.0.0/16', 'fd00:dead::/64'], gateways: ['172.17.0.1', 'fd00:dead::1'] };

/** A Docker network that overlaps the default service range, to test the subnet/gateway checks. */
export const INSIDE: NetworkInfo = { id: 'n-inside', name: 'inside', subnets: ['10.96.200.0/24'], gateways: ['10.96.200.1'] };
export const GATEWAY_ONLY: NetworkInfo = { id: 'n-gw', name: 'odd', subnets: [], gateways: ['10.96.201.1'] };

export function snapshot(containers: ContainerInfo[], networks: NetworkInfo[] = [BRIDGE, INSIDE, GATEWAY_ONLY]): DockerSnapshot {
  return { containers, networks, takenAt: 0 };
}

export const HOST: HostInfo = { addresses: ['127.0.0.1', '::1', '192.168.1.10', '10.96.99.99', 'fe80::1%eth0'] };

export const CIDRS = { serviceCidr: '10.96.0.0/16', serviceCidr6: 'fd00:96::/112' };
