/**
 * Docker API objects → berth's plain snapshot types (src/model/types.ts). Pure: the watcher does
 * the I/O, this module only decides what each field means, so the odd corners (no health block,
 * empty IP strings, "8080/tcp" keys) are unit-tested without a Docker engine.
 */
import type { ContainerInfo, ContainerNetwork, NetworkInfo, Protocol } from '../model/types';

/** The subset of `docker inspect <container>` that berth reads. */
export interface InspectLike {
  Id: string;
  Name?: string;
  /** RFC 3339 with nanoseconds; the list's Created is only whole seconds. */
  Created?: string;
  State?: { Status?: string; StartedAt?: string; Health?: { Status?: string } | null } | null;
  Config?: { Labels?: Record<string, string> | null; ExposedPorts?: Record<string, unknown> | null; StopSignal?: string } | null;
  NetworkSettings?: {
    Networks?: Record<string, { NetworkID?: string; IPAddress?: string; GlobalIPv6Address?: string } | null> | null;
  } | null;
}

/** The subset of a `GET /containers/json` entry (the list's summary) that berth reads. */
export interface SummaryLike {
  Id: string;
  Names?: string[] | null;
  Created?: number;
  Labels?: Record<string, string> | null;
  State?: string;
  /** "Up 5 minutes (healthy)": the health is in parentheses, the uptime is noise. */
  Status?: string;
  NetworkSettings?: {
    Networks?: Record<string, { NetworkID?: string; IPAddress?: string; GlobalIPv6Address?: string } | null> | null;
  } | null;
}

/**
 * What in a container's list summary berth depends on: names, creation, state, health, labels,
 * networks and addresses. Equal signatures mean a previous inspect still describes the
 * container, except for what only events reveal (a restart between two lists), which the watcher
 * handles by dropping the cached inspect of every container an event names.
 */
export function summarySignature(s: SummaryLike): string {
  const health = /\((healthy|unhealthy|health: starting)\)/.exec(s.Status ?? '')?.[1] ?? '';
  const nets = Object.entries(s.NetworkSettings?.Networks ?? {})
    .map(([name, v]) => [name, v?.NetworkID ?? '', v?.IPAddress ?? '', v?.GlobalIPv6Address ?? ''].join(' '))
    .sort();
  const labels = Object.entries(s.Labels ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify([s.Names ?? [], s.Created ?? 0, s.State ?? '', health, labels, nets]);
}

/** The subset of a `GET /networks` entry that berth reads. */
export interface NetworkLike {
  Id: string;
  Name: string;
  IPAM?: { Config?: ({ Subnet?: string; Gateway?: string } | null)[] | null } | null;
}

const HEALTH = new Set(['starting', 'healthy', 'unhealthy']);

function health(s: string | undefined): ContainerInfo['health'] {
  return s && HEALTH.has(s) ? (s as ContainerInfo['health']) : 'none';
}

/** "8080/tcp" → {8080, tcp}; SCTP and malformed keys are dropped (berth balances TCP and UDP only). */
export function exposedPorts(ports: Record<string, unknown> | null | undefined): { port: number; protocol: Protocol }[] {
  const out: { port: number; protocol: Protocol }[] = [];
  for (const key of Object.keys(ports ?? {})) {
    const m = /^(\d+)(?:\/(tcp|udp))?$/.exec(key);
    if (!m) continue;
    const port = Number(m[1]);
    if (port < 1 || port > 65535) continue;
    out.push({ port, protocol: (m[2] ?? 'tcp') as Protocol });
  }
  return out.sort((a, b) => a.port - b.port || a.protocol.localeCompare(b.protocol));
}

/** Docker reports "no address" as an empty string; berth says null. */
function addr(s: string | undefined): string | null {
  return s ? s : null;
}

function networks(n: NonNullable<InspectLike['NetworkSettings']>['Networks']): ContainerNetwork[] {
  return Object.entries(n ?? {})
    .map(([name, v]) => ({ name, id: v?.NetworkID ?? '', ip: addr(v?.IPAddress), ip6: addr(v?.GlobalIPv6Address) }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** One inspected container; `stopping` is the watcher's own knowledge (from events), passed in. */
export function toContainerInfo(c: InspectLike, stopping: boolean): ContainerInfo {
  return {
    id: c.Id,
    name: (c.Name ?? '').replace(/^\//, ''),
    labels: { ...(c.Config?.Labels ?? {}) },
    state: c.State?.Status ?? 'unknown',
    health: health(c.State?.Health?.Status),
    stopping,
    exposedPorts: exposedPorts(c.Config?.ExposedPorts),
    networks: networks(c.NetworkSettings?.Networks),
    // The model decides which container of a service came first (and so wins a disagreement)
    // by creation time; the watcher's list order is by id, which says nothing about age.
    ...(c.Created && Number.isFinite(Date.parse(c.Created)) ? { created: Date.parse(c.Created) } : {}),
  };
}

export function toNetworkInfo(n: NetworkLike): NetworkInfo {
  const cfg = (n.IPAM?.Config ?? []).filter((c): c is { Subnet?: string; Gateway?: string } => !!c);
  return {
    id: n.Id,
    name: n.Name,
    subnets: cfg.map((c) => c.Subnet).filter((s): s is string => !!s),
    gateways: cfg.map((c) => c.Gateway).filter((s): s is string => !!s),
  };
}
