/**
 * berthd on a host like the ones users run: a guest with systemd as PID 1, the unified cgroup v2
 * hierarchy at /sys/fs/cgroup and Docker with its default private cgroup namespaces (scripts/vm,
 * kernel 6.1). The unit is installed with scripts/install and run by systemd for real: READY=1,
 * STATUS=, restart, the watchdog, the sandbox, a reboot, and scripts/uninstall. Then seed 000:
 * berthd in a container with a private cgroup namespace.
 *
 * The tests share one guest and run in order (each builds on the state the previous one left).
 */
import test from 'ava';
import { buildTestBinaries } from '../helpers/images';
import { HOST_STATE, ENSURE_TEST_IMAGE, until, vmDown, vmJson, vmLogs, vmOk, vmSh, vmUp } from './vm';

const G = 'berth-sd';
const PROBE = '/berth/build/test-bin/berth-probe';
let image = '';
let stateBefore = '';
let vip = '';
let failed = false;

interface ServiceView { name: string; kind: string; vip: string; backends: { container: string }[] }
interface StatusView { ready: boolean; cgroupRoot: string; cgroupIsHostRoot: boolean; attached: string[]; redirect: string; envoy: { state: string; pid: number | null } }

/** The lines of berth-probe's JSON output that failed. */
function failures(out: string): string[] {
  return out.split('\n').filter((l) => l.startsWith('{') && !l.includes('"ok":true'));
}
function attempts(out: string): number {
  return out.split('\n').filter((l) => l.startsWith('{')).length;
}

/**
 * Guest shell: a client loop against VIP:80 in the background, bounded by count (2,000 probe
 * runs of 5 connects) and time (LIMIT s), stopped early by touching /tmp/loop.stop.
 */
function clientLoop(limit: number): string {
  return `rm -f /tmp/loop.stop /tmp/loop.out; (end=$((SECONDS+${limit})); n=0; while [ ! -e /tmp/loop.stop ] && [ $SECONDS -lt $end ] && [ $n -lt 2000 ]; do ${PROBE} tcp ${vip} 80 --send ping --count 5 --timeout-ms 3000; n=$((n+1)); done > /tmp/loop.out 2>&1) >/dev/null 2>&1 &`;
}
const STOP_LOOP = 'touch /tmp/loop.stop; for i in $(seq 100); do pgrep -f "berth-probe tcp" >/dev/null || break; sleep 0.2; done; sleep 1; cat /tmp/loop.out';

test.before(async () => {
  await buildTestBinaries(); // the guest runs the static helpers from the checkout
  await vmDown(G);
  const line = await vmUp(G, { kernel: '6.1' });
  console.log(line);
  image = (await vmOk(G, ENSURE_TEST_IMAGE, 600000)).trim().split('\n').pop() ?? '';
  stateBefore = await vmOk(G, HOST_STATE);
});

test.afterEach.always((t) => { if (!t.passed) failed = true; });

test.after.always(async () => {
  if (failed) await vmLogs(G).catch(() => undefined);
  await vmDown(G);
});

test.serial('the guest is an Ubuntu-like Docker host: systemd PID 1, unified cgroup v2, private cgroupns by default', async (t) => {
  const out = await vmOk(G, 'cat /proc/1/comm; stat -fc %T /sys/fs/cgroup; docker info --format "{{.CgroupVersion}} {{.ServerVersion}}"; docker run --rm ' + image + ' cat /proc/self/cgroup; uname -r');
  const [init, fs, dockerInfo, cg] = out.trim().split('\n');
  t.is(init, 'systemd');
  t.is(fs, 'cgroup2fs');
  t.regex(dockerInfo, /^2 /, 'Docker uses cgroup v2');
  t.is(cg, '0::/', 'a container sees its own cgroup as the root (private cgroup namespace)');
  console.log(`guest: ${out.trim().split('\n').pop()}, docker ${dockerInfo.split(' ')[1]}`);
});

test.serial('scripts/install + systemctl enable --now: active only after READY=1, STATUS shown, VIP answers from host and containers, host root attach', async (t) => {
  await vmOk(G, `docker rm -f web1 web2 cl shop >/dev/null 2>&1; for n in 1 2; do docker run -d --name web$n --label berth.service=web --label berth.ports=80:8080 ${image} berth-tcp-echo 8080 --tag web$n; done >/dev/null
    docker run -d --name cl ${image} sleep 3600 >/dev/null
    docker run -d --name shop --label berth.service=shop --label berth.ports=8080 --label berth.http.front.path=/ ${image} sh -c 'echo shop-ok > /www/index.html; exec httpd -f -p 8080 -h /www' >/dev/null`);
  const inst = await vmSh(G, 'bash /berth/scripts/install', 600000);
  t.is(inst.code, 0, inst.stderr);
  // enable --now returns once systemd saw READY=1; meanwhile sample the unit's state.
  const states = await vmOk(G, `(systemctl enable --now berthd >/tmp/enable.out 2>&1; echo $? > /tmp/enable.rc) &
    for i in $(seq 1200); do echo "$(systemctl show -p ActiveState --value berthd) $(systemctl show -p MainPID --value berthd)"; [ -f /tmp/enable.rc ] && break; sleep 0.1; done; cat /tmp/enable.rc`, 200000);
  const lines = states.trim().split('\n');
  t.is(lines.pop(), '0', 'systemctl enable --now succeeded');
  const firstActive = lines.findIndex((l) => l.startsWith('active '));
  t.true(firstActive > 0, `became active: ${lines.slice(-3).join(' | ')}`);
  t.true(lines.slice(0, firstActive).some((l) => /^activating [1-9]/.test(l)), 'berthd ran while the unit was still activating (waiting for READY=1)');
  // systemd logged "Started" only after berthd logged ready (it sent READY=1 right before).
  const journal = await vmOk(G, 'journalctl -u berthd -b --no-pager -o cat');
  const readyAt = journal.search(/"msg":"ready"/);
  const startedAt = journal.search(/Started berthd\.service|Started berth:/);
  t.true(readyAt >= 0 && startedAt > readyAt, `ready logged before systemd's Started line:\n${journal.slice(-1500)}`);

  const statusText = (await vmOk(G, 'systemctl show -p StatusText --value berthd')).trim();
  t.not(statusText, '', 'berthd sent a STATUS= line');
  t.true((await vmOk(G, 'systemctl status --no-pager berthd || true')).includes(`Status: "${statusText}"`), 'systemctl status shows it');
  console.log(`STATUS=${statusText}`);

  const st = await vmJson<StatusView>(G, 'berth status --json');
  t.true(st.ready);
  t.true(st.cgroupIsHostRoot, 'attached at the host root');
  t.is(st.cgroupRoot, '/sys/fs/cgroup', 'the unified hierarchy');
  t.true(st.attached.includes('connect4'));
  // The programs really sit on the root of the guest's hierarchy.
  t.regex(await vmOk(G, 'bpftool cgroup show /sys/fs/cgroup'), /connect4\s+.*berth/);

  await until('web service with two backends', async () => {
    const svcs = await vmJson<ServiceView[]>(G, 'berth services --json');
    const web = svcs.find((s) => s.name === 'web');
    vip = web?.vip ?? '';
    return (web?.backends.length ?? 0) === 2;
  }, 60000);
  const fromHost = await vmOk(G, `${PROBE} tcp ${vip} 80 --send ping --count 8 --timeout-ms 3000`);
  t.deepEqual(failures(fromHost), []);
  t.true(fromHost.includes('web1') && fromHost.includes('web2'), 'both backends answer the guest host');
  const fromCtr = await vmOk(G, `docker exec cl berth-probe tcp ${vip} 80 --send ping --count 8 --timeout-ms 3000`);
  t.deepEqual(failures(fromCtr), []);
  t.true(fromCtr.includes('web1') && fromCtr.includes('web2'), 'both backends answer a container (private cgroupns)');
});

test.serial('the sandbox: every feature works under the unit (attach, ingress redirect through Envoy, admin socket 0600); systemd-analyze security', async (t) => {
  const st = await vmJson<StatusView>(G, 'berth status --json');
  t.is(st.envoy.state, 'running', 'Envoy runs as berthd\'s child inside the sandbox');
  t.true(['ebpf', 'iptables'].includes(st.redirect));
  t.is((await vmOk(G, 'stat -c %a /run/berth/berth.sock')).trim(), '600');
  // The sandbox is really in force on the running process.
  const caps = await vmOk(G, 'grep CapBnd /proc/$(systemctl show -p MainPID --value berthd)/status');
  t.notRegex(caps, /0000003fffffffff|000001ffffffffff/, 'bounding set is reduced');
  t.regex(await vmOk(G, 'grep " / / " /proc/$(systemctl show -p MainPID --value berthd)/mountinfo'), / ro[, ]/, 'ProtectSystem=strict: / is read-only for berthd');
  // Ingress VIP → redirect (tc or TPROXY) → Envoy → backend, from the host and from a container.
  let ingress = '';
  await until('ingress front routed', async () => {
    const svcs = await vmJson<ServiceView[]>(G, 'berth services --json');
    ingress = svcs.find((s) => s.name === 'front' && s.kind === 'ingress')?.vip ?? '';
    if (!ingress) return false;
    return (await vmSh(G, `printf 'GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' | timeout 10 busybox nc ${ingress} 80`, 60000)).stdout.includes('shop-ok');
  }, 90000, 2000);
  const viaCtr = await vmOk(G, `docker exec cl sh -c "printf 'GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' | timeout 10 nc ${ingress} 80"`);
  t.true(viaCtr.includes('shop-ok'), `ingress from a container: ${viaCtr.slice(0, 300)}`);
  const sec = await vmOk(G, 'systemd-analyze security --no-pager berthd | tail -1');
  console.log(`systemd-analyze security berthd: ${sec.trim()}`);
  t.regex(sec, /Overall exposure level for berthd\.service: \d+\.\d/);
});

test.serial('systemctl restart berthd while a client loop connects to the VIP: 0 failed connects', async (t) => {
  const pid0 = (await vmOk(G, 'systemctl show -p MainPID --value berthd')).trim();
  const out = await vmOk(G, `${clientLoop(120)} sleep 2; systemctl restart berthd; sleep 2; ${STOP_LOOP}`, 240000);
  const pid1 = (await vmOk(G, 'systemctl show -p MainPID --value berthd')).trim();
  t.not(pid1, pid0, 'berthd was restarted');
  t.true(attempts(out) >= 20, `client loop ran (${attempts(out)} connects)`);
  t.deepEqual(failures(out), [], `${attempts(out)} connects, none failed`);
});

test.serial('watchdog: a frozen berthd is killed and restarted by systemd within 2×WatchdogSec; VIPs answer throughout; pins adopted', async (t) => {
  const wd = (await vmOk(G, 'systemctl show -p WatchdogUSec --value berthd')).trim();
  const progs0 = await vmOk(G, 'bpftool cgroup show /sys/fs/cgroup | grep berth | sort');
  const out = await vmOk(G, `${clientLoop(150)}
    pid=$(systemctl show -p MainPID --value berthd); t0=$(date +%s); kill -STOP $pid
    while kill -0 $pid 2>/dev/null && [ $(( $(date +%s) - t0 )) -lt 120 ]; do sleep 0.5; done
    echo "killed_after=$(( $(date +%s) - t0 ))"
    for i in $(seq 240); do p=$(systemctl show -p MainPID --value berthd); [ "$(systemctl is-active berthd)" = active ] && [ "$p" != "$pid" ] && [ "$p" != 0 ] && break; sleep 0.5; done
    echo "active_after=$(( $(date +%s) - t0 ))"; sleep 2
    ${STOP_LOOP}`, 300000);
  const killedAfter = Number(/killed_after=(\d+)/.exec(out)?.[1]);
  const wdSec = /^(\d+)s$/.test(wd) ? Number(wd.slice(0, -1)) : 20;
  t.true(killedAfter <= 2 * wdSec, `killed ${killedAfter} s after SIGSTOP (WatchdogSec=${wd})`);
  t.regex(await vmOk(G, 'journalctl -u berthd -b --no-pager -o cat | grep -i watchdog || true'), /[Ww]atchdog timeout/);
  t.is((await vmOk(G, 'systemctl is-active berthd')).trim(), 'active');
  t.true(attempts(out) >= 20, `client loop ran (${attempts(out)} connects)`);
  t.deepEqual(failures(out), [], `${attempts(out)} connects while berthd was frozen and restarted, none failed`);
  // The new berthd adopted the pinned programs (same program ids at the root), not re-attached.
  t.is(await vmOk(G, 'bpftool cgroup show /sys/fs/cgroup | grep berth | sort'), progs0);
  console.log(`watchdog: killed after ${killedAfter} s, ${out.match(/active_after=\d+/)?.[0]}`);
});

test.serial('reboot: berthd comes back by itself and rebuilds its pins; VIPs answer', async (t) => {
  await vmSh(G, 'systemctl reboot', 30000);
  // Wait for the guest to go away and come back with systemd running.
  await until('guest rebooted', async () => {
    const r = await vmSh(G, 'cat /proc/sys/kernel/random/boot_id; systemctl is-system-running --wait', 120000);
    return r.code === 0 && r.stdout.includes('running');
  }, 420000, 3000);
  t.is((await vmOk(G, 'systemctl is-active berthd')).trim(), 'active');
  t.true((await vmJson<StatusView>(G, 'berth status --json')).cgroupIsHostRoot);
  await until('web backends after reboot', async () => {
    const web = (await vmJson<ServiceView[]>(G, 'berth services --json')).find((s) => s.name === 'web');
    return web?.vip === vip && web.backends.length === 2;
  }, 120000, 2000);
  const out = await vmSh(G, `docker start web1 web2 cl >/dev/null; sleep 2; ${PROBE} tcp ${vip} 80 --send ping --count 8 --timeout-ms 3000; docker exec cl berth-probe tcp ${vip} 80 --send ping --count 4 --timeout-ms 3000`);
  t.is(out.code, 0, out.stdout + out.stderr);
  t.deepEqual(failures(out.stdout), []);
});

test.serial('scripts/uninstall: programs, rules, routes and files as before installation', async (t) => {
  await vmOk(G, 'docker rm -f web1 web2 cl shop >/dev/null 2>&1; true');
  const un = await vmSh(G, 'bash /berth/scripts/uninstall', 180000);
  t.is(un.code, 0, un.stderr);
  const after = await vmOk(G, HOST_STATE);
  t.is(after, stateBefore);
});
