import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { applySetup, dockerDaemonJson, planSetup, resolvedDropIn, revertPlan, revertSetup, SetupError, type SetupPaths } from '../../../src/dns/setup';

test('daemon.json: the DNS VIP goes first, other keys and servers are kept; bad files are refused', (t) => {
  t.deepEqual(JSON.parse(dockerDaemonJson(null, '10.96.0.10')!), { dns: ['10.96.0.10'] });
  t.deepEqual(JSON.parse(dockerDaemonJson('', '10.96.0.10')!), { dns: ['10.96.0.10'] });
  t.deepEqual(JSON.parse(dockerDaemonJson('{"log-driver":"local","dns":["8.8.8.8","10.96.0.10"]}', '10.96.0.10')!), { 'log-driver': 'local', dns: ['10.96.0.10', '8.8.8.8'] });
  t.is(dockerDaemonJson('{"dns":["10.96.0.10","8.8.8.8"]}', '10.96.0.10'), null, 'already first: no change');
  for (const bad of ['{', '[]', '"x"', '{"dns":"8.8.8.8"}', '{"dns":[1]}']) t.throws(() => dockerDaemonJson(bad, '10.96.0.10'), { instanceOf: SetupError }, bad);
});

test('resolved drop-in routes only ~domain to the VIPs', (t) => {
  const d = resolvedDropIn('berth', '10.96.0.10', 'fd00:96::a');
  t.regex(d, /^\[Resolve\]$/m);
  t.regex(d, /^DNS=10\.96\.0\.10 fd00:96::a$/m);
  t.regex(d, /^Domains=~berth$/m);
});

test('planSetup: resolved only where it runs; nothing when already set up', (t) => {
  const paths: SetupPaths = { dockerDaemonJson: '/d.json', resolvedDropIn: '/r.conf', record: '/rec' };
  const o = { domain: 'berth', vip: '10.96.0.10', vip6: null, resolved: true };
  t.deepEqual(planSetup(o, paths, { dockerDaemonJson: null, resolvedDropIn: null }).map((c) => c.file), ['/r.conf', '/d.json']);
  t.deepEqual(planSetup({ ...o, resolved: false }, paths, { dockerDaemonJson: null, resolvedDropIn: null }).map((c) => c.file), ['/d.json']);
  t.deepEqual(planSetup(o, paths, { dockerDaemonJson: '{"dns":["10.96.0.10"]}', resolvedDropIn: resolvedDropIn('berth', '10.96.0.10', null) }), []);
});

test('revertPlan: restores what berth wrote, in reverse order; leaves a file changed since', (t) => {
  const rec = { version: 1 as const, appliedAt: '', changes: [
    { file: '/a', before: null, after: 'A1', why: '' },
    { file: '/b', before: 'B0', after: 'B1', why: '' },
    { file: '/a', before: 'A1', after: 'A2', why: '' },
  ] };
  const r = revertPlan(rec, new Map([['/a', 'A2'], ['/b', 'B1-edited-by-user']]));
  t.deepEqual(r.restore.map((c) => [c.file, c.after]), [['/a', 'A1'], ['/a', null]]);
  t.deepEqual(r.leftAlone, ['/b changed since berth wrote it; left as it is']);
});

test('apply then revert leaves the files byte for byte as before (also a missing file)', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-dns-setup-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const paths: SetupPaths = { dockerDaemonJson: path.join(dir, 'docker/daemon.json'), resolvedDropIn: path.join(dir, 'resolved.conf.d/berth.conf'), record: path.join(dir, 'state/dns-setup.json') };
  const original = '{\n    "log-driver": "journald",   "dns": ["192.168.1.1"]\n}\n'; // odd spacing kept exactly
  fs.mkdirSync(path.dirname(paths.dockerDaemonJson), { recursive: true });
  fs.writeFileSync(paths.dockerDaemonJson, original);
  const o = { domain: 'berth', vip: '10.96.0.10', vip6: 'fd00:96::a', resolved: true };
  t.is(applySetup(o, paths, false).length, 2, 'dry run plans');
  t.is(fs.readFileSync(paths.dockerDaemonJson, 'utf8'), original, 'dry run writes nothing');
  t.false(fs.existsSync(paths.record));
  t.is(applySetup(o, paths, true).length, 2);
  t.deepEqual(JSON.parse(fs.readFileSync(paths.dockerDaemonJson, 'utf8')).dns, ['10.96.0.10', '192.168.1.1']);
  t.true(fs.existsSync(paths.resolvedDropIn));
  t.is(applySetup(o, paths, true).length, 0, 'idempotent');
  const r = revertSetup(paths);
  t.is(r.restored.length, 2);
  t.is(fs.readFileSync(paths.dockerDaemonJson, 'utf8'), original);
  t.false(fs.existsSync(paths.resolvedDropIn));
  t.false(fs.existsSync(paths.record));
  t.deepEqual(revertSetup(paths), { restored: [], leftAlone: [] }, 'nothing recorded: no-op');
});
