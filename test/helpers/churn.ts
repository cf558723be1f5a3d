/**
 * Seeded random container events for the incremental control plane's property tests (unit:
 * test/unit/model/incremental.test.ts; integration on real maps: test/integration/incremental.test.ts).
 * Containers are ContainerInfo objects as the watcher makes them (a new object per change).
 */
import type { ContainerInfo } from '../../src/model/types';

/** mulberry32: small, seeded, reproducible. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---- random containers and events ------------------------------------------------------------

export const SERVICES = ['web', 'api', 'db', 'cache', 'queue'];

export interface World {
  /** VIP prefixes for pins (default the unit tests' 10.96.0.x and fd00:96::x). */
  vipPrefix?: string;
  vip6Prefix?: string;
  containers: Map<string, ContainerInfo>;
  order: string[];
  next: number;
}

function randomLabels(r: () => number, world: World): Record<string, string> {
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)];
  const labels: Record<string, string> = { 'berth.service': pick(SERVICES), 'berth.ports': pick(['80:8080', '80:8080', '53/udp', '80:8080,443']) };
  const x = r();
  if (x < 0.08) labels['berth.ports'] = 'nonsense'; // label error
  else if (x < 0.12) labels['berth.sevrice'] = 'typo'; // unknown label
  else if (x < 0.22) labels['berth.vip'] = `${world.vipPrefix ?? '10.96.0'}.${pick([1, 2, 3, 5, 9, 14, 15])}`; // collisions, host address, Docker subnet, broadcast
  else if (x < 0.26) labels['berth.vip6'] = `${world.vip6Prefix ?? 'fd00:96:'}:${pick([1, 2, 3])}`;
  if (r() < 0.15) labels[`berth.http.${pick(['gw', 'edge'])}.path`] = pick(['/', '/a', '/b']);
  if (r() < 0.05) labels[`berth.http.gw.publish`] = pick(['30001', '30002']);
  if (r() < 0.05) labels['other.label'] = String(world.next);
  return labels;
}

export function newContainer(r: () => number, world: World): ContainerInfo {
  const n = world.next++;
  const id = n.toString(16).padStart(64, '0');
  return {
    id, name: `c${n}`, labels: randomLabels(r, world), state: 'running',
    health: r() < 0.2 ? 'starting' : 'none', stopping: false, exposedPorts: [],
    networks: [{ name: 'a', id: 'n-a', ip: `172.17.${n >> 8}.${n & 255}`, ip6: r() < 0.3 ? `fd00:dead::${n.toString(16)}` : null }],
    created: 1000 + Math.floor(n / 3) * 1000, // ties in the same second, broken by arrival order
  };
}

/** One random event: the containers it changed (new objects, as the watcher makes) or removed. */
export function step(r: () => number, world: World): { upserts: ContainerInfo[]; removed: string[]; what: string } {
  const ids = world.order.filter((id) => world.containers.has(id));
  const x = r();
  if (ids.length < 3 || x < 0.25) {
    const c = newContainer(r, world);
    world.containers.set(c.id, c);
    world.order.push(c.id);
    return { upserts: [c], removed: [], what: `start ${c.name} ${JSON.stringify(c.labels)}` };
  }
  const old = world.containers.get(ids[Math.floor(r() * ids.length)])!;
  const c: ContainerInfo = { ...old, networks: old.networks.map((n) => ({ ...n })) };
  let what: string;
  const y = r();
  if (y < 0.12) {
    world.containers.delete(c.id);
    return { upserts: [], removed: [c.id], what: `destroy ${c.name}` };
  } else if (y < 0.24) {
    c.state = c.state === 'running' ? 'exited' : 'running';
    c.stopping = false;
    what = `${c.state === 'running' ? 'start' : 'die'} ${c.name}`;
  } else if (y < 0.32) {
    c.stopping = true;
    what = `kill ${c.name}`;
  } else if (y < 0.44) {
    c.health = (['starting', 'healthy', 'unhealthy', 'none'] as const)[Math.floor(r() * 4)];
    what = `health ${c.name} ${c.health}`;
  } else if (y < 0.52) {
    c.name = `${c.name.split('-')[0]}-r${world.next++}`;
    what = `rename ${old.name} -> ${c.name}`;
  } else if (y < 0.64) {
    if (c.networks.some((n) => n.name === 'b')) c.networks = c.networks.filter((n) => n.name !== 'b');
    else c.networks = [...c.networks, { name: 'b', id: 'n-b', ip: `172.18.0.${Math.floor(r() * 250) + 2}`, ip6: null }].sort((a, b) => a.name.localeCompare(b.name));
    what = `network connect/disconnect ${c.name}`;
  } else if (y < 0.72) {
    c.networks = c.networks.map((n) => ({ ...n, ip: n.name === 'a' ? `172.17.9.${Math.floor(r() * 250) + 2}` : n.ip }));
    what = `new address ${c.name}`;
  } else {
    // Docker labels are fixed per container; a "relabel" is a re-created container under the same id.
    c.labels = randomLabels(r, world);
    what = `relabel ${c.name} ${JSON.stringify(c.labels)}`;
  }
  world.containers.set(c.id, c);
  return { upserts: [c], removed: [], what };
}

