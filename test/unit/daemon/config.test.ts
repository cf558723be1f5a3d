import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, ConfigError, kebab, envName, CONFIG_KEYS, usage } from '../../../src/daemon/config';

function tmpFile(content: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-cfg-'));
  const f = path.join(dir, 'config.yaml');
  fs.writeFileSync(f, content);
  return f;
}

test('names: kebab flags and BERTH_ env vars', (t) => {
  t.is(kebab('serviceCidr6'), 'service-cidr6');
  t.is(kebab('envoyPath'), 'envoy-path');
  t.is(envName('serviceCidr6'), 'BERTH_SERVICE_CIDR6');
  t.is(envName('bpfPinDir'), 'BERTH_BPF_PIN_DIR');
  for (const k of ['serviceCidr', 'serviceCidr6', 'cgroupRoot', 'redirect', 'envoyPath', 'proxyPorts', 'hostProc', 'dockerHost', 'logLevel', 'crossNetwork']) {
    t.true(CONFIG_KEYS.includes(k as never), `SPEC key ${k}`);
  }
  t.regex(usage(), /--service-cidr6/);
});

test('defaults match SPEC when nothing is given', (t) => {
  const f = tmpFile('');
  const { config, sources } = loadConfig(['--config', f], {});
  t.is(config.serviceCidr, '10.96.0.0/16');
  t.is(config.serviceCidr6, 'fd00:96::/112');
  t.is(config.cgroupRoot, 'auto');
  t.is(config.redirect, 'auto');
  t.is(config.envoyPath, 'envoy');
  t.deepEqual(config.proxyPorts, { from: 15000, to: 15999 });
  t.is(config.hostProc, '/proc');
  t.is(config.logLevel, 'info');
  t.is(config.metricsAddress, null);
  t.is(config.reconcileInterval, 5);
  t.is(sources.serviceCidr, 'default');
});

test('precedence: flag > env > file > default', (t) => {
  const f = tmpFile('logLevel: warn\nenvoyPath: /file/envoy\nredirect: iptables\n');
  const { config, sources } = loadConfig(['--config', f, '--log-level', 'debug'], { BERTH_LOG_LEVEL: 'error', BERTH_ENVOY_PATH: '/env/envoy' });
  t.is(config.logLevel, 'debug');
  t.is(sources.logLevel, 'flag');
  t.is(config.envoyPath, '/env/envoy');
  t.is(sources.envoyPath, 'env');
  t.is(config.redirect, 'iptables');
  t.is(sources.redirect, 'file');
});

test('reconcileInterval: fractions of a second from a flag, env or file', (t) => {
  t.is(loadConfig(['--reconcile-interval', '0.2'], { BERTH_CONFIG: tmpFile('') }).config.reconcileInterval, 0.2);
  t.is(loadConfig([], { BERTH_CONFIG: tmpFile(''), BERTH_RECONCILE_INTERVAL: '30' }).config.reconcileInterval, 30);
  t.is(loadConfig([], { BERTH_CONFIG: tmpFile('reconcileInterval: 1.5\n') }).config.reconcileInterval, 1.5);
});

test('--key=value form and BERTH_CONFIG', (t) => {
  const f = tmpFile('proxyPorts: 20000-20010\n');
  const { config } = loadConfig(['--redirect=ebpf'], { BERTH_CONFIG: f });
  t.is(config.redirect, 'ebpf');
  t.deepEqual(config.proxyPorts, { from: 20000, to: 20010 });
});

const bad: [string, string[], NodeJS.ProcessEnv, RegExp][] = [
  ['unknown flag names the flag', ['--service-cdir', '10.0.0.0/8'], {}, /unknown flag --service-cdir/],
  ['flag without value', ['--redirect'], {}, /--redirect needs a value/],
  ['bad redirect names flag and key', ['--redirect', 'tproxy'], {}, /flag --redirect: invalid redirect "tproxy"/],
  ['unknown crossNetwork names flag and key', ['--cross-network', 'deny'], {}, /flag --cross-network: invalid crossNetwork "deny".*'allow' or 'docker'/],
  ['unknown crossNetwork from env', [], { BERTH_CROSS_NETWORK: 'open' }, /environment variable BERTH_CROSS_NETWORK: invalid crossNetwork "open"/],
  ['bad CIDR', ['--service-cidr', '10.96.0.0'], {}, /flag --service-cidr: invalid serviceCidr/],
  ['v6 range given as v4', ['--service-cidr6', '10.0.0.0/16'], {}, /invalid serviceCidr6/],
  ['range too large', ['--service-cidr', '10.0.0.0/7'], {}, /host bits/],
  ['bad port range', ['--proxy-ports', '16000-15000'], {}, /invalid proxyPorts.*below its start/],
  ['port out of range', ['--proxy-ports', '0-10'], {}, /outside 1-65535/],
  ['bad env names the variable', [], { BERTH_LOG_LEVEL: 'loud' }, /environment variable BERTH_LOG_LEVEL: invalid logLevel "loud"/],
  ['bad metrics address', ['--metrics-address', 'localhost'], {}, /invalid metricsAddress/],
  ['reconcile interval too short', ['--reconcile-interval', '0.01'], {}, /flag --reconcile-interval: invalid reconcileInterval "0.01".*between 0.1 and 3600/],
  ['reconcile interval not a number', ['--reconcile-interval', 'often'], {}, /invalid reconcileInterval "often"/],
  ['relative hostProc', ['--host-proc', 'proc'], {}, /absolute path/],
  ['stray argument', ['serve'], {}, /unexpected argument "serve"/],
  ['missing explicit file', ['--config', '/nonexistent/x.yaml'], {}, /does not exist/],
];
for (const [name, argv, env, re] of bad) {
  test(`rejects: ${name}`, (t) => {
    const e = t.throws(() => loadConfig(argv, { BERTH_CONFIG: tmpFile(''), ...env }), { instanceOf: ConfigError });
    t.regex(e!.message, re);
  });
}

test('file errors name the file and key', (t) => {
  const unknown = tmpFile('serviceCIDR: 10.96.0.0/16\n');
  t.throws(() => loadConfig(['--config', unknown], {}), { message: /unknown key "serviceCIDR"/ });
  const badVal = tmpFile('redirect: 7\n');
  t.throws(() => loadConfig(['--config', badVal], {}), { message: new RegExp(`config file ${badVal}, key redirect: invalid redirect 7`) });
  const notMap = tmpFile('- a\n- b\n');
  t.throws(() => loadConfig(['--config', notMap], {}), { message: /must be a mapping/ });
  const broken = tmpFile('redirect: [\n');
  t.throws(() => loadConfig(['--config', broken], {}), { instanceOf: ConfigError });
});

test('crossNetwork: both values, from file and flag; a wrong case is no value', (t) => {
  t.is(loadConfig(['--config', tmpFile('crossNetwork: docker\n')], {}).config.crossNetwork, 'docker');
  t.is(loadConfig(['--cross-network=allow'], { BERTH_CONFIG: tmpFile('crossNetwork: docker\n') }).config.crossNetwork, 'allow');
  t.throws(() => loadConfig(['--config', tmpFile('crossNetwork: Allow\n')], {}), { message: /key crossNetwork: invalid crossNetwork "Allow"/ });
});

test('unknown BERTH_ env vars are ignored (shared environment)', (t) => {
  const { config } = loadConfig([], { BERTH_CONFIG: tmpFile(''), BERTH_SOCKET: '/x', BERTH_TEST_FOO: '1' });
  t.is(config.redirect, 'auto');
});

test('DNS keys: defaults, and bad values stop start-up naming the key and where it came from', (t) => {
  const f = tmpFile('');
  const { config } = loadConfig(['--config', f], {});
  t.is(config.dnsDomain, 'berth');
  t.is(config.dnsVip, 'auto');
  t.is(config.dnsVip6, 'auto');
  t.is(config.dnsPort, 10053);
  t.is(config.dnsUpstreams, 'auto');
  t.is(loadConfig(['--config', f, '--dns-domain', 'Svc.Local.'], {}).config.dnsDomain, 'svc.local');
  t.is(loadConfig(['--config', f, '--dns-port', 'off'], {}).config.dnsPort, null);
  t.is(loadConfig(['--config', f, '--dns-vip6', 'off'], {}).config.dnsVip6, 'off');
  t.is(loadConfig(['--config', f, '--dns-upstreams', '127.0.0.1:5300,[::1]:53,1.1.1.1'], {}).config.dnsUpstreams, '127.0.0.1:5300,[::1]:53,1.1.1.1');
  const bad: [string[], NodeJS.ProcessEnv, RegExp][] = [
    [['--dns-domain', 'bad_name'], {}, /flag --dns-domain: invalid dnsDomain/],
    [['--dns-domain', '-x.berth'], {}, /invalid dnsDomain/],
    [['--dns-vip', 'nope'], {}, /flag --dns-vip: invalid dnsVip/],
    [['--dns-vip', '10.97.0.10'], {}, /flag --dns-vip: invalid dnsVip: 10\.97\.0\.10 is outside the service range 10\.96\.0\.0\/16/],
    [[], { BERTH_DNS_VIP6: 'fd00:1::a' }, /environment variable BERTH_DNS_VIP6: invalid dnsVip6: .*outside/],
    [['--service-cidr', '10.50.0.0/30'], {}, /default of dnsVip: invalid dnsVip: .*too small/],
    [['--dns-port', '0'], {}, /invalid dnsPort/],
    [['--dns-upstreams', '1.2.3.4:99999'], {}, /invalid dnsUpstreams/],
    [['--dns-upstreams', 'resolver.example'], {}, /invalid dnsUpstreams/],
  ];
  for (const [argv, env, re] of bad) {
    const e = t.throws(() => loadConfig(['--config', f, ...argv], env), { instanceOf: ConfigError }, argv.join(' '));
    t.regex(e?.message ?? '', re, argv.join(' '));
  }
});
