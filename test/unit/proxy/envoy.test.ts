import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bootstrap, envoyPaths, parseEnvoyLine, resolveBinary, EnvoySupervisor, XDS_CLUSTER } from '../../../src/proxy/envoy';
import { silentLogger } from '../../../src/util/log';

/* eslint-disable @typescript-eslint/no-explicit-any */
test('bootstrap: ADS over the unix socket with HTTP/2, admin on a 0600 unix socket, no TCP port', (t) => {
  const p = envoyPaths('/run/berth');
  const b = bootstrap('berth-host', p) as any;
  t.is(b.node.id, 'berth-host');
  t.deepEqual(b.admin.address, { pipe: { path: '/run/berth/envoy-admin.sock', mode: 0o600 } });
  t.is(b.dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name, XDS_CLUSTER);
  t.deepEqual(b.dynamic_resources.cds_config, { ads: {}, resource_api_version: 'V3' });
  t.deepEqual(b.dynamic_resources.lds_config, { ads: {}, resource_api_version: 'V3' });
  const c = b.static_resources.clusters[0];
  t.deepEqual(c.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address, { pipe: { path: '/run/berth/xds.sock' } });
  t.deepEqual(c.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'].explicit_http_config, { http2_protocol_options: {} });
  t.notRegex(JSON.stringify(b), /socket_address|port_value/, 'no TCP address anywhere');
});

test('Envoy log lines are parsed back into level, logger and message', (t) => {
  t.deepEqual(parseEnvoyLine('[warning][config] gRPC config stream closed'), { level: 'warn', logger: 'config', msg: 'gRPC config stream closed' });
  t.deepEqual(parseEnvoyLine('[critical][main] error initializing config'), { level: 'fatal', logger: 'main', msg: 'error initializing config' });
  t.deepEqual(parseEnvoyLine('something else'), { level: 'info', logger: null, msg: 'something else' });
});

test('resolveBinary: PATH lookup for a bare name, a path as is, null when absent', (t) => {
  t.is(resolveBinary('sh'), fs.existsSync('/usr/bin/sh') ? '/usr/bin/sh' : '/bin/sh');
  t.is(resolveBinary('/bin/sh'), '/bin/sh');
  t.is(resolveBinary('no-such-envoy-binary-xyz'), null);
  t.is(resolveBinary('/nonexistent/envoy'), null);
});

test('a missing binary gives state missing, and start() can be retried', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bt-px-env-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const s = new EnvoySupervisor({ envoyPath: path.join(dir, 'envoy'), runDir: dir, logger: silentLogger() });
  await s.start();
  t.is(s.st.state, 'missing');
  t.is(s.st.pid, null);
  // A "binary" that is there but does not run as Envoy: still missing, no child left behind.
  fs.writeFileSync(path.join(dir, 'envoy'), '#!/bin/sh\nexit 1\n', { mode: 0o755 });
  await s.start();
  t.is(s.st.state, 'missing');
  await s.stop();
  t.is(s.st.state, 'missing');
});

test('an Envoy that keeps dying is restarted with capped exponential backoff, not in a busy loop', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bt-px-env-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const starts = path.join(dir, 'starts');
  // A stand-in that answers --version like Envoy, and otherwise records its start and dies.
  fs.writeFileSync(path.join(dir, 'envoy'), `#!/bin/sh
if [ "$1" = "--version" ]; then echo "envoy  version: abc/1.40.0/Clean/RELEASE/BoringSSL"; exit 0; fi
date +%s%N >> ${starts}
echo "[error][main] pretend failure" >&2
exit 1
`, { mode: 0o755 });
  const s = new EnvoySupervisor({ envoyPath: path.join(dir, 'envoy'), runDir: dir, logger: silentLogger(), backoff: { initialMs: 40, maxMs: 160 } });
  t.teardown(() => s.stop());
  await s.start();
  t.is(s.st.version, '1.40.0');
  // Poll (bounded) until six starts were recorded.
  const read = () => (fs.existsSync(starts) ? fs.readFileSync(starts, 'utf8').trim().split('\n').map((x) => Number(BigInt(x) / 1000000n)) : []);
  for (let i = 0; i < 200 && read().length < 6; i++) await new Promise((r) => setTimeout(r, 50));
  const at = read();
  t.true(at.length >= 6, `${at.length} starts`);
  // Gaps are at least the backoff: 40, 80, 160, 160, ... (timers never fire early).
  const want = [40, 80, 160, 160, 160];
  const gaps = at.slice(1, 6).map((x, i) => x - at[i]);
  for (let i = 0; i < 5; i++) t.true(gaps[i] >= want[i] - 5, `gap ${i}: ${gaps[i]} ms >= ${want[i]} ms`);
  // ...and capped: the last three are 160 ms each (480 ms plus three starts of a shell script),
  // where doubling without the cap would wait 160 + 320 + 640 = 1120 ms.
  const last3 = gaps[2] + gaps[3] + gaps[4];
  t.true(last3 < 800, `gaps ${gaps.join(', ')} ms: the last three add up to ${last3} ms, more than capped backoff allows`);
  t.true(s.st.restarts >= 5);
  await s.stop();
  const n = read().length;
  await new Promise((r) => setTimeout(r, 400));
  t.is(read().length, n, 'no restart after stop()');
  t.is(s.st.state, 'stopped');
});
