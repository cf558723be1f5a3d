/**
 * The Docker watcher against the real engine: what it reports (IPs, health, networks), that a
 * stop is visible before the container dies, and that an unreachable engine is a connection
 * state, never an empty snapshot (a proxy socket of the test's own stands in for a dying dockerd).
 */
import test, { type ExecutionContext } from 'ava';
import { hostAsBefore } from '../helpers/cleanup';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { DockerWatcher } from '../../src/docker/watcher';
import type { ContainerInfo, DockerSnapshot } from '../../src/model/types';
import type { DockerConnection } from '../../src/docker/types';
import { createTestNetwork, docker, ensureTestImage, removeTestContainers, removeTestNetwork, runContainer, execIn } from '../helpers/docker';

const SUITE = 'docker-watcher';
const NET = 'bt-dw';
const NET2 = 'bt-dw2';
const REAL_SOCKET = '/var/run/docker.sock';

interface Watched {
  w: DockerWatcher;
  logs: string[];
  states: DockerConnection[];
  snapshots: DockerSnapshot[];
}

/** A watcher whose log lines, connection changes and snapshots the test can read. */
function watch(dockerHost: string, opts: { resyncMs?: number; callTimeoutMs?: number } = {}): Watched {
  const logs: string[] = [];
  const sink = new Writable({ write(chunk, _enc, cb) { logs.push(String(chunk)); cb(); } });
  // Resync far away: these tests must pass on events alone.
  const w = new DockerWatcher({ dockerHost, logger: pino({ level: 'debug' }, sink), resyncMs: opts.resyncMs ?? 600000, backoffMaxMs: 1000, callTimeoutMs: opts.callTimeoutMs });
  const states: DockerConnection[] = [];
  const snapshots: DockerSnapshot[] = [];
  w.on('connection', (s) => states.push(s));
  w.on('snapshot', (s) => snapshots.push(s));
  return { w, logs, states, snapshots };
}

/**
 * Resolve with the first snapshot (current or future: after a full list, or after the per-event
 * fetch of a few containers, 'changes') that satisfies pred; bounded.
 */
function until<T>(w: DockerWatcher, what: string, pred: (s: DockerSnapshot) => T | undefined | false, timeoutMs = 20000): Promise<T> {
  return new Promise((resolve, reject) => {
    const onChanges = (): void => {
      check(w.snapshot);
    };
    const check = (s: DockerSnapshot | null): boolean => {
      const v = s ? pred(s) : undefined;
      if (v === undefined || v === false) return false;
      clearTimeout(timer);
      w.off('snapshot', check);
      w.off('changes', onChanges);
      resolve(v as T);
      return true;
    };
    const timer = setTimeout(() => {
      w.off('snapshot', check);
      w.off('changes', onChanges);
      reject(new Error(`timed out waiting for: ${what}; last snapshot: ${JSON.stringify(w.snapshot?.containers.filter((c) => c.labels['berth-test'] === SUITE))}`));
    }, timeoutMs);
    w.on('snapshot', check);
    w.on('changes', onChanges);
    check(w.snapshot);
  });
}

function until2(what: string, fn: () => boolean, timeoutMs = 20000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (fn()) return resolve();
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for: ${what}`));
      setTimeout(tick, 50);
    };
    tick();
  });
}

const byName = (name: string) => (s: DockerSnapshot): ContainerInfo | undefined => s.containers.find((c) => c.name === name);

test.after.always(async () => {
  await removeTestContainers(SUITE);
  await removeTestNetwork(NET);
  await removeTestNetwork(NET2);
});

// The host-as-before check (after the cleanup hooks above, before the setup hooks below).
hostAsBefore(test);

test.before(async () => {
  await removeTestContainers(SUITE);
  await ensureTestImage();
});

test.serial('labelled containers appear with labels, IPs (v4 and v6), exposed ports; networks with subnets', async (t) => {
  const n = await createTestNetwork(NET, { ipv6: true, suite: SUITE });
  const { w, states, snapshots } = watch(`unix://${REAL_SOCKET}`);
  t.teardown(() => w.stop());
  w.start();
  t.is(w.connection, 'connecting');
  await until(w, 'first snapshot', (s) => s);
  t.is(w.connection, 'connected');
  t.deepEqual(states, ['connected']);
  t.is(w.reconnects, 0);
  t.true(snapshots.length >= 1);

  const c = await runContainer({
    suite: SUITE, name: 'bt-dw-a', network: NET, exposedPorts: ['8080/tcp', '53/udp'],
    labels: { 'berth.service': 'web', 'berth.ports': '80:8080' }, cmd: ['sleep', '600'],
  });
  const info = await until(w, 'bt-dw-a running', (s) => { const x = byName('bt-dw-a')(s); return x?.state === 'running' ? x : undefined; });
  t.is(info.id, c.id);
  t.is(info.labels['berth.service'], 'web');
  t.is(info.labels['berth-test'], SUITE);
  t.is(info.health, 'none');
  t.false(info.stopping);
  t.deepEqual(info.exposedPorts, [{ port: 53, protocol: 'udp' }, { port: 8080, protocol: 'tcp' }]);
  t.is(info.networks.length, 1);
  t.like(info.networks[0], { name: NET, id: n.id, ip: c.ip, ip6: c.ip6 });
  t.truthy(c.ip);
  t.truthy(c.ip6);
  const netInfo = w.snapshot!.networks.find((x) => x.name === NET);
  t.deepEqual(netInfo, { id: n.id, name: NET, subnets: [n.subnet, n.subnet6!], gateways: [n.gateway, n.gateway6!], driver: 'bridge' });
  t.truthy(w.snapshot!.networks.find((x) => x.name === 'bridge'), 'the default bridge is listed');

  // Destroyed: gone from the next snapshot.
  await docker.getContainer(c.id).remove({ force: true });
  await until(w, 'bt-dw-a gone', (s) => !byName('bt-dw-a')(s));
  t.pass();
});

test.serial('health: starting → healthy → unhealthy, from health_status events', async (t) => {
  const { w } = watch(`unix://${REAL_SOCKET}`);
  t.teardown(() => w.stop());
  w.start();
  const c = await runContainer({
    suite: SUITE, name: 'bt-dw-health', labels: {}, cmd: ['sleep', '600'],
    healthcheck: { test: ['CMD', 'test', '-f', '/tmp/healthy'], intervalMs: 300, retries: 1 },
  });
  // From the list's Status ("Up 1 second (health: starting)"); a container listed while still
  // "created" has no health yet (and is no backend anyway), so wait for it to run.
  const first = await until(w, 'running, health reported', (s) => { const x = byName('bt-dw-health')(s); return x?.state === 'running' ? x : undefined; });
  t.true(['starting', 'unhealthy'].includes(first.health), first.health);
  await execIn(c.id, ['touch', '/tmp/healthy']);
  await until(w, 'healthy', (s) => byName('bt-dw-health')(s)?.health === 'healthy');
  await execIn(c.id, ['rm', '/tmp/healthy']);
  await until(w, 'unhealthy again', (s) => byName('bt-dw-health')(s)?.health === 'unhealthy');
  t.pass();
});

test.serial('docker stop marks the container stopping while it still runs; SIGHUP does not; start clears it', async (t) => {
  const { w } = watch(`unix://${REAL_SOCKET}`);
  t.teardown(() => w.stop());
  w.start();
  // PID 1 ignores SIGTERM (and SIGHUP): docker stop has to wait out its timeout, then SIGKILL.
  const c = await runContainer({ suite: SUITE, name: 'bt-dw-slow', labels: {}, cmd: ['sh', '-c', "trap '' TERM HUP; while true; do sleep 1; done"] });
  await until(w, 'running', (s) => byName('bt-dw-slow')(s)?.state === 'running');

  // A reload signal is not a stop. A rename after it proves its event was already processed.
  await docker.getContainer(c.id).kill({ signal: 'SIGHUP' });
  await docker.getContainer(c.id).rename({ name: 'bt-dw-slow2' });
  const afterHup = await until(w, 'rename after SIGHUP', (s) => byName('bt-dw-slow2')(s));
  t.false(afterHup.stopping, 'SIGHUP leaves the container a backend');
  t.is(afterHup.state, 'running');

  const stopping = docker.getContainer(c.id).stop({ t: 6 });
  const during = await until(w, 'stopping while running', (s) => { const x = byName('bt-dw-slow2')(s); return x?.stopping ? x : undefined; });
  t.is(during.state, 'running', 'seen as stopping before it died');
  t.true((await docker.getContainer(c.id).inspect()).State.Running, 'really still running');
  await stopping;
  const dead = await until(w, 'exited', (s) => { const x = byName('bt-dw-slow2')(s); return x?.state === 'exited' ? x : undefined; });
  t.true(dead.stopping, 'stays stopping until the next start');

  await docker.getContainer(c.id).start();
  const again = await until(w, 'running again', (s) => { const x = byName('bt-dw-slow2')(s); return x?.state === 'running' ? x : undefined; });
  t.false(again.stopping, 'a start clears stopping');
});

test.serial('network connect and disconnect change the container\'s addresses', async (t) => {
  await createTestNetwork(NET2, { suite: SUITE });
  const { w } = watch(`unix://${REAL_SOCKET}`);
  t.teardown(() => w.stop());
  w.start();
  const c = await runContainer({ suite: SUITE, name: 'bt-dw-mover', labels: {}, cmd: ['sleep', '600'] });
  await until(w, 'on bridge', (s) => byName('bt-dw-mover')(s)?.networks.map((n) => n.name).join() === 'bridge');
  await docker.getNetwork(NET2).connect({ Container: c.id });
  const both = await until(w, 'on both', (s) => { const x = byName('bt-dw-mover')(s); return x?.networks.length === 2 ? x : undefined; });
  t.deepEqual(both.networks.map((n) => n.name), ['bridge', NET2].sort());
  t.truthy(both.networks.find((n) => n.name === NET2)?.ip);
  await docker.getNetwork('bridge').disconnect({ Container: c.id });
  const moved = await until(w, 'only on NET2', (s) => { const x = byName('bt-dw-mover')(s); return x?.networks.length === 1 && x.networks[0].name === NET2 ? x : undefined; });
  t.regex(moved.networks[0].ip ?? '', /^172\.30\./);
  await docker.getNetwork(NET2).disconnect({ Container: c.id });
  await until(w, 'no network', (s) => byName('bt-dw-mover')(s)?.networks.length === 0);
  t.pass();
});

test.serial('a burst of starts is coalesced (fewer lists than events) and every container is in the end state', async (t) => {
  // The engine behind a proxy that makes every container list take 300 ms: events that arrive
  // while a list runs must fold into one more list, not one list each. (Against the bare engine a
  // list is often faster than the gap between events, and one list per event would pass.)
  const proxy = await proxied(t, 'slow-list');
  const { w, snapshots } = watch(`unix://${proxy.socket}`);
  t.teardown(() => w.stop());
  w.start();
  await until(w, 'first snapshot', (s) => s);
  const fetchesBefore = w.fetches;
  let changes = 0;
  w.on('changes', () => changes++);
  const names = Array.from({ length: 5 }, (_, i) => `bt-dw-burst-${i}`);
  // Count the burst's own container events on a stream of the test's own.
  const events = (await docker.getEvents({ filters: { type: ['container'], label: [`berth-test=${SUITE}`] } })) as NodeJS.ReadableStream & { destroy(): void };
  t.teardown(() => events.destroy());
  let seen = 0;
  let buf = '';
  events.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const ev = JSON.parse(buf.slice(0, i)) as { Action: string; Actor: { Attributes: { name?: string } } };
      buf = buf.slice(i + 1);
      if (names.includes(ev.Actor.Attributes.name ?? '') && ['create', 'start'].includes(ev.Action)) seen++;
    }
  });
  const before = snapshots.length;
  await Promise.all(names.map((name) => runContainer({ suite: SUITE, name, labels: {}, cmd: ['sleep', '600'] })));
  await until(w, 'all five running', (s) => names.every((n) => byName(n)(s)?.state === 'running'));
  await until2('the burst\'s 10 create/start events on the test\'s stream', () => seen >= 10);
  // Each event fetches only the containers it names (a list filtered by id, 300 ms each behind the
  // proxy), coalesced while a call runs: no full list, fewer calls than events, never two at once.
  const fetches = w.fetches - fetchesBefore;
  t.log(`${fetches} fetches and ${changes} change sets for ${seen} container events (+ network events), ${snapshots.length - before} full lists`);
  t.true(fetches >= 1 && fetches < seen, `${fetches} fetches for ${seen} events`);
  t.true(changes >= 1);
  t.is(snapshots.length - before, 0, 'no full list for container events');
  t.is(proxy.maxListsInFlight, 1, 'never two lists at once');
  await Promise.all(names.map((name) => docker.getContainer(name).remove({ force: true })));
  await until(w, 'all five gone', (s) => names.every((n) => !byName(n)(s)));
});

test.serial('a change whose event waited behind a full list is marked pending in that list\'s snapshot (late, not missed)', async (t) => {
  // The full list is held at a gate while a container starts: its events queue behind the list
  // (one call at a time), and the list, once let through, already shows the container. Without
  // snapshot.pending the daemon reported such a change as a missed event (test/vm/cluster runs).
  const proxy = await proxied(t, 'gated');
  const { w, snapshots } = watch(`unix://${proxy.socket}`, { resyncMs: 1000 });
  t.teardown(() => w.stop());
  w.start();
  await until(w, 'first snapshot', (s) => s);
  const open = proxy.holdFullLists();
  t.teardown(open);
  await until2('the next periodic full list held at the gate', () => proxy.heldLists >= 1, 10000);
  const before = snapshots.length;
  const c = await runContainer({ suite: SUITE, name: 'bt-dw-late', labels: { 'berth.service': 'late' }, cmd: ['sleep', '600'] });
  t.teardown(() => docker.getContainer(c.id).remove({ force: true }).catch(() => undefined));
  // Docker's start event reaches the watcher (its stream is not gated) while the list waits.
  await new Promise((r) => setTimeout(r, 1000));
  open();
  await until2('the held list answered', () => snapshots.length > before, 10000);
  const snap = snapshots[before];
  t.truthy(snap.containers.find((x) => x.id === c.id), 'the list shows the new container');
  t.true(snap.pending?.has(c.id), `the container is pending in that snapshot (pending: ${[...(snap.pending ?? [])].join(',')})`);
  // A list with no events waiting has nothing pending (after the network events' re-fetches).
  await new Promise((r) => setTimeout(r, 5000));
  const quiet = snapshots.length;
  await until2('a later full list', () => snapshots.length > quiet, 10000);
  t.is(snapshots[snapshots.length - 1].pending?.size ?? 0, 0);
});

test.serial('an unreachable engine: disconnected, snapshot stays null (never empty), retries with backoff', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bt-dw-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const { w, logs, states, snapshots } = watch(`unix://${path.join(dir, 'no-such-docker.sock')}`);
  t.teardown(() => w.stop());
  w.start();
  await until2('disconnected', () => w.connection === 'disconnected');
  t.deepEqual(states, ['disconnected']);
  // Keeps trying (several attempts within a few seconds at 250 ms → 1 s backoff), never lists.
  await until2('three attempts', () => logs.filter((l) => l.includes('Docker connection attempt failed')).length >= 3, 15000);
  t.is(w.snapshot, null);
  t.is(snapshots.length, 0);
  t.is(w.reconnects, 0);
  t.true(logs.some((l) => /"level":40.*Docker unreachable/.test(l)), 'a warning is logged');
});

/** A unix-socket proxy in front of the real engine that the test can take down and bring back. */
/** A Proxy (below) in `mode`, on a socket in a temporary directory, up; removed after the test. */
async function proxied(t: ExecutionContext, mode?: ConstructorParameters<typeof Proxy>[1]): Promise<Proxy> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bt-dw-'));
  const proxy = new Proxy(path.join(dir, 'docker.sock'), mode);
  t.teardown(async () => { await proxy.down(); fs.rmSync(dir, { recursive: true, force: true }); });
  await proxy.up();
  return proxy;
}

class Proxy {
  private server: net.Server | null = null;
  private readonly conns = new Set<net.Socket>();
  /** Container lists currently forwarded and not yet answered, and the most at once. */
  private listsInFlight = 0;
  maxListsInFlight = 0;
  /** While set, full container lists (no id filter) wait for it before they reach the engine. */
  private gate: Promise<void> | null = null;
  /** Full lists that reached the proxy while the gate was shut. */
  heldLists = 0;
  /**
   * hang: accept connections and never answer, like a wedged dockerd. slow-list: forward, but
   * hold each container-list request 300 ms first (a busy engine). gated: forward, but hold full
   * container lists while the gate is shut (holdFullLists()).
   */
  constructor(readonly socket: string, private readonly mode: 'forward' | 'hang' | 'slow-list' | 'gated' = 'forward') {}

  /** Shut the gate for full lists; the returned function opens it again. */
  holdFullLists(): () => void {
    let open!: () => void;
    this.gate = new Promise<void>((r) => (open = r));
    return () => {
      this.gate = null;
      open();
    };
  }

  async up(): Promise<void> {
    fs.rmSync(this.socket, { force: true });
    const server = net.createServer((client) => {
      if (this.mode === 'hang') {
        this.conns.add(client);
        client.on('error', () => undefined).on('close', () => this.conns.delete(client));
        client.resume(); // read (and drop) the request, so the client's close is noticed
        return;
      }
      const upstream = net.connect(REAL_SOCKET);
      this.conns.add(client).add(upstream);
      const drop = (): void => { client.destroy(); upstream.destroy(); this.conns.delete(client); this.conns.delete(upstream); };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      if (this.mode === 'forward') {
        client.pipe(upstream).pipe(client);
        return;
      }
      // In order, per connection: a chunk holding a container-list request waits 300 ms.
      let queue = Promise.resolve();
      let listing = false;
      client.on('data', (chunk: Buffer) => {
        queue = queue.then(async () => {
          const head = chunk.toString('latin1');
          if (this.mode === 'gated') {
            if (this.gate && /^GET \S*\/containers\/json/m.test(head) && !/^GET \S*filters=/m.test(head)) {
              this.heldLists++;
              await this.gate;
            }
          } else if (/^GET \S*\/containers\/json/m.test(head)) {
            await new Promise((r) => setTimeout(r, 300));
            listing = true;
            this.maxListsInFlight = Math.max(this.maxListsInFlight, ++this.listsInFlight);
          }
          upstream.write(chunk);
        });
      });
      upstream.on('data', (chunk: Buffer) => {
        if (listing) {
          listing = false;
          this.listsInFlight--;
        }
        client.write(chunk);
      });
    });
    await new Promise<void>((resolve) => server.listen(this.socket, resolve));
    this.server = server;
  }

  get open(): number {
    return this.conns.size;
  }

  /** Like a dockerd that exits: the listener goes away and every open stream is cut. */
  async down(): Promise<void> {
    const s = this.server;
    this.server = null;
    for (const c of this.conns) c.destroy();
    this.conns.clear();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
    fs.rmSync(this.socket, { force: true });
  }
}

test.serial('an engine that goes away and comes back: last snapshot kept, reconnect counted, full resync', async (t) => {
  const proxy = await proxied(t);
  const before = await runContainer({ suite: SUITE, name: 'bt-dw-before', labels: {}, cmd: ['sleep', '600'] });
  const { w, states } = watch(`unix://${proxy.socket}`);
  t.teardown(() => w.stop());
  w.start();
  const first = await until(w, 'bt-dw-before listed', (s) => (byName('bt-dw-before')(s) ? s : undefined));
  t.is(w.connection, 'connected');

  await proxy.down();
  await until2('disconnected', () => w.connection === 'disconnected');
  t.is(w.snapshot, first, 'the last good snapshot stays while Docker is unreachable');
  t.truthy(byName('bt-dw-before')(w.snapshot!), 'its containers are not forgotten');

  // Changes while the watcher is blind: one container goes, one comes.
  await docker.getContainer(before.id).remove({ force: true });
  await runContainer({ suite: SUITE, name: 'bt-dw-during', labels: {}, cmd: ['sleep', '600'] });
  t.is(w.snapshot, first, 'still the last good snapshot');

  await proxy.up();
  const resynced = await until(w, 'resync after reconnect', (s) => (byName('bt-dw-during')(s) && !byName('bt-dw-before')(s) ? s : undefined));
  t.is(w.connection, 'connected');
  t.is(w.reconnects, 1);
  t.deepEqual(states, ['connected', 'disconnected', 'connected']);
  t.true(resynced.takenAt > first.takenAt);

  // And it is live on events again.
  await docker.getContainer('bt-dw-during').rename({ name: 'bt-dw-after' });
  await until(w, 'rename seen after reconnect', (s) => byName('bt-dw-after')(s));
});

/** A TCP listener on loopback in front of the real engine's unix socket (tcp:// dockerHost). */
async function tcpProxy(): Promise<{ port: number; close: () => Promise<void> }> {
  const conns = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(REAL_SOCKET);
    conns.add(client).add(upstream);
    const drop = (): void => { client.destroy(); upstream.destroy(); };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((resolve) => { for (const c of conns) c.destroy(); server.close(() => resolve()); }),
  };
}

test.serial('tcp:// dockerHost works the same (through a loopback proxy of the test\'s own)', async (t) => {
  const p = await tcpProxy();
  t.teardown(() => p.close());
  await runContainer({ suite: SUITE, name: 'bt-dw-tcp', labels: {}, cmd: ['sleep', '600'] });
  const { w } = watch(`tcp://127.0.0.1:${p.port}`);
  t.teardown(() => w.stop());
  w.start();
  await until(w, 'bt-dw-tcp listed over TCP', (s) => byName('bt-dw-tcp')(s));
  await docker.getContainer('bt-dw-tcp').rename({ name: 'bt-dw-tcp2' });
  await until(w, 'event over TCP', (s) => byName('bt-dw-tcp2')(s));
  t.is(w.connection, 'connected');
});

test.serial('a hung engine (accepts, never answers) is disconnected after callTimeoutMs, not waited on forever', async (t) => {
  const proxy = await proxied(t, 'hang');
  const { w, logs } = watch(`unix://${proxy.socket}`, { callTimeoutMs: 300 });
  t.teardown(() => w.stop());
  w.start();
  await until2('disconnected', () => w.connection === 'disconnected', 10000);
  const attempts = (): number => logs.filter((l) => l.includes('Docker connection attempt failed') && l.includes('did not answer within 300 ms')).length;
  await until2('three timed-out attempts', () => attempts() >= 3, 15000);
  t.is(w.snapshot, null);
  // Timed-out requests are aborted, not left hanging: no pile of open connections.
  t.true(proxy.open <= 2, `${proxy.open} connections still open after ${attempts()} attempts`);
});
