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

// Every integration file ends with the host-as-before check.
hostAsBefore(test);
