/**
 * Level-triggered repair, reported as what it is: a Docker event that never reached berthd is
 * applied by the next periodic full list, logged as "missed events", and its map writes are not
 * called map drift. Drift ("the maps needed writes ... a missed or failed update", and
 * berth_drift_repaired_total{kind="plan"}) is only what berth's own updates failed to write.
 * A real berthd against the fake engine (test/helpers/fake-engine.ts), which can change its list
 * without sending the event.
 */
import test from 'ava';
import fs from 'node:fs';
import { hostAsBefore } from '../helpers/cleanup';
import { Berthd, waitFor } from '../helpers/berthd';
import { FakeEngine } from '../helpers/fake-engine';

const labels = { Labels: { 'berth.service': 'rsweb', 'berth.ports': '80:8080' } };

test('a missed event: the next full list applies it (logged as missed events), and its writes are not map drift', async (t) => {
  const engine = await FakeEngine.start();
  t.teardown(() => engine.close());
  engine.add('c1', 'rs-web-1', labels, undefined, '127.0.0.9');
  const d = new Berthd({ name: 'resync', serviceCidr: '10.96.0.0/16', extraArgs: ['--docker-host', engine.dockerHost, '--envoy-path', '/nonexistent/envoy', '--resync-interval', '1'] });
  t.teardown(async () => void (await d.cleanup()));
  await d.start();
  const backends = async () => (await d.services()).find((s) => s.name === 'rsweb')?.backends.map((b) => b.container).sort() ?? [];
  await waitFor('rs-web-1 served', async () => (await backends()).length === 1, 10000);
  // Two full lists with nothing missed first: the periodic pass itself writes nothing.
  await waitFor('two periodic full lists', () => engine.lists >= 3, 10000);
  const updatesBefore = await d.metric('berth_map_operations_total{op="update"}');

  // A second backend appears, and its start event is lost.
  engine.add('c2', 'rs-web-2', labels, undefined, '127.0.0.10');
  await waitFor('the next full list finds rs-web-2', async () => JSON.stringify(await backends()) === '["rs-web-1","rs-web-2"]', 10000);
  await waitFor('its map entries written', async () => (await d.metric('berth_map_operations_total{op="update"}')) > updatesBefore, 10000);
  // One more full list after it: a pass that finds the maps as berth left them.
  const lists = engine.lists;
  await waitFor('one more full list', () => engine.lists >= lists + 2, 10000);

  const log = fs.readFileSync(d.logFile, 'utf8');
  t.regex(log, /full Docker list: containers differed from the last known state \(missed events\)/);
  t.notRegex(log, /the maps needed writes/, 'applying a missed event is not a missed map write');
  t.is(await d.metric('berth_drift_repaired_total{kind="plan"}'), 0);
  t.is(await d.metric('berth_drift_repaired_total{kind="map_entry"}'), 0);
});

hostAsBefore(test);
