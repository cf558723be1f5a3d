/**
 * seeds/000 reproduced without Docker: a process in a PRIVATE cgroup namespace (rooted at a test
 * cgroup, so its own cgroup looks like "/") and a private mount namespace opens the datapath with
 * cgroupRoot=auto. It must notice, mount cgroup2 from the host's cgroup and mount namespaces at
 * <runDir>/cgroupv2, attach there, and report the verified host root; a connect from the host
 * (outside that cgroup) to the VIP must be balanced. Cleanup from the host unmounts it again.
 */
import test, { type ExecutionContext } from 'ava';
import { hostAsBefore } from '../helpers/cleanup';
import fs from 'node:fs';
import path from 'node:path';
import { Datapath } from '../../src/datapath';
import { cgroup2RootMounts } from '../../src/datapath/cgroup';
import { loadNative } from '../../src/native';
import type { DatapathOptions, DatapathStatus } from '../../src/datapath/types';
import { silentLogger } from '../../src/util/log';
import { run, type ExecResult } from '../../src/util/exec';
import { readMountInfo } from '../../src/util/mounts';
import { tcpServer, tcpProbe } from './datapath-util';
import { DAEMON, runCli } from '../helpers/berthd';

const OPTS: DatapathOptions = {
  pinDir: '/sys/fs/bpf/berth-test-dpcgns',
  cgroupRoot: 'auto',
  hostProc: '/proc',
  runDir: '/run/berth-test-dpcgns',
  serviceCidr: '10.213.0.0/16',
  serviceCidr6: 'fd00:213::/112',
  logger: silentLogger(),
};
const VIP = '10.213.0.10';
const PORT = 28421;

/**
 * A test cgroup below the v2 root and the child script (datapath-cgns-child.js) run in it with a
 * private cgroup and mount namespace; `inside` runs in the new namespaces before node. Cleans up
 * the datapath, the run dir and the cgroup afterwards (the child has exited: the cgroup is empty).
 */
async function runChildInPrivateCgroupns(t: ExecutionContext, name: string, inside: string, extraArgs: string[]): Promise<{ cg: string; r: ExecResult }> {
  const v2 = cgroup2RootMounts()[0];
  t.truthy(v2, 'a cgroup2 hierarchy is visible on this host');
  const cg = path.join(v2, `${name}-${process.pid}`);
  t.teardown(async () => {
    await Datapath.cleanup(OPTS);
    fs.rmSync(OPTS.runDir, { recursive: true, force: true });
    try { fs.rmdirSync(cg); } catch { /* already gone */ }
  });
  await Datapath.cleanup(OPTS);
  fs.mkdirSync(cg, { recursive: true });
  const child = path.join(__dirname, 'datapath-cgns-child.js');
  const script = `echo $$ > ${cg}/cgroup.procs && exec unshare --cgroup --mount --propagation private sh -c '${inside}exec "$0" "$@"' ${process.execPath} ${child} "$@"`;
  const r = await run('sh', ['-c', script, 'sh', OPTS.pinDir, OPTS.runDir, OPTS.serviceCidr, OPTS.serviceCidr6, VIP, '127.0.0.4', String(PORT), ...extraArgs], { timeoutMs: 30000 });
  return { cg, r };
}

test('private cgroup namespace: auto mounts cgroup2 in the host namespaces and attaches at the true root', async (t) => {
  const v2 = cgroup2RootMounts()[0];
  const srv = await tcpServer('127.0.0.4', PORT, 'cgns-backend');
  t.teardown(() => srv.close());
  const { r } = await runChildInPrivateCgroupns(t, 'bt-dp-cgns', '', []);
  t.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { status: DatapathStatus; sync: { errors: unknown[] } };
  t.is(out.status.cgroupRoot, path.join(OPTS.runDir, 'cgroupv2'));
  t.true(out.status.cgroupIsHostRoot);
  t.deepEqual(out.sync.errors, []);

  // From the host: the programs sit on the root of the v2 hierarchy...
  const n = loadNative();
  const fd = n.objGet(path.join(OPTS.pinDir, 'link_berth_sock4_connect'));
  const progId = n.linkInfo(fd).progId;
  n.closeFd(fd);
  const tree = (await run('bpftool', ['cgroup', 'show', v2])).stdout;
  t.regex(tree, new RegExp(`^\\s*${progId}\\s.*berth_sock4_connect`, 'm'), tree);
  // ...so this process (outside the child's cgroup) is balanced too.
  const p = await tcpProbe(VIP, 80);
  t.deepEqual([p.ok, p.tag, p.peer], [true, 'cgns-backend', `${VIP}:80`], JSON.stringify(p));
  // The mount lives in the host mount namespace (this one), made by berth.
  t.true(readMountInfo().some((m) => m.mountPoint === path.join(OPTS.runDir, 'cgroupv2') && m.fsType === 'cgroup2'));

  const removed = await Datapath.cleanup(OPTS);
  t.true(removed.includes(`mount ${path.join(OPTS.runDir, 'cgroupv2')}`), removed.join('\n'));
  t.false(readMountInfo().some((m) => m.mountPoint.startsWith(OPTS.runDir)));
  t.notRegex((await run('bpftool', ['cgroup', 'show', v2])).stdout, new RegExp(`^\\s*${progId}\\s`, 'm'));
});

test('private cgroup namespace without the host\'s /proc: auto refuses (BERTH_DP_CGROUP) instead of attaching to its own cgroup', async (t) => {
  const v2 = cgroup2RootMounts()[0];
  // Like a --cgroupns=private container: the host's view of cgroup2 is gone (unmounted in the
  // child's private mount namespace only), cgroup2 mounted inside the namespace shows the
  // child's own cgroup as its top (seed 000), and hostProc leads nowhere.
  const { cg, r } = await runChildInPrivateCgroupns(t, 'bt-dp-cgns-refuse', `umount ${v2} && mount -t cgroup2 cgroup2 ${v2} && `, ['/nonexistent-proc']);
  t.not(r.code, 0, r.stdout);
  t.regex(r.stderr, /^BERTH_DP_CGROUP (DatapathError: )?cgroupRoot auto: the host's root cgroup is not visible here .* cannot be reached through \/nonexistent-proc\/1\/ns/m, r.stderr);
  t.regex(r.stderr, /set cgroupRoot to a cgroup2 directory/);
  // Nothing was attached anywhere: no link pins, and no berth program below the test cgroup.
  t.false(fs.existsSync(path.join(OPTS.pinDir, 'link_berth_sock4_connect')));
  t.notRegex((await run('bpftool', ['cgroup', 'show', cg])).stdout, /berth_/);
});

test('berthd itself (not only Datapath.open) refuses cgroupRoot auto in a private cgroup namespace it cannot see out of: exit 1, BERTH_DP_CGROUP, nothing attached', async (t) => {
  const v2 = cgroup2RootMounts()[0];
  const cg = path.join(v2, `bt-dp-cgns-berthd-${process.pid}`);
  const args = ['--run-dir', OPTS.runDir, '--state-dir', `/var/lib/berth-test-dpcgns-${process.pid}`, '--bpf-pin-dir', OPTS.pinDir,
    '--service-cidr', OPTS.serviceCidr, '--service-cidr6', OPTS.serviceCidr6, '--envoy-path', '/nonexistent/envoy'];
  t.teardown(async () => {
    // The VIP routes come first at start-up (before the attach point is resolved): berth cleanup removes them.
    const r = await runCli(['cleanup', '--force', ...args.slice(0, 10)]);
    if (r.code !== 0) throw new Error(`cleanup: ${r.stderr}`);
    try { fs.rmdirSync(cg); } catch { /* already gone */ }
  });
  fs.mkdirSync(cg, { recursive: true });
  const script = `echo $$ > ${cg}/cgroup.procs && exec unshare --cgroup --mount --propagation private sh -c 'umount ${v2} && mount -t cgroup2 cgroup2 ${v2} && exec "$0" "$@"' ${process.execPath} ${DAEMON} "$@"`;
  const r = await run('sh', ['-c', script, 'sh', ...args, '--host-proc', '/nonexistent-proc', '--log-level', 'info'], { timeoutMs: 30000 });
  t.is(r.code, 1, r.stdout + r.stderr);
  const out = r.stdout + r.stderr;
  t.regex(out, /berthd failed to start: cgroupRoot auto: the host's root cgroup is not visible here .* cannot be reached through \/nonexistent-proc\/1\/ns/);
  t.regex(out, /BERTH_DP_CGROUP/);
  t.false(fs.existsSync(path.join(OPTS.pinDir, 'link_berth_sock4_connect')), 'no link pinned');
  t.notRegex((await run('bpftool', ['cgroup', 'show', cg])).stdout, /berth_/, 'nothing attached below the test cgroup');
});

// Every integration file ends with the host-as-before check.
hostAsBefore(test);
