/**
 * The sd_notify protocol as systemd would see it, against a NOTIFY_SOCKET the test owns:
 * STATUS lines while starting, READY=1 only once the programs are attached at the verified host
 * root and the maps reconciled, WATCHDOG=1 pings at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM.
 */
import test from 'ava';
import fs from 'node:fs';
import { hostAsBefore } from '../helpers/cleanup';
import { Berthd, waitFor } from '../helpers/berthd';
import { NotifySocket } from '../helpers/notify-socket';
import { FakeEngine } from '../helpers/fake-engine';

test('READY after attach, STATUS lines, watchdog pings, STOPPING on SIGTERM', async (t) => {
  const sock = new NotifySocket(`/tmp/berth-notify-${process.pid}.sock`);
  await sock.open();
  const d = new Berthd({ name: 'notify', serviceCidr: '10.96.0.0/16', env: { NOTIFY_SOCKET: sock.path, WATCHDOG_USEC: '3000000' } });
  t.teardown(async () => {
    sock.close();
    await d.cleanup();
  });
  await d.start();
  const readyAt = await waitFor('READY=1', () => sock.messages.find((m) => m.msg.split('\n').includes('READY=1')));
  // When READY=1 arrived, berthd was already attached at the host root with Docker listed.
  const st = await d.status();
  t.true(st.ready);
  t.true(st.cgroupIsHostRoot);
  t.true(st.attached.includes('connect4'));
  t.is(st.docker, 'connected');
  const before = sock.messages.filter((m) => m.t <= readyAt.t).flatMap((m) => m.msg.split('\n'));
  t.true(before.some((a) => a.startsWith('STATUS=starting')), `STATUS lines before READY: ${before.join(' | ')}`);
  t.is(sock.assignments().filter((a) => a === 'READY=1').length, 1, 'READY=1 exactly once');

  // READY=1 came after the programs were attached (berthd's log line, by its timestamp: the
  // same clock as the receiver's arrival times).
  const attached = fs.readFileSync(d.logFile, 'utf8').split('\n').filter((l) => l.includes('"socket programs attached"')).map((l) => (JSON.parse(l) as { time: number }).time);
  t.is(attached.length, 1, 'attached once');
  t.true(readyAt.t * 1000 >= attached[0], `READY at ${readyAt.t * 1000}, attached at ${attached[0]}`);

  // WATCHDOG_USEC=3s: pings every WATCHDOG_USEC/2 = 1.5 s from the event loop, by their arrival
  // times: not a busy loop (pings far apart from each other) and never late enough for systemd
  // to kill a healthy berthd (a gap of 3 s or more). 3 s, not less: on a loaded 2-core machine
  // the event loop of a healthy berthd has stalled 1.5 s right after READY (clean-clone run,
  // load 7), which a 1-s interval would call a hang; the shipped unit's interval is 20 s.
  await waitFor('five watchdog pings', () => sock.messages.filter((m) => m.msg.split('\n').includes('WATCHDOG=1')).length >= 5, 15000);
  const pings = sock.messages.filter((m) => m.msg.split('\n').includes('WATCHDOG=1')).map((m) => m.t * 1000);
  const gaps = pings.slice(1).map((x, i) => Math.round(x - pings[i])).sort((a, b) => a - b);
  const median = gaps[Math.floor(gaps.length / 2)];
  t.true(median >= 1200 && median <= 1950, `median gap ${median} ms (gaps ${gaps.join(', ')}), want about 1500`);
  t.true(gaps[gaps.length - 1] < 3000, `largest gap ${gaps[gaps.length - 1]} ms must stay under WATCHDOG_USEC`);
  t.true(sock.assignments().some((a) => /^STATUS=Docker connected; \d+ services/.test(a)), sock.assignments().join(' | '));

  const code = await d.stop();
  t.is(code, 0);
  const all = sock.assignments();
  t.is(all.filter((a) => a === 'STOPPING=1').length, 1);
  t.true(all.lastIndexOf('STOPPING=1') > all.indexOf('READY=1'));
});

test('no READY while Docker cannot be listed: STATUS says so, watchdog pings go on; READY once the list succeeds', async (t) => {
  const sock = new NotifySocket(`/tmp/berth-notify2-${process.pid}.sock`);
  await sock.open();
  // An engine that answers, but whose container list fails (an engine in trouble).
  const engine = await FakeEngine.start();
  engine.failList = true;
  engine.add('c1', 'fake-web', { Labels: { 'berth.service': 'fakeweb', 'berth.ports': '80:8080' } }, undefined, '127.0.0.9');
  const d = new Berthd({ name: 'notify2', serviceCidr: '10.96.0.0/16', env: { NOTIFY_SOCKET: sock.path, WATCHDOG_USEC: '3000000' }, extraArgs: ['--docker-host', engine.dockerHost, '--envoy-path', '/nonexistent/envoy'] });
  t.teardown(async () => {
    sock.close();
    await d.cleanup();
    await engine.close();
  });
  await d.start(30000, 'serving');
  await waitFor('watchdog pings while not ready', () => sock.assignments().filter((a) => a === 'WATCHDOG=1').length >= 2, 5000);
  await waitFor('several failed lists', () => engine.lists >= 2, 10000);
  t.false(sock.assignments().includes('READY=1'), 'no READY without a full Docker list');
  t.false((await d.status()).ready);
  t.true(sock.assignments().some((a) => /^STATUS=.*Docker (disconnected|connecting)/.test(a)), sock.assignments().join(' | '));
  // The engine recovers: the next attempt lists, reconciles, and READY follows.
  engine.failList = false;
  await waitFor('READY=1 after the first good list', () => sock.assignments().includes('READY=1'), 20000);
  const st = await d.status();
  t.is(st.docker, 'connected');
  t.true(st.cgroupIsHostRoot);
  t.truthy((await d.services()).find((s) => s.name === 'fakeweb' && s.backends.length === 1));
});

// Every integration file ends with the host-as-before check.
hostAsBefore(test);
