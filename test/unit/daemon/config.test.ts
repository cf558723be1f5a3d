import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, ConfigError, kebab, envName, CONFIG_KEYS, usage } from '../../../src/daemon/config';

/** Temporary directories of tmpFile(), removed after the file's tests (they used to pile up in /tmp). */
const dirs: string[] = [];
test.after.always(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function tmpFile(content: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-cfg-'));
  dirs.push(dir);
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
  ['unknown flag without a value is unknown, not valueless', ['--bogus'], {}, /unknown flag --bogus/],
  ['--config without a value', ['--config'], {}, /--config needs a value/],
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

// ----- cluster keys (issue 12) -----

test('cluster keys: off by default (single host), hostname as nodeName, prefix /berth', (t) => {
  const { config } = loadConfig([], { BERTH_CONFIG: tmpFile('') });
  t.deepEqual(config.etcdEndpoints, []);
  t.is(config.etcdCaFile, null);
  t.is(config.etcdCertFile, null);
  t.is(config.etcdKeyFile, null);
  t.is(config.etcdPrefix, '/berth');
  t.is(config.etcdLeaseTtl, 5);
  t.is(config.nodeName, os.hostname().slice(0, 63));
  t.is(config.nodeAddress, null);
});

test('cluster keys: endpoints from flag, env and a YAML list; TLS files; prefix trailing slash', (t) => {
  const pem = tmpFile('-----BEGIN CERTIFICATE-----\n');
  const f = tmpFile(`etcdEndpoints:\n  - https://10.0.0.1:2379\n  - https://10.0.0.2:2379\netcdCaFile: ${pem}\netcdCertFile: ${pem}\netcdKeyFile: ${pem}\n`);
  const a = loadConfig(['--config', f, '--etcd-prefix', '/prod/berth/', '--node-name', 'host-1', '--node-address', '10.0.0.9'], {});
  t.deepEqual(a.config.etcdEndpoints, ['https://10.0.0.1:2379', 'https://10.0.0.2:2379']);
  t.is(a.config.etcdCaFile, pem);
  t.is(a.config.etcdPrefix, '/prod/berth');
  t.is(loadConfig(['--etcd-lease-ttl', '30'], {}).config.etcdLeaseTtl, 30);
  t.is(loadConfig([], { BERTH_ETCD_LEASE_TTL: '15' }).config.etcdLeaseTtl, 15);
  t.is(a.config.nodeName, 'host-1');
  t.is(a.config.nodeAddress, '10.0.0.9');
  t.is(a.sources.etcdEndpoints, 'file');
  const b = loadConfig([], { BERTH_CONFIG: tmpFile(''), BERTH_ETCD_ENDPOINTS: '127.0.0.1:2379, http://[::1]:2379', BERTH_NODE_ADDRESS: 'auto' });
  t.deepEqual(b.config.etcdEndpoints, ['http://127.0.0.1:2379', 'http://[::1]:2379']);
  t.is(b.config.nodeAddress, null);
  t.deepEqual(loadConfig(['--etcd-endpoints', 'off'], { BERTH_CONFIG: tmpFile('') }).config.etcdEndpoints, []);
});

const pemFile = tmpFile('x');
const badCluster: [string, string[], RegExp][] = [
  ['endpoint without port', ['--etcd-endpoints', 'http://10.0.0.1'], /flag --etcd-endpoints: invalid etcdEndpoints .*has no port/],
  ['endpoint with path', ['--etcd-endpoints', 'http://10.0.0.1:2379/v3'], /invalid etcdEndpoints .*scheme:\/\/host:port only/],
  ['endpoint scheme', ['--etcd-endpoints', 'unix://x:1'], /invalid etcdEndpoints .*scheme must be http or https/],
  ['mixed schemes', ['--etcd-endpoints', 'http://a:1,https://b:2'], /same scheme/],
  ['empty list', ['--etcd-endpoints', ' , '], /at least one endpoint/],
  ['unreadable CA', ['--etcd-endpoints', 'https://a:1', '--etcd-ca-file', '/nonexistent/ca.pem'], /flag --etcd-ca-file: invalid etcdCaFile .*ENOENT/],
  ['relative cert', ['--etcd-cert-file', 'c.pem'], /invalid etcdCertFile .*absolute path/],
  ['cert without key', ['--etcd-endpoints', 'https://a:1', '--etcd-cert-file', pemFile], /flag --etcd-cert-file: etcdCertFile needs etcdKeyFile/],
  ['key without cert', ['--etcd-endpoints', 'https://a:1', '--etcd-key-file', pemFile], /etcdKeyFile needs etcdCertFile/],
  ['TLS without endpoints', ['--etcd-ca-file', pemFile], /etcdCaFile is set but etcdEndpoints is off/],
  ['TLS over http', ['--etcd-endpoints', 'http://a:1', '--etcd-ca-file', pemFile], /use https:\/\/ endpoints/],
  ['prefix not absolute', ['--etcd-prefix', 'berth'], /invalid etcdPrefix/],
  ['prefix with space', ['--etcd-prefix', '/be rth'], /invalid etcdPrefix/],
  ['prefix root only', ['--etcd-prefix', '/'], /invalid etcdPrefix/],
  ['lease TTL below 2 s', ['--etcd-lease-ttl', '1'], /flag --etcd-lease-ttl: invalid etcdLeaseTtl "1".*between 2 and 600/],
  ['lease TTL not whole', ['--etcd-lease-ttl', '7.5'], /invalid etcdLeaseTtl "7.5"/],
  ['lease TTL not a number', ['--etcd-lease-ttl', 'long'], /invalid etcdLeaseTtl "long"/],
  ['lease TTL above 600 s', ['--etcd-lease-ttl', '601'], /invalid etcdLeaseTtl/],
  ['node name with slash', ['--node-name', 'a/b'], /flag --node-name: invalid nodeName/],
  ['node name too long', ['--node-name', 'a'.repeat(64)], /invalid nodeName/],
  ['node address not an IP', ['--node-address', 'host-1'], /flag --node-address: invalid nodeAddress "host-1"/],
];
for (const [name, argv, re] of badCluster) {
  test(`rejects cluster key: ${name}`, (t) => {
    const e = t.throws(() => loadConfig(argv, { BERTH_CONFIG: tmpFile('') }), { instanceOf: ConfigError });
    t.regex(e!.message, re);
  });
}
