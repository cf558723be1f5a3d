/**
 * Issue 10's smaller pure parts: label decoding of the new keys (good and bad values), the
 * certificate checks (openssl makes real pairs), Envoy stats re-export, the file follower, the
 * restart detection, Envoy's identity.
 */
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { decodeLabels, parseDuration } from '../../../src/model/labels';
import { checkPair, loadCerts } from '../../../src/proxy/tls';
import { ingressMetrics } from '../../../src/proxy/stats';
import { FileFollower } from '../../../src/proxy/follow';
import { ownUnit, restartJobListed } from '../../../src/daemon/restart';
import { isOurEnvoy, processStartTime, readIdentity } from '../../../src/proxy/envoy';

const base = { 'berth.service': 'shop', 'berth.ports': '8080', 'berth.http.edge.path': '/api' };
const decode = (labels: Record<string, string>) => decodeLabels({ name: 'c', labels: { ...base, ...labels }, exposedPorts: [] });

test('new http labels decode into the route', (t) => {
  const r = decode({
    'berth.http.edge.protocol': 'H2C', 'berth.http.edge.stripPrefix': 'yes', 'berth.http.edge.timeout': '1m30s',
    'berth.http.edge.retries': '3', 'berth.http.edge.tls': 'true', 'berth.http.edge.tlsListen': '8443', 'berth.http.edge.redirectHttps': 'on',
  });
  t.deepEqual(r.errors, []);
  t.like(r.spec!.routes[0], { protocol: 'h2c', stripPrefix: true, timeoutMs: 90000, retries: 3, tls: true, tlsListen: 8443, redirectHttps: true });
});

// [labels, offending label, error code]: the route is dropped, the container still backs its service.
const BAD: [Record<string, string>, string, string][] = [
  [{ 'berth.http.edge.protocol': 'grpc' }, 'berth.http.edge.protocol', 'BERTH_BAD_HTTP_PROTOCOL'],
  [{ 'berth.http.edge.tls': 'maybe' }, 'berth.http.edge.tls', 'BERTH_BAD_BOOL'],
  [{ 'berth.http.edge.stripPrefix': '' }, 'berth.http.edge.stripPrefix', 'BERTH_BAD_BOOL'],
  [{ 'berth.http.edge.redirectHttps': 'true' }, 'berth.http.edge.redirectHttps', 'BERTH_REDIRECT_WITHOUT_TLS'],
  [{ 'berth.http.edge.timeout': '30' }, 'berth.http.edge.timeout', 'BERTH_BAD_TIMEOUT'],
  [{ 'berth.http.edge.timeout': '-1s' }, 'berth.http.edge.timeout', 'BERTH_BAD_TIMEOUT'],
  [{ 'berth.http.edge.timeout': '25h' }, 'berth.http.edge.timeout', 'BERTH_BAD_TIMEOUT'],
  [{ 'berth.http.edge.retries': '11' }, 'berth.http.edge.retries', 'BERTH_BAD_RETRIES'],
  [{ 'berth.http.edge.retries': 'two' }, 'berth.http.edge.retries', 'BERTH_BAD_RETRIES'],
  [{ 'berth.http.edge.tlsListen': '70000' }, 'berth.http.edge.tlsListen', 'BERTH_BAD_LISTEN_PORT'],
];
for (const [labels, label, code] of BAD) {
  test(`bad ${label}=${JSON.stringify(Object.values(labels)[0])}: route dropped with ${code}`, (t) => {
    const r = decode(labels);
    t.deepEqual(r.errors.map((e) => [e.container, e.label, e.code]), [['c', label, code]]);
    t.is(r.spec!.service, 'shop', 'the container still backs its service');
    t.deepEqual(r.spec!.routes, []);
  });
}

test('durations', (t) => {
  const cases: [string, number | null][] = [['0', 0], ['250ms', 250], ['30s', 30000], ['1.5s', 1500], ['5m', 300000], ['1h', 3600000], ['24h', 86400000], ['1m30s', 90000], ['', null], ['s', null], ['1d', null], ['24h1s', null]];
  for (const [v, ms] of cases) t.is(parseDuration(v), ms, v);
});

function pair(dir: string, host: string, san = host, days = 2): { cert: string; key: string } {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', path.join(dir, `${host}.key`),
    '-out', path.join(dir, `${host}.crt`), '-days', String(days), '-subj', `/CN=${san}`, '-addext', `subjectAltName=DNS:${san}`], { stdio: 'ignore' });
  return { cert: fs.readFileSync(path.join(dir, `${host}.crt`), 'utf8'), key: fs.readFileSync(path.join(dir, `${host}.key`), 'utf8') };
}

test('certificate checks: good, mismatched, wrong name, expired, not PEM, missing and unreadable files', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bt-tls-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const a = pair(dir, 'a.test');
  const b = pair(dir, 'b.test');
  t.deepEqual(checkPair('a.test', a.cert, a.key), a);
  t.regex((checkPair('a.test', a.cert, b.key) as { error: string }).error, /does not belong to the certificate/);
  t.regex((checkPair('c.test', a.cert, a.key) as { error: string }).error, /does not name c\.test/);
  t.regex((checkPair('a.test', a.cert, a.key, new Date(Date.now() + 5 * 86400000)) as { error: string }).error, /expired/);
  t.regex((checkPair('a.test', 'garbage', a.key) as { error: string }).error, /not PEM X\.509/);
  t.regex((checkPair('a.test', a.cert, 'garbage') as { error: string }).error, /not a PEM private key/);
  const w = pair(dir, '*.shop.test');
  t.deepEqual(checkPair('*.shop.test', w.cert, w.key), w, 'a wildcard host with a wildcard certificate');
  fs.chmodSync(path.join(dir, 'b.test.key'), 0o000);
  const loaded = loadCerts(dir, ['a.test', 'missing.test']);
  t.deepEqual(loaded.get('a.test'), a);
  t.regex((loaded.get('missing.test') as { error: string }).error, /certificate .*missing\.test\.crt does not exist/);
  fs.writeFileSync(path.join(dir, 'dir.test.crt'), a.cert);
  fs.mkdirSync(path.join(dir, 'dir.test.key'));
  t.regex((loadCerts(dir, ['dir.test']).get('dir.test') as { error: string }).error, /key .*dir\.test\.key is unreadable \(EISDIR\)/);
});

const ENVOY_STATS = `# TYPE envoy_http_downstream_rq_xx counter
envoy_http_downstream_rq_xx{envoy_response_code_class="2",envoy_http_conn_manager_prefix="ingress_edge"} 7
envoy_http_downstream_rq_xx{envoy_response_code_class="5",envoy_http_conn_manager_prefix="ingress_edge"} 1
envoy_http_downstream_rq_xx{envoy_response_code_class="2",envoy_http_conn_manager_prefix="admin"} 99
envoy_vhost_example_route_berth_r_0123456789ab_upstream_rq_xx{envoy_response_code_class="2",envoy_virtual_host="edge_shop"} 3
envoy_vhost_route_upstream_rq_xx{envoy_response_code_class="2",envoy_virtual_host="edge_default",envoy_route="berth_r_0123456789ab"} 2
envoy_vhost_route_upstream_rq_xx{envoy_response_code_class="2",envoy_virtual_host="edge_default",envoy_route="berth_r_ffffffffffff"} 5
envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix="ingress_edge",le="5"} 4
envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix="ingress_edge",le="+Inf"} 8
envoy_http_downstream_rq_time_sum{envoy_http_conn_manager_prefix="ingress_edge"} 41.5
envoy_http_downstream_rq_time_count{envoy_http_conn_manager_prefix="ingress_edge"} 8
envoy_vhost_route_upstream_rq_time_bucket{envoy_virtual_host="edge_default",envoy_route="berth_r_0123456789ab",le="+Inf"} 5
envoy_vhost_route_upstream_rq_time_count{envoy_virtual_host="edge_default",envoy_route="berth_r_0123456789ab"} 5
envoy_vhost_route_upstream_rq_time_sum{envoy_virtual_host="edge_default",envoy_route="berth_r_0123456789ab"} 10
`;

test('Envoy stats are re-exported under berth names; a route served in two vhosts is summed, unknown routes dropped', (t) => {
  const out = ingressMetrics(ENVOY_STATS, new Map([['berth_r_0123456789ab', { ingress: 'edge', route: '*/api' }]]));
  t.regex(out, /^berth_ingress_requests_total\{ingress="edge",code_class="2xx"\} 7$/m);
  t.regex(out, /^berth_ingress_requests_total\{ingress="edge",code_class="5xx"\} 1$/m);
  t.notRegex(out, /admin/);
  t.regex(out, /^berth_route_requests_total\{ingress="edge",route="\*\/api",code_class="2xx"\} 5$/m);
  t.notRegex(out, /ffffffff/);
  t.regex(out, /^berth_ingress_request_duration_ms_bucket\{ingress="edge",le="5"\} 4\nberth_ingress_request_duration_ms_bucket\{ingress="edge",le="\+Inf"\} 8$/m, 'buckets in order, +Inf last');
  t.regex(out, /^berth_ingress_request_duration_ms_sum\{ingress="edge"\} 41.5$/m);
  t.regex(out, /^berth_route_upstream_duration_ms_count\{ingress="edge",route="\*\/api"\} 5$/m);
  t.regex(out, /# TYPE berth_route_upstream_duration_ms histogram/);
  t.is(ingressMetrics('garbage line\n{}', new Map()).includes('garbage'), false);
});

test('the follower hands over whole lines, survives truncation, and truncates past maxBytes', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bt-follow-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const f = path.join(dir, 'log');
  fs.writeFileSync(f, 'old line\n');
  const got: string[] = [];
  const fl = new FileFollower(f, (l) => got.push(l), { fromEnd: true, maxBytes: 64 });
  fl.start();
  fs.appendFileSync(f, 'one\ntw');
  fl.poll();
  t.deepEqual(got, ['one'], 'old lines skipped, a partial line held back');
  fs.appendFileSync(f, 'o\n' + 'x'.repeat(80) + '\n');
  fl.poll();
  t.deepEqual(got, ['one', 'two', 'x'.repeat(80)]);
  t.is(fs.statSync(f).size, 0, 'truncated once read past maxBytes');
  fs.appendFileSync(f, 'after\n');
  fl.stop();
  t.deepEqual(got.slice(3), ['after'], 'the writer appends at the new end');
});

test('restart detection: own unit from /proc/self/cgroup, a restart job in systemctl list-jobs', (t) => {
  t.is(ownUnit('0::/system.slice/berthd.service\n'), 'berthd.service');
  t.is(ownUnit('12:pids:/system.slice/berthd.service/x\n0::/system.slice/berthd.service\n'), 'berthd.service');
  t.is(ownUnit('0::/user.slice/user-0.slice/session-1.scope\n'), null);
  const jobs = '4242 berthd.service restart running\n4243 docker.service start waiting\n';
  t.true(restartJobListed(jobs, 'berthd.service'));
  t.false(restartJobListed('4242 berthd.service stop running\n', 'berthd.service'), 'a stop is not a restart');
  t.false(restartJobListed(jobs, 'other.service'));
  t.false(restartJobListed('', 'berthd.service'));
});

test('Envoy identity: pid file forms, start time, and a recycled pid is not ours', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bt-ident-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const pf = path.join(dir, 'envoy.pid');
  fs.writeFileSync(pf, '1234\n');
  t.deepEqual(readIdentity(pf), { pid: 1234, startTime: '', bootstrap: '' }, 'an older berth wrote a bare pid');
  fs.writeFileSync(pf, JSON.stringify({ pid: process.pid, startTime: processStartTime(process.pid), bootstrap: 'h' }));
  const id = readIdentity(pf)!;
  t.is(id.pid, process.pid);
  t.regex(id.startTime, /^\d+$/);
  t.false(isOurEnvoy(id, '/run/berth/envoy.json'), 'this process does not run that bootstrap');
  t.false(isOurEnvoy({ ...id, startTime: '1' }, process.argv[1]), 'another start time: a recycled pid');
  t.true(isOurEnvoy(id, process.argv[1]), 'own cmdline names the "bootstrap" and the start time matches');
  fs.writeFileSync(pf, 'garbage');
  t.is(readIdentity(pf), null);
  t.is(processStartTime(0x3fffffff), null);
});
