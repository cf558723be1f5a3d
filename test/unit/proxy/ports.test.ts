import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PortAssignments, listeningPorts } from '../../../src/proxy/ports';
import { ProxyErrorCode } from '../../../src/proxy/errors';

function tmp(t: import('ava').ExecutionContext): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'bt-px-ports-'));
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

test('lowest free port, skipping busy ones; sticky; persisted; survives a restart', (t) => {
  const dir = tmp(t);
  const a = new PortAssignments(dir, { from: 15000, to: 15009 });
  t.deepEqual(a.assign(['b', 'a'], new Set([15000])), []);
  t.is(a.get('a'), 15001);
  t.is(a.get('b'), 15002);
  // 'a' goes, 'c' comes: 'b' keeps its port, 'c' takes the freed lowest one.
  a.assign(['b', 'c'], new Set([15000, 15002]));
  t.is(a.get('b'), 15002, 'sticky even though its own listener makes the port busy');
  t.is(a.get('c'), 15001);
  t.is(a.get('a'), undefined);
  t.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'proxy-ports.json'), 'utf8')), { b: 15002, c: 15001 });
  const again = new PortAssignments(dir, { from: 15000, to: 15009 });
  t.is(again.get('b'), 15002);
  t.is(again.get('c'), 15001);
});

test('an exhausted range fails only the ingresses that get no port', (t) => {
  const a = new PortAssignments(tmp(t), { from: 15000, to: 15001 });
  const failed = a.assign(['a', 'b', 'c'], new Set());
  t.deepEqual(failed.map((f) => [f.ingress, f.error.code]), [['c', ProxyErrorCode.PORTS_EXHAUSTED]]);
  t.is(a.get('a'), 15000);
  t.is(a.get('b'), 15001);
});

test('saved ports outside a changed range are dropped; a corrupt file means a fresh start', (t) => {
  const dir = tmp(t);
  fs.writeFileSync(path.join(dir, 'proxy-ports.json'), JSON.stringify({ a: 16000, b: 15005 }));
  const a = new PortAssignments(dir, { from: 15000, to: 15009 });
  t.is(a.get('a'), undefined);
  t.is(a.get('b'), 15005);
  fs.writeFileSync(path.join(dir, 'proxy-ports.json'), '{not json');
  t.is(new PortAssignments(dir, { from: 15000, to: 15009 }).get('b'), undefined);
});

test('listeningPorts reads LISTEN sockets from /proc/net/tcp and tcp6', (t) => {
  const dir = tmp(t);
  const head = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
  fs.writeFileSync(path.join(dir, 'tcp'), head
    + '   0: 0100007F:3A98 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n'
    + '   1: 0100007F:3A99 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n');
  fs.writeFileSync(path.join(dir, 'tcp6'), head
    + '   0: 00000000000000000000000000000000:7C63 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n');
  t.deepEqual([...listeningPorts(dir)].sort(), [15000, 31843]);
});

test('Envoy\'s LDS NACK text names the listeners that failed', async (t) => {
  const { listenerFailures } = await import('../../../src/proxy/index');
  const m = listenerFailures("Error adding/updating listener(s) berth_ingress_basic: cannot bind '0.0.0.0:15995': Address already in use\nberth_ingress_shop-2: some other problem\n");
  t.deepEqual([...m], [['basic', "cannot bind '0.0.0.0:15995': Address already in use"], ['shop-2', 'some other problem']]);
  t.is(listenerFailures('unrelated').size, 0);
});
