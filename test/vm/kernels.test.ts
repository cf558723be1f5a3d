/**
 * The kernel matrix: the datapath, socket-LB and ingress integration tests (the same files the
 * host runs) in guests on Debian's 5.10, 6.1 and 6.12 kernels, plus `berth doctor` on each.
 * Older kernels degrade as the README says (EPERM instead of ECONNREFUSED before 5.18, no UDP
 * socket destroy before 6.5); the integration tests assert the degraded behaviour there.
 *
 * BERTH_VM_KERNELS=6.1 (comma list) cuts the matrix for local runs; CI (CI=true) always runs all.
 */
import test from 'ava';
import { buildTestBinaries } from '../helpers/images';
import { ENSURE_TEST_IMAGE, vmDown, vmJson, vmLogs, vmOk, vmSh, vmUp } from './vm';

const ALL = ['5.10', '6.1', '6.12'] as const;
type Kernel = (typeof ALL)[number];
const wanted = process.env.CI === 'true' || !process.env.BERTH_VM_KERNELS
  ? [...ALL]
  : process.env.BERTH_VM_KERNELS.split(',').map((k) => k.trim()).filter((k): k is Kernel => (ALL as readonly string[]).includes(k));

/** The integration test files run in every guest (dist/ paths relative to the checkout). */
export const MATRIX_FILES = ['datapath.test.js', 'datapath-bpffs.test.js', 'socketlb.test.js', 'ingress.test.js'].map((f) => `dist/test/integration/${f}`);

/**
 * Guest shell: a writable view of the read-only /berth checkout (overlayfs, upper dir on the
 * guest's disk), so that tests and ava may write below the repository without touching the host's.
 */
const WRITABLE_CHECKOUT = 'mkdir -p /var/tmp/bo/u /var/tmp/bo/w /root/berth && (mountpoint -q /root/berth || mount -t overlay overlay -o lowerdir=/berth,upperdir=/var/tmp/bo/u,workdir=/var/tmp/bo/w /root/berth)';

test.before(async () => {
  await buildTestBinaries();
});

for (const k of ALL) {
  const name = `berth-k${k.replace('.', '-')}`;
  const run = wanted.includes(k) ? test : test.skip;
  run(`kernel ${k}: datapath, socket LB and ingress integration tests pass in a guest; doctor names what the kernel lacks`, async (t) => {
    await vmDown(name);
    t.teardown(async () => {
      if (!t.passed) await vmLogs(name).catch(() => undefined);
      await vmDown(name);
    });
    const t0 = Date.now();
    t.log(await vmUp(name, { kernel: k }));
    const release = (await vmOk(name, 'uname -r')).trim();
    t.true(release.startsWith(`${k}.`), `guest runs ${release}`);
    await vmOk(name, `${WRITABLE_CHECKOUT} && cd /root/berth && ${ENSURE_TEST_IMAGE} >/dev/null`, 600000);

    // berth doctor: what it reports for this kernel.
    const checks = await vmJson<{ name: string; level: string; detail: string }[]>(name, 'node /root/berth/dist/src/cli/main.js doctor --json || true', 180000);
    const level = (n: string) => checks.find((c) => c.name === n)?.level;
    t.log(checks.filter((c) => c.level !== 'OK' || c.name === 'kernel').map((c) => `${c.level} ${c.name}: ${c.detail}`).join('\n'));
    // Docker and Envoy checks have real-host timeouts (5 s) that TCG guests may miss; the kernel's are exact.
    const KERNEL_CHECKS = ['kernel', 'bpf syscall', 'cgroup BPF (sock_addr)', 'socket cookie', 'socket storage', 'bpf_link', 'BTF', 'cgroup v2'];
    t.deepEqual(checks.filter((c) => c.level === 'FAIL' && KERNEL_CHECKS.includes(c.name)), [], `doctor finds nothing in ${release} that stops berth`);
    const [maj, min] = release.split('.').map(Number);
    const before = (a: number, b: number) => maj < a || (maj === a && min < b);
    t.is(level('connect refusal'), before(5, 18) ? 'WARN' : 'OK', 'EPERM instead of ECONNREFUSED exactly before 5.18');
    t.is(level('UDP fail-over'), before(6, 5) ? 'WARN' : 'OK', 'no bpf_sock_destroy exactly before 6.5');

    const tests = await vmSh(name, `cd /root/berth && npx ava --no-worker-threads --serial --concurrency=1 --timeout=5m ${MATRIX_FILES.join(' ')} 2>&1`, 40 * 60000);
    const summary = tests.stdout.split('\n').filter((l) => /tests? (passed|failed)|known failure|skipped|✘/.test(l)).join('\n');
    t.log(`${release}: ${summary.trim()} (guest up + tests: ${Math.round((Date.now() - t0) / 1000)} s)`);
    t.is(tests.code, 0, tests.stdout.slice(-6000));
  });
}
