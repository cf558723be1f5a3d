/**
 * The kernel matrix: the datapath integration tests and the ingress test in redirect mode `ebpf`
 * (the same files the host runs: dist/test/integration/, see MATRIX_RUNS) in guests on Debian's
 * 5.10, 6.1 and 6.12 kernels, plus `berth doctor` on each. One guest at a time (one ava test
 * each); `npm run test:vm` runs this file, then the systemd suite (ava --serial: one file at a time).
 *
 * Older kernels degrade as the README says and the integration files assert the degraded
 * behaviour there (test/helpers/kernel.ts): EPERM instead of ECONNREFUSED before 5.18, no UDP
 * socket destroy before 6.5, and before 5.14 netns cookies come from berth's sock_create probe
 * (one more cgroup program); before 6.5 Envoy's ingress listeners drop SO_REUSEPORT, which
 * bpf_sk_assign does not take there. Here, doctor must name exactly those per kernel.
 *
 * BERTH_VM_KERNELS=6.1 (comma list) cuts the matrix for local runs; CI (CI=true) always runs all.
 */
import fs from 'node:fs';
import path from 'node:path';
import test from 'ava';
import { buildTestBinaries } from '../helpers/images';
import { kernelAtLeast } from '../helpers/kernel';
import { ENSURE_TEST_IMAGE, LOG_DIR, vmDown, vmJson, vmLogs, vmOk, vmSh, vmUp } from './vm';

const ALL = ['5.10', '6.1', '6.12'] as const;
type Kernel = (typeof ALL)[number];

/** Kernels to run: all in CI; else BERTH_VM_KERNELS (comma list), all when unset. Unknown names throw. */
export function wantedKernels(env: NodeJS.ProcessEnv): Kernel[] {
  if (env.CI === 'true' || !env.BERTH_VM_KERNELS) return [...ALL];
  const asked = env.BERTH_VM_KERNELS.split(',').map((k) => k.trim()).filter(Boolean);
  const bad = asked.filter((k) => !(ALL as readonly string[]).includes(k));
  if (bad.length || !asked.length) throw new Error(`BERTH_VM_KERNELS=${env.BERTH_VM_KERNELS}: kernels are ${ALL.join(', ')}`);
  return asked as Kernel[];
}

/**
 * What runs in every guest, as ava invocations (dist/ paths relative to the checkout): the whole
 * datapath file (every socket hook, IPv4/IPv6, TCP/UDP, refusal, UDP fail-over, adoption,
 * cleanup: the kernel features berth depends on), and the ingress test in redirect mode `ebpf`
 * (tc + bpf_sk_assign to Envoy's transparent listeners, from host, container and outside
 * clients: the path whose kernel support changed in 6.5). The other integration files run
 * berthd over these same kernel features; under TCG each berthd-and-Envoy test costs minutes, so
 * they stay on the host to keep the suite within its 40 minutes.
 */
export const MATRIX_RUNS: { files: string[]; match: string[]; kernels: Kernel[] }[] = [
  { files: ['dist/test/integration/datapath.test.js'], match: [], kernels: ['5.10', '6.1', '6.12'] },
  // Not on 6.1: test/vm/systemd.test.ts runs there, and its steps 3-6 send the same traffic
  // (ingress VIP from the guest host and from a container, redirect `ebpf`, through Envoy).
  { files: ['dist/test/integration/ingress.test.js'], match: ['*redirect: ebpf'], kernels: ['5.10', '6.12'] },
];

export const HOST_ONLY = ['a full services map fails*', '100,000 services in one sync*'];

/**
 * Guest shell: a writable view of the read-only /berth checkout (overlayfs, upper dir on the
 * guest's disk), so that tests and ava may write below the repository without touching the host's.
 */
const WRITABLE_CHECKOUT = 'mkdir -p /var/tmp/bo/u /var/tmp/bo/w /root/berth && (mountpoint -q /root/berth || mount -t overlay overlay -o lowerdir=/berth,upperdir=/var/tmp/bo/u,workdir=/var/tmp/bo/w /root/berth)';

/** doctor's checks of the kernel itself: exact (no timeouts involved), unlike Docker's and Envoy's. */
const KERNEL_CHECKS = ['kernel', 'bpf features', 'bpf syscall', 'cgroup BPF (sock_addr)', 'socket cookie', 'socket storage', 'netns cookie', 'netns cookie option',
  'connect refusal', 'UDP fail-over', 'bpf_link', 'BTF', 'cgroup v2', 'bpf_sk_assign', 'flow recorder (cgroup_skb)'];

const wanted = wantedKernels(process.env);

test.before(async () => {
  await buildTestBinaries();
});

for (const k of ALL) {
  const name = `i9k-k${k.replace('.', '')}`;
  const run = wanted.includes(k) ? test : test.skip;
  run(`kernel ${k}: datapath and ingress (redirect ebpf) integration tests pass in a guest; doctor names what the kernel lacks`, async (t) => {
    await vmDown(name);
    t.teardown(async () => {
      if (!t.passed) await vmLogs(name).catch(() => undefined);
      await vmDown(name);
    });
    const t0 = Date.now();
    const secs = () => Math.round((Date.now() - t0) / 1000);
    const upLine = await vmUp(name, { kernel: k });
    t.log(upLine);
    const release = (await vmOk(name, 'uname -r')).trim();
    t.true(release.startsWith(`${k}.`), `guest runs ${release}`);
    t.log(`${release}: ${(await vmOk(name, 'stat -fc %T /sys/fs/cgroup; cat /proc/1/comm; docker version --format {{.Server.Version}}')).trim().split('\n').join(', ')}`);
    await vmOk(name, `${WRITABLE_CHECKOUT} && cd /root/berth && ${ENSURE_TEST_IMAGE} >/dev/null`, 600000);
    const tUp = secs();

    // berth doctor: what it reports for this kernel.
    const checks = await vmJson<{ name: string; level: string; detail: string }[]>(name, 'node /root/berth/dist/berth.js doctor --json || true', 300000);
    const check = (n: string) => checks.find((c) => c.name === n);
    t.log(checks.filter((c) => KERNEL_CHECKS.includes(c.name)).map((c) => `${c.level} ${c.name}: ${c.detail}`).join('\n'));
    const degraded = [...(kernelAtLeast(5, 18, release) ? [] : ['connect refusal']), ...(kernelAtLeast(6, 5, release) ? [] : ['UDP fail-over'])];
    t.deepEqual(checks.filter((c) => c.level !== 'OK' && KERNEL_CHECKS.includes(c.name)).map((c) => c.name).sort(), degraded.sort(),
      `doctor warns about exactly what ${release} lacks and fails nothing`);
    t.is(checks.filter((c) => KERNEL_CHECKS.includes(c.name)).length, KERNEL_CHECKS.length - 1, 'every kernel check ran (bpf features is listed only when bpftool fails)');
    t.is(check('connect refusal')?.level, kernelAtLeast(5, 18, release) ? 'OK' : 'WARN', 'EPERM instead of ECONNREFUSED exactly before 5.18');
    t.is(check('UDP fail-over')?.level, kernelAtLeast(6, 5, release) ? 'OK' : 'WARN', 'no bpf_sock_destroy exactly before 6.5');
    t.is(check('netns cookie option')?.level, 'OK');
    t.regex(check('netns cookie option')?.detail ?? '', kernelAtLeast(5, 14, release) ? /available/ : /sock_create/, 'SO_NETNS_COOKIE missing exactly before 5.14, and replaced');
    const tDoctor = secs();

    // Under full emulation berthd and Envoy start 10-50x slower than on the host: stretch the
    // tests' waits for them (test/helpers/time.ts); with KVM the host's bounds hold.
    const scale = /accel tcg/.test(upLine) ? 10 : 1;
    fs.mkdirSync(LOG_DIR, { recursive: true });
    const log = fs.createWriteStream(path.join(LOG_DIR, `${name}-ava.txt`));
    for (const r of MATRIX_RUNS.filter((m) => m.kernels.includes(k))) {
      const t1 = secs();
      const match = [...r.match, ...HOST_ONLY.map((m) => `!${m}`)].map((m) => `--match='${m}'`).join(' ');
      const tests = await vmSh(name, `cd /root/berth && BERTH_TEST_TIME_SCALE=${scale} node node_modules/ava/entrypoints/cli.mjs --no-worker-threads --serial --concurrency=1 --timeout=15m ${match} ${r.files.join(' ')} 2>&1`, 45 * 60000);
      log.write(tests.stdout + tests.stderr);
      const summary = tests.stdout.split('\n').filter((l) => /tests? (passed|failed)|known failure|skipped|✘/.test(l)).join(' ');
      t.log(`${release} ${r.files.map((f) => path.basename(f)).join(' ')} ${r.match.join(' ')}: ${summary.trim()} (${secs() - t1} s)`);
      t.is(tests.code, 0, tests.stdout.slice(-6000));
      t.regex(tests.stdout, /\d+ tests? passed/);
      t.notRegex(tests.stdout, /\d+ tests? failed|✘/);
    }
    log.end();
    t.log(`${release}: up + test image ${tUp} s, doctor ${tDoctor - tUp} s, total ${secs()} s`);
  });
}
