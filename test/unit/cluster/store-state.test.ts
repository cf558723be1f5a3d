import test from 'ava';
import { connectionState, etcdKeepalive, keepaliveSchedule, type ConnectionState, type PathHealth } from '../../../src/cluster/store';

test('connectionState: disconnected when either path failed last, connected once the watch is up and writes have not failed', (t) => {
  const table: [PathHealth, PathHealth, ConnectionState][] = [
    ['unknown', 'unknown', 'connecting'],
    ['unknown', 'up', 'connecting'],
    ['up', 'unknown', 'connected'], // nothing published yet: the watch alone says etcd answers
    ['up', 'up', 'connected'],
    // Quorum lost: the watch on a live member stays open, the writes fail.
    ['up', 'down', 'disconnected'],
    // Quorum back: a later successful write brings the state back although the watch never dropped
    // (the bug of the VM cluster run: it stayed "disconnected" until the watch reconnected).
    ['down', 'up', 'disconnected'],
    ['down', 'down', 'disconnected'],
    ['down', 'unknown', 'disconnected'],
    ['unknown', 'down', 'disconnected'],
  ];
  for (const [w, p, want] of table) t.is(connectionState(w, p), want, `watch ${w}, publish ${p}`);
});

test('etcdKeepalive: pings no more often than etcd permits by default (6 s > its 5 s min-time), every TTL/3 for long TTLs', (t) => {
  t.deepEqual(etcdKeepalive(5), { 'grpc.keepalive_time_ms': 6000, 'grpc.keepalive_timeout_ms': 3000 });
  t.deepEqual(etcdKeepalive(2), { 'grpc.keepalive_time_ms': 6000, 'grpc.keepalive_timeout_ms': 3000 });
  t.deepEqual(etcdKeepalive(30), { 'grpc.keepalive_time_ms': 10000, 'grpc.keepalive_timeout_ms': 3000 });
});

test('keepaliveSchedule: renew every TTL/3; after a failed renewal at least three more attempts fit before etcd expires the lease', (t) => {
  t.deepEqual(keepaliveSchedule(5), { everyMs: 1666, attemptMs: 833 });
  t.deepEqual(keepaliveSchedule(30), { everyMs: 10000, attemptMs: 5000 });
  t.deepEqual(keepaliveSchedule(2), { everyMs: 666, attemptMs: 333 });
  t.deepEqual(keepaliveSchedule(600), { everyMs: 200000, attemptMs: 5000 }, 'attempts capped at 5 s');
  t.deepEqual(keepaliveSchedule(1), { everyMs: 333, attemptMs: 300 }, 'attempts at least 0.3 s');
  for (const ttl of [2, 3, 5, 10, 30, 600]) {
    const { everyMs, attemptMs } = keepaliveSchedule(ttl);
    // Worst case: the renewal due at everyMs after the last success fails after attemptMs.
    const left = ttl * 1000 - everyMs - attemptMs;
    t.true(Math.floor(left / attemptMs) >= 3, `TTL ${ttl}: ${left} ms left after the first failure`);
  }
});
