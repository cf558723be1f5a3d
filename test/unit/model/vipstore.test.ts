import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ModelError } from '../../../src/model/errors';
import { VipStore } from '../../../src/model/vipstore';

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'berth-vips-'));
}

test('a missing file is an empty store; save creates the directory and the file', (t) => {
  const dir = tmpDir();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'sub', 'vips.json');
  const s = VipStore.load(file);
  t.deepEqual(s.list(), []);
  t.false(s.dirty);
  s.save();
  t.false(fs.existsSync(file), 'nothing changed, nothing written');
  s.set('service', 'web', '10.96.1.2', 'fd00:96::1:2');
  s.set('ingress', 'web', '10.96.3.4', null);
  t.true(s.dirty);
  s.save();
  t.false(s.dirty);
  t.is(fs.statSync(file).mode & 0o777, 0o600);
  t.deepEqual(fs.readdirSync(path.dirname(file)), ['vips.json'], 'no temporary file left behind');

  const again = VipStore.load(file);
  t.deepEqual(again.list(), [
    { kind: 'service', name: 'web', vip: '10.96.1.2', vip6: 'fd00:96::1:2', seq: 1 },
    { kind: 'ingress', name: 'web', vip: '10.96.3.4', vip6: null, seq: 2 },
  ]);
  again.set('service', 'new', '10.96.5.5', null);
  t.is(again.get('service', 'new')!.seq, 3, 'seq continues after a reload');
});

test('set keeps seq on update, retain forgets names that are gone', (t) => {
  const s = VipStore.inMemory();
  s.set('service', 'a', '10.96.0.1', null);
  s.set('service', 'b', '10.96.0.2', null);
  s.set('service', 'a', '10.96.0.9', null);
  t.is(s.get('service', 'a')!.seq, 1);
  t.is(s.get('service', 'a')!.vip, '10.96.0.9');
  s.retain(new Set(['service/b']));
  t.is(s.get('service', 'a'), undefined);
  t.deepEqual(s.list().map((a) => a.name), ['b']);
  s.save(); // in-memory: a no-op, must not throw
  t.pass();
});

test('entries that make no sense are dropped on load; the rest kept', (t) => {
  const dir = tmpDir();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'vips.json');
  fs.writeFileSync(file, JSON.stringify({
    version: 1,
    assignments: [
      { kind: 'service', name: 'ok', vip: '10.96.0.1', vip6: 'FD00:96:0:0::1', seq: 4 },
      { kind: 'pod', name: 'x', vip: '10.96.0.2', vip6: null, seq: 1 },
      { kind: 'service', name: 'bad-ip', vip: 'nope', vip6: null, seq: 2 },
      { kind: 'service', name: 'leading-zero', vip: '10.96.000.1', vip6: null, seq: 6 },
      { kind: 'service', name: 'bad-seq', vip: '10.96.0.3', vip6: null, seq: 0 },
      { kind: 'service', name: '', vip: '10.96.0.4', vip6: null, seq: 3 },
      'garbage',
      { kind: 'service', name: 'ok', vip: '10.96.0.5', vip6: null, seq: 5 },
    ],
  }));
  const s = VipStore.load(file);
  t.true(s.dirty, 'will be rewritten clean');
  t.deepEqual(s.list(), [{ kind: 'service', name: 'ok', vip: '10.96.0.1', vip6: 'fd00:96::1', seq: 4 }], 'canonical; the first of a duplicate wins');
});

// [file content, description]
const corrupt: [string, string][] = [
  ['{"version":1,"assignments":[', 'truncated JSON'],
  ['', 'empty file'],
  ['[]', 'no assignments array'],
  ['{"version":1}', 'assignments missing'],
  ['null', 'null'],
];
for (const [content, what] of corrupt) {
  test(`a corrupt store throws a coded error naming the file: ${what}`, (t) => {
    const dir = tmpDir();
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'vips.json');
    fs.writeFileSync(file, content);
    const e = t.throws(() => VipStore.load(file), { instanceOf: ModelError });
    t.is((e as ModelError).code, 'BERTH_VIPSTORE_CORRUPT');
    t.true(e!.message.includes(file));
  });
}

test('save failure is a coded error and leaves no temporary file', (t) => {
  const dir = tmpDir();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'vips.json');
  fs.mkdirSync(file); // rename over a directory fails
  const s = VipStore.load(path.join(dir, 'other.json'));
  s.set('service', 'a', '10.96.0.1', null);
  const bad = Object.assign(Object.create(Object.getPrototypeOf(s)), s, { path: file }) as VipStore;
  const e = t.throws(() => bad.save(), { instanceOf: ModelError });
  t.is((e as ModelError).code, 'BERTH_VIPSTORE_WRITE');
  t.deepEqual(fs.readdirSync(dir).sort(), ['vips.json']);
});
