/**
 * A bad flag, config key or value stops the real berthd at start-up: exit 2, one line naming
 * the flag or key, and nothing touched (no pin dir, no runtime dir created).
 */
import test from 'ava';
import { hostAsBefore } from '../helpers/cleanup';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DAEMON } from '../helpers/berthd';
import { run } from '../../src/util/exec';

const NAME = `bt-startup-${process.pid}`;
const dirs = ['--run-dir', `/run/${NAME}`, '--state-dir', `/var/lib/${NAME}`, '--bpf-pin-dir', `/sys/fs/bpf/${NAME}`];

async function berthd(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stderr: string }> {
  const r = await run('env', [...Object.entries(env).map(([k, v]) => `${k}=${v}`), process.execPath, DAEMON, ...dirs, ...args], { timeoutMs: 20000 });
  return { code: r.code, stderr: r.stderr.trim() };
}

test.afterEach.always(() => {
  for (const d of [`/run/${NAME}`, `/var/lib/${NAME}`, `/sys/fs/bpf/${NAME}`]) fs.rmSync(d, { recursive: true, force: true });
});

const cases: [string, string[], NodeJS.ProcessEnv, RegExp][] = [
  ['unknown flag', ['--servce-cidr', '10.96.0.0/16'], {}, /^berthd: unknown flag --servce-cidr \(known: .*--service-cidr/],
  ['flag without a value', ['--redirect'], {}, /^berthd: flag --redirect needs a value$/],
  ['bad flag value', ['--redirect', 'tproxy'], {}, /^berthd: flag --redirect: invalid redirect "tproxy": must be .auto., .ebpf. or .iptables.$/],
  ['bad range', ['--service-cidr', '10.96.0.0/33'], {}, /invalid serviceCidr "10\.96\.0\.0\/33"/],
  ['bad env value', [], { BERTH_PROXY_PORTS: '16000-15000' }, /BERTH_PROXY_PORTS: invalid proxyPorts "16000-15000"/],
];
for (const [what, args, env, re] of cases) {
  test(`${what}: exit 2 with a message naming it, nothing created`, async (t) => {
    const r = await berthd(args, env);
    t.is(r.code, 2, r.stderr);
    t.regex(r.stderr, re);
    t.is(r.stderr.split('\n').length, 1, 'one line');
    t.false(fs.existsSync(`/sys/fs/bpf/${NAME}`));
    t.false(fs.existsSync(`/run/${NAME}`));
  });
}

test('unknown key in the config file: exit 2 naming file and key', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-cfg-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'config.yaml');
  fs.writeFileSync(file, 'serviceCidr: 10.96.0.0/16\nredirekt: ebpf\n');
  const r = await berthd(['--config', file]);
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, new RegExp(`^berthd: config file ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: unknown key "redirekt"`));
});

// Every integration file ends with the host-as-before check.
hostAsBefore(test);
