/**
 * Hosts without systemd boot without bpffs at /sys/fs/bpf (these test VMs do). The datapath must
 * then mount a bpf filesystem itself, and where it cannot make its pin directory it must fail at
 * once with a message naming bpfPinDir, not hang (Node 20's recursive mkdir spins forever on the
 * ENOENT that sysfs answers). /sys/fs/bpf itself is left alone: other software may pin there.
 */
import test from 'ava';
import { hostAsBefore } from '../helpers/cleanup';
import fs from 'node:fs';
import path from 'node:path';
import { Datapath, DatapathErrorCode } from '../../src/datapath';
import type { DatapathOptions } from '../../src/datapath/types';
import { silentLogger } from '../../src/util/log';
import { run } from '../../src/util/exec';
import { inBpffs, mkdirp, readMountInfo } from '../../src/util/mounts';
import { Berthd, DAEMON, runCli } from '../helpers/berthd';

const base = `/run/berth-test-bpffs-${process.pid}`;
const OPTS: DatapathOptions = {
  pinDir: `${base}/fs/berth`,
  cgroupRoot: 'auto',
  hostProc: '/proc',
  runDir: `${base}/run`,
  serviceCidr: '10.214.0.0/16',
  serviceCidr6: 'fd00:214::/112',
  logger: silentLogger(),
};

test.after.always(async () => {
  await Datapath.cleanup(OPTS).catch(() => undefined);
  await run('umount', [`${base}/fs`]);
  fs.rmSync(base, { recursive: true, force: true });
});

test('a pin dir whose parent is no bpffs: berth mounts one there, pins in it, cleanup removes the pins', async (t) => {
  t.false(inBpffs(`${base}/fs`));
  const dp = await Datapath.open(OPTS);
  try {
    t.true(inBpffs(OPTS.pinDir), 'the parent is now a bpf filesystem');
    t.true(readMountInfo().some((m) => m.mountPoint === `${base}/fs` && m.fsType === 'bpf'));
    t.true(fs.existsSync(path.join(OPTS.pinDir, 'berth_services')));
    t.true(fs.existsSync(path.join(OPTS.pinDir, 'link_berth_sock4_connect')));
    t.true(dp.status().cgroupIsHostRoot);
  } finally {
    dp.close();
  }
  const removed = await Datapath.cleanup(OPTS);
  t.true(removed.includes(OPTS.pinDir), removed.join('\n'));
  t.false(fs.existsSync(OPTS.pinDir));
});

test('a pin dir that cannot be made (sysfs) fails at once with BERTH_DP_BPFFS naming bpfPinDir', async (t) => {
  const bad = { ...OPTS, pinDir: '/sys/fs/berth-test-nonexistent/pins/berth' };
  const e = await t.throwsAsync(Datapath.open(bad));
  t.is((e as Error & { code: string }).code, DatapathErrorCode.BPFFS);
  t.regex(e!.message, /bpfPinDir \/sys\/fs\/berth-test-nonexistent\/pins\/berth/);
  t.regex(e!.message, /ENOENT|EPERM/, 'the errno sysfs answered');
  t.false(fs.existsSync('/sys/fs/berth-test-nonexistent'));
});

test('mkdirp: creates missing parents, accepts an existing directory, throws on sysfs instead of spinning', (t) => {
  mkdirp(`${base}/a/b/c`);
  t.true(fs.statSync(`${base}/a/b/c`).isDirectory());
  t.notThrows(() => mkdirp(`${base}/a/b/c`));
  // sysfs answers EPERM here and ENOENT in a mount-point dir such as an unmounted /sys/fs/bpf.
  const e = t.throws(() => mkdirp('/sys/fs/berth-test-nonexistent/x')) as NodeJS.ErrnoException;
  t.true(['ENOENT', 'EPERM'].includes(e.code!), e.code);
});

test('berthd itself mounts a bpffs where its pin dir needs one, serves, and berth cleanup removes its pins', async (t) => {
  const dbase = `/run/berth-test-bpffsd-${process.pid}`;
  const pinDir = `${dbase}/fs/berth`;
  // (A later --bpf-pin-dir wins over the helper's default one.)
  const d = new Berthd({ name: 'bpffsd', serviceCidr: '10.214.0.0/16', serviceCidr6: 'fd00:214::/112', extraArgs: ['--bpf-pin-dir', pinDir, '--envoy-path', '/nonexistent/envoy'] });
  t.teardown(async () => {
    await d.cleanup();
    await run('umount', [`${dbase}/fs`]);
    fs.rmSync(dbase, { recursive: true, force: true });
  });
  fs.mkdirSync(`${dbase}/fs`, { recursive: true });
  t.false(inBpffs(`${dbase}/fs`));
  await d.start();
  t.true(readMountInfo().some((m) => m.mountPoint === `${dbase}/fs` && m.fsType === 'bpf'), 'berthd mounted a bpf filesystem');
  t.true(fs.existsSync(path.join(pinDir, 'link_berth_sock4_connect')));
  const st = await d.status();
  t.true(st.ready && st.cgroupIsHostRoot);
  t.false(fs.existsSync('/sys/fs/bpf/berth-bpffsd'), 'nothing in the default place');
  const out = await d.cleanup();
  t.regex(out, new RegExp(pinDir.replace(/[/.-]/g, '\\$&')));
  t.false(fs.existsSync(pinDir));
});

test('berthd itself stops with exit 1 naming bpfPinDir when the pin dir cannot be made', async (t) => {
  const bad = '/sys/fs/berth-test-nonexistent/pins/berth';
  const name = `bt-bpffsd-bad-${process.pid}`;
  const args = ['--run-dir', `/run/${name}`, '--state-dir', `/var/lib/${name}`, '--bpf-pin-dir', bad, '--service-cidr', '10.214.0.0/16', '--service-cidr6', 'fd00:214::/112'];
  t.teardown(async () => {
    await runCli(['cleanup', '--force', ...args]);
    for (const dir of [`/run/${name}`, `/var/lib/${name}`]) fs.rmSync(dir, { recursive: true, force: true });
  });
  const r = await run(process.execPath, [DAEMON, ...args, '--envoy-path', '/nonexistent/envoy'], { timeoutMs: 20000 });
  t.is(r.code, 1, r.stdout + r.stderr);
  t.regex(r.stdout + r.stderr, /berthd failed to start: .*bpfPinDir \/sys\/fs\/berth-test-nonexistent\/pins\/berth/);
  t.false(fs.existsSync('/sys/fs/berth-test-nonexistent'));
});

// Every integration file ends with the host-as-before check.
hostAsBefore(test);
