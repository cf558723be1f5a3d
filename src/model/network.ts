/**
 * Where a backend container is reached: which of its addresses clients are sent to, or why it
 * cannot be reached at all. Pure (no I/O), table-tested in test/unit/model/network.test.ts.
 *
 * Every way Docker gives a container its network ends in exactly one of these, never silently:
 *  - bridge and user-defined bridge networks: the container's address there (one network, or the
 *    first by name of several — deterministic, and stable while its networks stay the same);
 *  - `--network host`: the backend is the host itself (hostBackendAddress below);
 *  - `--network container:<id>`: the addresses of the container whose netns it shares;
 *  - `--network none`, or only networks whose addresses the host cannot route to (macvlan,
 *    ipvlan, overlay): unreachable, with the reason.
 * Which client may use which address across networks is the datapath's business (crossNetwork).
 */
import type { BackendNetwork, ContainerInfo, NetworkInfo } from './types';
import { canonicalIp } from './ip';

/** What the model needs to place backends: the snapshot's networks and containers. */
export interface NetworkEnv {
  networks: NetworkInfo[];
  containers: ContainerInfo[];
}

/** Where a backend is reached (the network fields of model/types.ts `Backend`). */
export interface Placement {
  ip: string | null;
  ip6: string | null;
  networks: BackendNetwork[];
  reachable: boolean;
  reason: string | null;
}

/** Docker's name of the default bridge network (docker0). */
export const DEFAULT_BRIDGE = 'bridge';

/** Drivers whose container addresses live on a Linux bridge of this host, routable from the host. */
const ROUTABLE_DRIVERS = new Set(['bridge']);

/** Why the host (and so any client through it) cannot reach a container on these drivers. */
const UNROUTABLE: Record<string, string> = {
  macvlan: 'the host cannot reach macvlan containers through their parent interface',
  ipvlan: 'the host cannot reach ipvlan containers through their parent interface',
  overlay: 'overlay addresses live in a swarm VXLAN, not on a bridge of this host',
  null: 'no network',
  host: 'host network',
};

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

const canon = (s: string | null): string | null => (s === null ? null : (canonicalIp(s) ?? s));

/**
 * The backend is the host itself: the address by which host processes AND containers reach a
 * process listening on the host (0.0.0.0 or that address). Used for `--network host` backends,
 * and meant for any service whose backend is berthd or another host process (e.g. a DNS VIP).
 *
 * Host processes could use 127.0.0.1, but a container's 127.0.0.1 is its own loopback, so the
 * one address both can use is a host address on a Docker bridge: the gateway of the default
 * bridge (docker0) first, else of the first other bridge network by name. Packets from a
 * container to it are local delivery on the host (INPUT), which Docker's inter-network
 * isolation (FORWARD) never sees, so every client on every network reaches it in both
 * crossNetwork modes. Returns null when no bridge network has a gateway.
 */
export function hostBackendAddress(networks: NetworkInfo[]): { network: string; ip: string | null; ip6: string | null } | null {
  const bridges = networks
    .filter((n) => (n.driver ?? 'bridge') === 'bridge' && n.gateways.length > 0)
    .sort((a, b) => (a.name === DEFAULT_BRIDGE ? -1 : b.name === DEFAULT_BRIDGE ? 1 : cmp(a.name, b.name)));
  for (const n of bridges) {
    const ip = n.gateways.find((g) => !g.includes(':')) ?? null;
    const ip6 = n.gateways.find((g) => g.includes(':')) ?? null;
    if (ip || ip6) return { network: n.name, ip: canon(ip), ip6: canon(ip6) };
  }
  return null;
}

/** The container whose netns `container:<ref>` names (full id, id prefix or name), or undefined. */
function sharedWith(ref: string, containers: ContainerInfo[]): ContainerInfo | undefined {
  return containers.find((c) => c.id === ref) ??
    containers.find((c) => c.name === ref) ??
    (ref.length >= 12 ? containers.find((c) => c.id.startsWith(ref)) : undefined);
}

/**
 * Place one container as a backend (it is already known to be up). `depth` bounds chains of
 * `container:` modes.
 */
export function placeBackend(c: ContainerInfo, env: NetworkEnv, depth = 0): Placement {
  const mode = c.networkMode ?? '';
  if (mode === 'host') {
    const h = hostBackendAddress(env.networks);
    if (!h) return unreachable([{ network: 'host', ip: null, ip6: null }], 'host network: no Docker bridge gateway to reach the host at');
    return {
      ip: h.ip, ip6: h.ip6, networks: [{ network: 'host', ip: h.ip, ip6: h.ip6 }], reachable: true,
      reason: `host network: reached at the host's address on ${h.network} (${[h.ip, h.ip6].filter(Boolean).join(', ')}); the process must listen on it or on all addresses`,
    };
  }
  if (mode === 'none') return unreachable([], 'network mode none: the container has no address');
  if (mode.startsWith('container:')) {
    const ref = mode.slice('container:'.length);
    const other = sharedWith(ref, env.containers);
    if (!other || other.state !== 'running') return unreachable([], `shares the network of container ${other?.name ?? ref}, which is not running`);
    if (depth >= 4) return unreachable([], `network mode ${mode}: too many containers sharing one another's network`);
    const p = placeBackend(other, env, depth + 1);
    const via = `shares the network of container ${other.name}`;
    return { ...p, reason: p.reason ? `${via}; ${p.reason}` : via };
  }
  return placeOnNetworks(c, env.networks);
}

function unreachable(networks: BackendNetwork[], reason: string): Placement {
  return { ip: null, ip6: null, networks, reachable: false, reason };
}

/**
 * A container with its own netns on Docker networks. One pass over its networks with no
 * temporaries besides the listed networks it returns (this runs for every backend: 40,000 at
 * 10,000 services × 4, where the lookup closure and the usable/skipped lists were ~4 objects more
 * per container to allocate and collect in the cold start's model phase).
 */
function placeOnNetworks(c: ContainerInfo, networks: NetworkInfo[]): Placement {
  const nets = c.networks.length > 1 ? [...c.networks].sort((a, b) => cmp(a.name, b.name)) : c.networks;
  const listed: BackendNetwork[] = new Array<BackendNetwork>(nets.length);
  let skipped: string[] | null = null;
  let ip: string | null = null;
  let ip6: string | null = null;
  for (let i = 0; i < nets.length; i++) {
    const n = nets[i];
    const b: BackendNetwork = { network: n.name, ip: canon(n.ip), ip6: canon(n.ip6) };
    listed[i] = b;
    // A network missing from the list (created between the two list calls) counts as a bridge.
    // (A linear search: a host has a handful of networks.)
    let driver = 'bridge';
    for (const x of networks) {
      if (x.name === b.network) {
        driver = x.driver ?? 'bridge';
        break;
      }
    }
    if (!ROUTABLE_DRIVERS.has(driver) && driver in UNROUTABLE) {
      (skipped ??= []).push(`${driver} network ${b.network}: ${UNROUTABLE[driver]}`);
      continue;
    }
    // The first usable network with an address of each family, in name order.
    if (ip === null && b.ip) ip = b.ip;
    if (ip6 === null && b.ip6) ip6 = b.ip6;
  }
  if (ip === null && ip6 === null) {
    const why = skipped ? skipped.join('; ') : listed.length ? 'no address on any of its networks' : 'on no network';
    return unreachable(listed, why);
  }
  return { ip, ip6, networks: listed, reachable: true, reason: skipped ? `skipped ${skipped.join('; ')}` : null };
}
