/**
 * The watcher's loop logic against a fake engine (test/helpers/fake-engine.ts) whose timing and
 * answers the test controls: subscribe-before-list, coalescing and the one-list-at-a-time rule,
 * vanished containers, failed lists, stop-signal decoding, missed starts.
 */
import test from 'ava';
import { DockerWatcher } from '../../../src/docker/watcher';
import type { DockerSnapshot } from '../../../src/model/types';
import { silentLogger } from '../../../src/util/log';
import { FakeEngine } from '../../helpers/fake-engine';

async function setup(t: import('ava').ExecutionContext, opts: { resyncMs?: number; debounceMs?: number } = {}) {
  const engine = await FakeEngine.start();
  const w = new DockerWatcher({ dockerHost: `unix://${engine.socket}`, logger: silentLogger(), resyncMs: opts.resyncMs ?? 600000, backoffMinMs: 20, backoffMaxMs: 100 });
  const snaps: DockerSnapshot[] = [];
  w.on('snapshot', (s) => snaps.push(s));
  t.teardown(async () => {
    await w.stop();
    await engine.close();
  });
  return { engine, w, snaps };
}

function until(what: string, fn: () => boolean, timeoutMs = 10000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (fn()) return resolve();
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for: ${what}`));
      setTimeout(tick, 5);
    };
    tick();
  });
}

const ev = (Action: string, id: string, attrs: Record<string, string> = {}) => ({ Type: 'container', Action, Actor: { ID: id, Attributes: attrs }, timeNano: Date.now() * 1e6 });
const get = (s: DockerSnapshot | null, id: string) => s?.containers.find((c) => c.id === id);

test('subscribes to events before it lists, and reports connected with the first snapshot', async (t) => {
  const { engine, w, snaps } = await setup(t);
  engine.add('a', 'alpha');
  w.start();
  await until('first snapshot', () => snaps.length === 1);
  t.deepEqual(engine.requests.slice(0, 2), ['/events', '/containers/json']);
  t.is(w.connection, 'connected');
  t.deepEqual(snaps[0].containers.map((c) => c.name), ['alpha']);
  t.deepEqual(snaps[0].networks, [{ id: 'n1', name: 'bridge', subnets: ['172.17.0.0/16'], gateways: ['172.17.0.1'] }]);
});

test('a burst of events while a slow list runs: never two lists at once, one more queued, not one per event', async (t) => {
  const { engine, w, snaps } = await setup(t);
  engine.add('a', 'alpha');
  w.start();
  await until('first snapshot', () => snaps.length === 1);
  engine.listDelayMs = 150;
  const before = engine.lists;
  const t0 = Date.now();
  for (let i = 0; i < 30; i++) {
    engine.event(ev('start', 'a'));
    await new Promise((r) => setTimeout(r, 10));
  }
  engine.add('b', 'beta'); // the last event's change must be in the final snapshot
  engine.event(ev('start', 'b'));
  await until('beta seen', () => !!get(w.snapshot, 'b'));
  await new Promise((r) => setTimeout(r, 400)); // let anything still queued finish
  t.is(engine.maxListsInFlight, 1, 'lists never overlap');
  const lists = engine.lists - before;
  // Back-to-back lists can cover at most (elapsed / list time) + the running and the queued one.
  const bound = Math.ceil((Date.now() - t0) / engine.listDelayMs) + 2;
  t.true(lists >= 2 && lists <= bound && lists < 31, `${lists} lists for 31 events (bound ${bound})`);
});

test('a stopping container removed before its StartedAt inspect (404): listed as the list says, the list does not fail', async (t) => {
  const { engine, w, snaps } = await setup(t);
  engine.add('a', 'alpha');
  engine.add('b', 'gone');
  w.start();
  await until('first snapshot', () => snaps.length === 1);
  engine.event(ev('kill', 'b', { signal: '15' }));
  await until('b stopping', () => get(w.snapshot, 'b')?.stopping === true);
  engine.inspect404.add('b');
  const fetched = engine.idLists;
  engine.event(ev('die', 'b'));
  await until('a fetch after the 404', () => engine.idLists > fetched && w.fetches >= 2);
  await new Promise((r) => setTimeout(r, 50));
  t.deepEqual(w.snapshot!.containers.map((c) => c.name).sort(), ['alpha', 'gone']);
  t.true(get(w.snapshot, 'b')?.stopping, 'still marked: nothing says it started again');
  t.is(w.connection, 'connected');
});

test('a failed list emits nothing: the last snapshot stays, the watcher reconnects and re-lists', async (t) => {
  const { engine, w, snaps } = await setup(t);
  engine.add('a', 'alpha');
  w.start();
  await until('first snapshot', () => snaps.length === 1);
  const states: string[] = [];
  w.on('connection', (s) => states.push(s));
  engine.failList = true;
  engine.event(ev('start', 'a'));
  await until('disconnected', () => w.connection === 'disconnected');
  t.is(snaps.length, 1, 'no partial or empty snapshot');
  t.is(w.snapshot, snaps[0]);
  engine.failList = false;
  await until('reconnected', () => w.connection === 'connected' && snaps.length === 2);
  t.deepEqual(states, ['disconnected', 'connected']);
  t.is(w.reconnects, 1);
});

test('kill decoding: SIGTERM and the container\'s own StopSignal mark stopping, SIGHUP does not; start clears', async (t) => {
  const { engine, w } = await setup(t);
  engine.add('a', 'alpha');
  engine.add('q', 'quitter', { StopSignal: 'SIGQUIT' });
  w.start();
  await until('listed', () => !!get(w.snapshot, 'q'));
  engine.event(ev('kill', 'a', { signal: '1' }));
  engine.event(ev('kill', 'q', { signal: '3' }));
  await until('quitter stopping', () => get(w.snapshot, 'q')?.stopping === true);
  t.false(get(w.snapshot, 'a')!.stopping, 'SIGHUP is not a stop');
  engine.event(ev('kill', 'a', { signal: '15' }));
  await until('alpha stopping', () => get(w.snapshot, 'a')?.stopping === true);
  t.is(get(w.snapshot, 'a')!.state, 'running');
  engine.event(ev('start', 'a'));
  await until('alpha cleared', () => get(w.snapshot, 'a')?.stopping === false);
  t.true(get(w.snapshot, 'q')!.stopping);
});

test('a start missed while disconnected still clears stopping (StartedAt after the kill)', async (t) => {
  const { engine, w, snaps } = await setup(t);
  engine.add('a', 'alpha');
  w.start();
  await until('listed', () => snaps.length === 1);
  engine.event(ev('kill', 'a', { signal: '9' }));
  await until('stopping', () => get(w.snapshot, 'a')?.stopping === true);
  // The engine goes away (the die event's fetch fails); meanwhile the container is restarted;
  // no start event reaches us.
  engine.failList = true;
  engine.event(ev('die', 'a'));
  await until('disconnected', () => w.connection === 'disconnected');
  engine.containers.get('a')!.State.StartedAt = new Date(Date.now() + 1000).toISOString();
  const inspects = engine.inspects;
  engine.failList = false;
  await until('relisted without stopping', () => w.connection === 'connected' && get(w.snapshot, 'a')?.stopping === false);
  t.true(engine.inspects > inspects, 'the list that begins the new session inspected the marked container');
});

test('periodic resync lists without any event', async (t) => {
  const { engine, w, snaps } = await setup(t, { resyncMs: 50 });
  engine.add('a', 'alpha');
  w.start();
  await until('three snapshots from resyncs alone', () => snaps.length >= 3);
  engine.add('b', 'beta');
  await until('beta appears without an event', () => !!get(w.snapshot, 'b'));
  t.is(engine.subscribers, 1, 'one event subscription throughout');
});

test('stop() ends the stream and the loop; no snapshot afterwards', async (t) => {
  const { engine, w, snaps } = await setup(t, { resyncMs: 30 });
  engine.add('a', 'alpha');
  w.start();
  await until('listed', () => snaps.length >= 1);
  await w.stop();
  const n = snaps.length;
  await until('subscription closed', () => engine.subscribers === 0);
  engine.event(ev('start', 'a'));
  await new Promise((r) => setTimeout(r, 150));
  t.is(snaps.length, n);
});

test('a list is one call: no inspects, whatever the number of containers, nor for a stopping one while connected', async (t) => {
  const { engine, w, snaps } = await setup(t, { resyncMs: 60 });
  for (let i = 0; i < 50; i++) engine.add(`c${i}`, `c-${i}`, { Labels: { 'berth.service': 'web' } });
  w.start();
  await until('first snapshot', () => snaps.length === 1);
  t.is(snaps[0].containers.length, 50);
  const lists = engine.lists;
  await until('two more resyncs', () => engine.lists >= lists + 2);
  t.is(engine.inspects, 0, 'lists and resyncs inspect nothing');
  // A stop marks c7. While the stream is up, neither the kill's fetch nor the periodic lists
  // inspect it: start events clear marks, and an inspect of a container Docker is stopping waits
  // for Docker's lock on it (only the list after a reconnect inspects; test above).
  engine.event(ev('kill', 'c7', { signal: '15' }));
  await until('c7 stopping', () => get(w.snapshot, 'c7')?.stopping === true);
  const after = engine.lists;
  await until('two more resyncs', () => engine.lists >= after + 2);
  t.is(engine.inspects, 0, 'no inspect while connected');
  t.is(w.inspectCalls, engine.inspects);
});

test('creation order: oldest first (Docker lists newest first); whole-second Created kept', async (t) => {
  const { engine, w, snaps } = await setup(t);
  engine.add('z-old', 'old', {}, '2026-01-01T00:00:00.100Z');
  engine.add('a-new', 'new', {}, '2026-01-01T00:00:00.900Z');
  // Docker's list is newest first.
  engine.containers = new Map([...engine.containers.entries()].reverse());
  w.start();
  await until('first snapshot', () => snaps.length === 1);
  t.deepEqual(snaps[0].containers.map((c) => c.name), ['old', 'new']);
  t.is(snaps[0].containers[0].created, Date.parse('2026-01-01T00:00:00Z'));
});

test('an event fetches only its container (a list filtered by id, no full list); one Docker no longer lists is removed', async (t) => {
  const { engine, w, snaps } = await setup(t);
  engine.add('a', 'alpha');
  engine.add('b', 'beta');
  w.start();
  await until('first snapshot', () => snaps.length === 1);
  const changes: { upserts: { id: string; state: string }[]; removed: string[]; eventTimes: number[] }[] = [];
  w.on('changes', (c) => changes.push(c));
  const lists = engine.lists;
  engine.containers.get('a')!.State.Status = 'exited';
  const sent = ev('die', 'a');
  engine.event(sent);
  await until('a fetched', () => changes.length === 1);
  t.deepEqual(changes[0].upserts.map((c) => [c.id, c.state]), [['a', 'exited']]);
  t.deepEqual(changes[0].removed, []);
  t.deepEqual(changes[0].eventTimes, [Math.floor(sent.timeNano / 1e6)], 'the event time travels with the change (event → maps latency)');
  t.is(engine.lists - lists, 1, 'one call');
  t.is(engine.idLists, 1, 'filtered by id');
  t.is(snaps.length, 1, 'no full list');
  engine.containers.delete('b');
  engine.event(ev('destroy', 'b'));
  await until('b removed', () => changes.length === 2);
  t.deepEqual(changes[1], { upserts: [], removed: ['b'], eventTimes: changes[1].eventTimes });
  t.deepEqual(w.snapshot!.containers.map((c) => c.id), ['a']);
  // Nothing changed (same state): nothing emitted.
  engine.event(ev('start', 'a'));
  await until('fetched again', () => engine.idLists === 3);
  await new Promise((r) => setTimeout(r, 50));
  t.is(changes.length, 2);
});

test('berthOnly: containers without a berth label are not kept, and only berth labels are', async (t) => {
  const engine = await FakeEngine.start();
  const w = new DockerWatcher({ dockerHost: `unix://${engine.socket}`, logger: silentLogger(), resyncMs: 600000, backoffMinMs: 20, backoffMaxMs: 100, berthOnly: true });
  t.teardown(async () => {
    await w.stop();
    await engine.close();
  });
  engine.add('p', 'plain', { Labels: { 'com.example': 'x' } });
  engine.add('w', 'web', { Labels: { 'berth.service': 'web', 'com.example': 'x' } });
  w.start();
  await until('listed', () => w.snapshot !== null);
  t.deepEqual(w.snapshot!.containers.map((c) => [c.name, c.labels]), [['web', { 'berth.service': 'web' }]]);
  const changes: unknown[] = [];
  w.on('changes', (c) => changes.push(c));
  engine.event(ev('start', 'p'));
  await until('fetched', () => engine.idLists === 1);
  await new Promise((r) => setTimeout(r, 50));
  t.deepEqual(changes, [], 'an event for a container berth does not care about changes nothing');
});

test('berthOnly + clients: a container without berth labels is kept in the compact client form; a change berth does not read emits nothing', async (t) => {
  const engine = await FakeEngine.start();
  const w = new DockerWatcher({ dockerHost: `unix://${engine.socket}`, logger: silentLogger(), resyncMs: 600000, backoffMinMs: 20, backoffMaxMs: 100, berthOnly: true, clients: true });
  t.teardown(async () => {
    await w.stop();
    await engine.close();
  });
  engine.add('p', 'plain', { Labels: { 'com.example': 'x' }, ExposedPorts: { '80/tcp': {} } }, undefined, '172.17.0.5');
  engine.add('w', 'web', { Labels: { 'berth.service': 'web', 'com.example': 'x' } });
  w.start();
  await until('listed', () => w.snapshot !== null);
  const plain = get(w.snapshot, 'p')!;
  t.deepEqual(plain.labels, {}, 'no labels kept');
  t.deepEqual(plain.exposedPorts, [], 'no ports kept');
  t.is(plain.created, undefined, 'no creation time kept');
  t.deepEqual([plain.name, plain.state, plain.networks.map((n) => [n.name, n.ip])], ['plain', 'running', [['bridge', '172.17.0.5']]], 'what a client is: name, state, networks and addresses');
  t.deepEqual(get(w.snapshot, 'w')!.labels, { 'berth.service': 'web' });
  const changes: { upserts: { id: string; state: string }[]; removed: string[] }[] = [];
  w.on('changes', (c) => changes.push(c));
  // Health is not kept for clients: a health change costs a fetch and nothing else.
  engine.containers.get('p')!.State.Health = { Status: 'healthy' };
  engine.event(ev('health_status: healthy', 'p'));
  await until('fetched', () => engine.idLists === 1);
  await new Promise((r) => setTimeout(r, 50));
  t.deepEqual(changes, [], 'an unread change of a client emits nothing');
  // Its state is read: a stop is a change.
  engine.containers.get('p')!.State.Status = 'exited';
  engine.event(ev('die', 'p'));
  await until('stop seen', () => changes.length === 1);
  t.deepEqual(changes[0].upserts.map((c) => [c.id, c.state]), [['p', 'exited']]);
});

test('a backlog of more ids than maxFetchIds is fetched in chunks, never turned into a full list', async (t) => {
  const engine = await FakeEngine.start();
  const w = new DockerWatcher({ dockerHost: `unix://${engine.socket}`, logger: silentLogger(), resyncMs: 600000, backoffMinMs: 20, backoffMaxMs: 100, maxFetchIds: 2 });
  t.teardown(async () => {
    await w.stop();
    await engine.close();
  });
  const ids = ['a', 'b', 'c', 'd', 'e'];
  for (const id of ids) engine.add(id, `n-${id}`);
  const snaps: DockerSnapshot[] = [];
  w.on('snapshot', (s) => snaps.push(s));
  w.start();
  await until('first snapshot', () => snaps.length === 1);
  const seen = new Set<string>();
  w.on('changes', (c: { upserts: { id: string; state: string }[] }) => {
    for (const u of c.upserts) if (u.state === 'exited') seen.add(u.id);
  });
  engine.listDelayMs = 50; // the events below arrive while the first fetch runs
  for (const id of ids) {
    engine.containers.get(id)!.State.Status = 'exited';
    engine.event(ev('die', id));
  }
  await until('all five fetched', () => seen.size === 5);
  t.is(snaps.length, 1, 'no full list');
  t.true(engine.idLists >= 3, `${engine.idLists} filtered fetches of at most 2 ids`);
});

test('a full list keeps the object of a container that did not change, and gives a changed one a new object', async (t) => {
  const { engine, w, snaps } = await setup(t, { resyncMs: 50 });
  engine.add('a', 'alpha', { Labels: { 'berth.service': 'web' } });
  engine.add('b', 'bravo', { Labels: { 'berth.service': 'web' } });
  w.start();
  await until('first snapshot', () => snaps.length === 1);
  const [a0, b0] = [get(snaps[0], 'a')!, get(snaps[0], 'b')!];
  engine.containers.get('b')!.NetworkSettings.Networks.bridge.IPAddress = '172.17.0.99';
  await until('a full list after the change', () => snaps.length >= 2 && get(snaps[snaps.length - 1], 'b')?.networks[0].ip === '172.17.0.99');
  const last = snaps[snaps.length - 1];
  t.is(get(last, 'a'), a0, 'unchanged: the same object as before');
  t.not(get(last, 'b'), b0);
  t.is(b0.networks[0].ip !== '172.17.0.99', true, 'the old object was not changed in place');
  t.deepEqual(last.containers.map((c) => c.id).sort(), ['a', 'b']);
});
