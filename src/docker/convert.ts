/**
 * Docker API objects → berth's plain snapshot types (src/model/types.ts). Pure: the watcher does
 * the I/O, this module only decides what each field means, so the odd corners (health inside the
 * Status text, empty IP strings, ports listed once per host binding) are unit-tested without a
 * Docker engine.
 */
import type { ContainerInfo, ContainerNetwork, NetworkInfo, Protocol } from '../model/types';

/** The subset of `docker inspect <container>` that berth reads: only a stopping container's
 * StartedAt and a container's StopSignal (everything else comes from the list's summary). */
export interface InspectLike {
  Id: string;
  State?: { StartedAt?: string } | null;
  Config?: { StopSignal?: string } | null;
}

/** The subset of a `GET /containers/json` entry (the list's summary) that berth reads. */
export interface SummaryLike {
  Id: string;
  Names?: string[] | null;
  /** Seconds since epoch (the list is ordered by the exact creation time, newest first). */
  Created?: number;
  Labels?: Record<string, string> | null;
  State?: string;
  /** "Up 5 minutes (healthy)", "Up 1 second (health: starting)": the health is in parentheses. */
  Status?: string;
  /** Exposed ports (PrivatePort, Type), once more per host binding when published. */
  Ports?: ({ PrivatePort?: number; Type?: string } | null)[] | null;
  /** `{NetworkMode: "host" | "none" | "container:<id>" | "default" | <network name>}`. */
  HostConfig?: { NetworkMode?: string } | null;
  NetworkSettings?: {
    Networks?: Record<string, { NetworkID?: string; IPAddress?: string; GlobalIPv6Address?: string } | null> | null;
  } | null;
}

/** The health in a list Status string: "(healthy)", "(unhealthy)", "(health: starting)". */
function healthOfStatus(status: string | undefined): ContainerInfo['health'] {
  const m = /\((healthy|unhealthy|health: starting)\)/.exec(status ?? '');
  return !m ? 'none' : m[1] === 'health: starting' ? 'starting' : (m[1] as 'healthy' | 'unhealthy');
}

/**
 * How summaryToContainerInfo builds its result in the watcher's compact form (one pass, no copy
 * made and then filtered: at 40,000 containers each copy is 40,000 objects more to collect).
 */
export interface ConvertOptions {
  /** Keep only the labels this accepts (default: all). */
  keepLabel?: (key: string) => boolean;
  /** Share repeated strings (label keys and values, state, network names and ids, mode). */
  intern?: (s: string) => string;
  /** The list to use when there are no exposed ports (a shared frozen one; default a new []). */
  noPorts?: ContainerInfo['exposedPorts'];
  /** The record to use when no label is kept (a shared frozen one; default a new {}). */
  noLabels?: Record<string, string>;
  /** Leave out labels and exposed ports altogether (a client: berth reads neither). */
  bare?: boolean;
}

const same = (x: string): string => x;

/**
 * One container from the list's summary alone, which holds everything the model reads (names,
 * labels, state, health, exposed ports, networks and addresses): no inspect per container, so a
 * list of 40,000 containers costs one API call. `created` is whole seconds here; the watcher
 * passes containers oldest first (Docker lists newest first, by exact creation time), which is
 * the model's tie-break.
 */
export function summaryToContainerInfo(s: SummaryLike, stopping: boolean, o: ConvertOptions = {}): ContainerInfo {
  const intern = o.intern ?? same;
  let labels: Record<string, string> = {};
  let kept = 0;
  let ports: ContainerInfo['exposedPorts'] = o.noPorts ?? [];
  if (!o.bare) {
    const keep = o.keepLabel;
    const from = s.Labels ?? {};
    for (const k in from) {
      if (keep && !keep(k)) continue;
      labels[intern(k)] = intern(from[k]);
      kept++;
    }
    if (s.Ports?.length) {
      const seen: Record<string, true> = {};
      for (const p of s.Ports) if (p?.PrivatePort) seen[`${p.PrivatePort}/${p.Type ?? 'tcp'}`] = true;
      const list = exposedPorts(seen);
      if (list.length) ports = list;
    }
  }
  if (!kept && o.noLabels) labels = o.noLabels;
  const mode = s.HostConfig?.NetworkMode;
  return {
    id: s.Id,
    name: (s.Names?.[0] ?? '').replace(/^\//, ''),
    labels,
    state: intern(s.State ?? 'unknown'),
    health: o.bare ? 'none' : healthOfStatus(s.Status),
    stopping: o.bare ? false : stopping,
    exposedPorts: ports,
    networks: networks(s.NetworkSettings?.Networks, intern),
    ...(mode ? { networkMode: intern(mode) } : {}),
    ...(typeof s.Created === 'number' && !o.bare ? { created: s.Created * 1000 } : {}),
  };
}

/** The subset of a `GET /networks` entry that berth reads. */
export interface NetworkLike {
  Id: string;
  Name: string;
  Driver?: string;
  IPAM?: { Config?: ({ Subnet?: string; Gateway?: string } | null)[] | null } | null;
}

/** "8080/tcp" → {8080, tcp}; SCTP and malformed keys are dropped (berth balances TCP and UDP only). */
export function exposedPorts(ports: Record<string, unknown> | null | undefined): { port: number; protocol: Protocol }[] {
  const keys = Object.keys(ports ?? {});
  const out: { port: number; protocol: Protocol }[] = [];
  for (const key of keys) {
    const m = /^(\d+)(?:\/(tcp|udp))?$/.exec(key);
    if (!m) continue;
    const port = Number(m[1]);
    if (port < 1 || port > 65535) continue;
    out.push({ port, protocol: (m[2] ?? 'tcp') as Protocol });
  }
  out.sort((a, b) => a.port - b.port || a.protocol.localeCompare(b.protocol));
  // An exact-length copy (push() leaves spare capacity: ~150 bytes for a one-element list).
  return out.slice();
}

/** Docker reports "no address" as an empty string; berth says null. */
function addr(s: string | undefined): string | null {
  return s ? s : null;
}

function networks(n: NonNullable<SummaryLike['NetworkSettings']>['Networks'], intern: (s: string) => string = same): ContainerNetwork[] {
  // (map() over the entries: a list of exactly that length.)
  return Object.entries(n ?? {})
    .map(([name, v]) => ({ name: intern(name), id: intern(v?.NetworkID ?? ''), ip: addr(v?.IPAddress), ip6: addr(v?.GlobalIPv6Address) }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

export function toNetworkInfo(n: NetworkLike): NetworkInfo {
  const cfg = (n.IPAM?.Config ?? []).filter((c): c is { Subnet?: string; Gateway?: string } => !!c);
  return {
    id: n.Id,
    name: n.Name,
    subnets: cfg.map((c) => c.Subnet).filter((s): s is string => !!s),
    gateways: cfg.map((c) => c.Gateway).filter((s): s is string => !!s),
    ...(n.Driver ? { driver: n.Driver } : {}),
  };
}
