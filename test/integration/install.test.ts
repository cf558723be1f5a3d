/**
 * scripts/install into a scratch root, the installed berthd run for real with the default
 * paths, then `berth cleanup` + scripts/uninstall: the host must look as it did before.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO, sleep, waitFor } from '../helpers/berthd';
import { getJson } from '../../src/api/server';
import { run } from '../../src/util/exec';
import { snapshotHostState, diffHostState, hostAsBefore } from '../helpers/cleanup';

test('install into a scratch root, run, cleanup, uninstall: host as before', async (t) => {
  if (fs.existsSync('/run/berth/berth.sock')) {
    // A berthd of the machine's own (e.g. the demo) owns the default paths; this test needs them.
    t.fail('a berthd is already running on /run/berth; stop it (and run berth cleanup) before the suite');
    return;
  }
  const before = await snapshotHostState();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-root-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));

  const inst = await run('bash', [path.join(REPO, 'scripts/install'), '--root', root], { timeoutMs: 300000 });
  t.is(inst.code, 0, inst.stderr);
  for (const f of ['opt/berth/dist/berthd.js', 'opt/berth/dist/berth.js', 'etc/systemd/system/berthd.service',
    'etc/berth/config.yaml', 'usr/local/bin/berth', 'usr/local/bin/berthd', 'opt/berth/package.json']) {
    t.true(fs.existsSync(path.join(root, f)), `${f} installed`);
  }
  t.true(fs.readdirSync(path.join(root, 'opt/berth/build/bpf')).some((f) => f.endsWith('.bpf.o')), 'BPF objects installed');
  t.false(fs.existsSync(path.join(root, 'opt/berth/node_modules/ava')), 'dev dependencies pruned');
  t.regex(fs.readFileSync(path.join(root, 'usr/local/bin/berth'), 'utf8'), /\/opt\/berth\/dist\/berth\.js/);
  const unit = fs.readFileSync(path.join(root, 'etc/systemd/system/berthd.service'), 'utf8');
  t.regex(unit, /^Type=notify$/m);
  t.regex(unit, /^WatchdogSec=/m);
  // The node this was installed with, by absolute path (systemd does not search PATH like a shell).
  t.true(unit.includes(`ExecStart=${fs.realpathSync(process.execPath)} /opt/berth/dist/berthd.js`), unit.match(/^ExecStart=.*$/m)?.[0]);
  t.regex(unit, /^CapabilityBoundingSet=.*\bCAP_SYS_CHROOT\b/m, 'setns(CLONE_NEWNS) needs CAP_SYS_CHROOT');
  // systemd's own parser: it exits 0 but names every unknown key, bad value or missing binary on stderr.
  const verify = await run('systemd-analyze', ['verify', path.join(root, 'etc/systemd/system/berthd.service')]);
  t.deepEqual([verify.code, verify.stderr.trim()], [0, ''], 'systemd-analyze verify finds nothing');

  // Run the installed daemon with the default paths and let it create its state.
  const cli = path.join(root, 'opt/berth/dist/berth.js');
  // A failed assertion below must not leave berthd's datapath, Envoy and /run/berth behind
  // (teardowns run last-registered first: this one after berthd is killed).
  let cleaned = false;
  t.teardown(async () => { if (!cleaned) await run(process.execPath, [cli, 'cleanup']); });
  const daemon = spawn(process.execPath, [path.join(root, 'opt/berth/dist/berthd.js'), '--config', path.join(root, 'etc/berth/config.yaml')], { stdio: 'ignore' });
  t.teardown(() => { if (daemon.exitCode === null) daemon.kill('SIGKILL'); });
  await waitFor('installed berthd ready', async () => (await getJson<{ ready: boolean }>('/run/berth/berth.sock', '/healthz', 1000)).ready, 30000);
  t.true(fs.existsSync('/sys/fs/bpf/berth'));
  t.is((fs.statSync('/run/berth/berth.sock').mode & 0o777), 0o600, 'admin socket is 0600');
  // The bundle finds the install's files from its package root (src/util/root.ts), not from its
  // own __dirname: the version it reports is read from /opt/berth/package.json.
  const pkgVersion = (JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
  t.is((await getJson<{ version: string }>('/run/berth/berth.sock', '/status', 5000)).version, pkgVersion, 'status names the package version');
  daemon.kill('SIGTERM');
  await new Promise((r) => daemon.once('exit', r));
  await sleep(100);

  const cleanup = await run(process.execPath, [cli, 'cleanup']);
  cleaned = true;
  t.is(cleanup.code, 0, cleanup.stderr);
  t.regex(cleanup.stdout, /removed/);
  const un = await run('bash', [path.join(REPO, 'scripts/uninstall'), '--root', root]);
  t.is(un.code, 0, un.stderr);
  for (const f of ['opt/berth', 'etc/systemd/system/berthd.service', 'etc/berth', 'usr/local/bin/berth']) t.false(fs.existsSync(path.join(root, f)), `${f} removed`);

  const after = await snapshotHostState();
  t.deepEqual(diffHostState(before, after), [], 'host state as before install');
});

// Every integration file ends with the host-as-before check.
hostAsBefore(test);
