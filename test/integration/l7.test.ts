/**
 * Issue 10 end to end, in both redirect modes, with the real berthd, Envoy and Docker: the HTTP
 * traffic a user moving from Traefik expects (HTTP/1.0, WebSocket, h2c, gRPC, HTTPS/h2 by SNI with
 * a CA made here by openssl, redirect to HTTPS, certificate rotation, strip-prefix, timeout and
 * retries seen from the backend, X-Forwarded-For, access log, metrics), a publish port freed
 * while berthd runs, and berthd restarts (kill -9, and exit-for-restart) with 0 failed requests.
 *
 * Clients run in a client container (so each request goes through the redirect under test) with
 * the host's curl and node bind-mounted; backends are test/helpers/l7-backend.ts likewise.
 */
import test from 'ava';
import { hostAsBefore } from '../helpers/cleanup';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { Berthd, REPO, sleep, waitFor } from '../helpers/berthd';
import { ensureTestImage, execInFull, removeTestContainers, runContainer } from '../helpers/docker';
import { createNetns, deleteNetns, type Netns } from '../helpers/netns';
import { httpGetInNetns } from '../helpers/http';
import { run } from '../../src/util/exec';

const SUITE = 'l7';
const HOST = 'shop.test';
const MISSING = 'nocert.test';
// The host's node and curl at /hostbin, their libraries where the loader looks (the image has no /lib).
const BINDS = ['/usr/bin:/hostbin:ro', '/usr/lib:/lib:ro', '/usr/lib64:/lib64:ro', `${REPO}:/berth:ro`];
const BACKEND = '/berth/dist/test/helpers/l7-backend.js';

async function openssl(args: string[], cwd: string): Promise<void> {
  const r = await run('sh', ['-c', 'cd "$0" && exec openssl "$@"', cwd, ...args]);
  if (r.code !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

/** A test CA (ca.pem, ca.key) in dir. */
async function makeCa(dir: string): Promise<void> {
  await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=berth test CA'], dir);
}

/** <tlsDir>/<host>.crt/.key signed by the CA, with the given serial; written by rename (atomic). */
async function makeLeaf(dir: string, tlsDir: string, host: string, serial: number): Promise<void> {
  await openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${host}.key.new`, '-out', `${host}.csr`, '-subj', `/CN=${host}`], dir);
  fs.writeFileSync(path.join(dir, 'ext.cnf'), `subjectAltName=DNS:${host}\n`);
  await openssl(['x509', '-req', '-in', `${host}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', String(serial), '-days', '2', '-extfile', 'ext.cnf', '-out', `${host}.crt.new`], dir);
  fs.copyFileSync(path.join(dir, `${host}.key.new`), path.join(tlsDir, `${host}.key.new`));
  fs.copyFileSync(path.join(dir, `${host}.crt.new`), path.join(tlsDir, `${host}.crt.new`));
  fs.renameSync(path.join(tlsDir, `${host}.key.new`), path.join(tlsDir, `${host}.key`));
  fs.renameSync(path.join(tlsDir, `${host}.crt.new`), path.join(tlsDir, `${host}.crt`));
}

/** Serial number of the certificate served for `servername` at addr:port (host client). */
function servedSerial(addr: string, port: number, servername: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: addr, port, servername, ca, timeout: 3000 }, () => {
      const serial = s.getPeerCertificate().serialNumber;
      s.end();
      resolve(serial);
    });
    s.on('timeout', () => s.destroy(new Error('TLS connect timed out')));
    s.on('error', reject);
  });
}

async function curl(client: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await execInFull(client, ['/hostbin/curl', '-sS', '--max-time', '8', ...args], { timeoutMs: 12000 });
  return { code: r.code, out: r.stdout, err: r.stderr };
}

/** `curl -w` with status and HTTP version after the body: returns {status, version, body}. */
async function fetchIn(client: string, args: string[]): Promise<{ status: number; version: string; body: string }> {
  const r = await curl(client, ['-w', '\n%{http_code} %{http_version}', ...args]);
  if (r.code !== 0) throw new Error(`curl ${args.join(' ')}: exit ${r.code}: ${r.err}`);
  const i = r.out.lastIndexOf('\n');
  const [status, version] = r.out.slice(i + 1).split(' ');
  return { status: Number(status), version, body: r.out.slice(0, i) };
}

function hostGet(addr: string, port: number, p: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: addr, port, path: p, headers: { host: 'loop.test', connection: 'close' }, timeout: 3000, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/**
 * A bounded request loop (at most maxRequests, at most maxMs) to addr:port while `during` runs;
 * counts every request that did not get a 200.
 */
async function loopDuring(addr: string, port: number, during: () => Promise<void>, maxRequests = 20000, maxMs = 60000): Promise<{ ok: number; failed: number; errors: string[] }> {
  let done = false;
  const res = { ok: 0, failed: 0, errors: [] as string[] };
  const t0 = Date.now();
  const loop = (async () => {
    while (!done && res.ok + res.failed < maxRequests && Date.now() - t0 < maxMs) {
      try {
        const s = await hostGet(addr, port, '/loop');
        if (s === 200) res.ok++;
        else { res.failed++; res.errors.push(`status ${s}`); }
      } catch (e) {
        res.failed++;
        res.errors.push((e as Error).message);
      }
    }
  })();
  try {
    await during();
    await sleep(500); // and a little after
  } finally {
    done = true;
    await loop;
  }
  return res;
}

for (const mode of ['iptables', 'ebpf'] as const) {
  test(`L7 ingress (${mode}): protocols, TLS, routing features, publish port, restarts with 0 failed requests`, async (t) => {
    await removeTestContainers(SUITE);
    await ensureTestImage();
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bt-l7-'));
    const tlsDir = path.join(work, 'tls');
    fs.mkdirSync(tlsDir);
    await makeCa(work);
    await makeLeaf(work, tlsDir, HOST, 1001);
    const ca = fs.readFileSync(path.join(work, 'ca.pem'), 'utf8');
    const PUBLISH = mode === 'ebpf' ? 31931 : 31932;
    const m = mode === 'ebpf' ? 'e' : 'i';
    let d = new Berthd({ name: `l7-${m}`, serviceCidr: '10.97.0.0/16', serviceCidr6: 'fd00:97::/112', extraArgs: ['--redirect', mode, '--tls-dir', tlsDir] });
    let ns: Netns | null = null;
    let holder: net.Server | null = null;
    t.teardown(async () => {
      holder?.close();
      await removeTestContainers(SUITE);
      if (ns) await deleteNetns(ns);
      await d.cleanup();
      fs.rmSync(work, { recursive: true, force: true });
    });

    // The publish port is held by another process before berthd starts.
    holder = net.createServer((c) => c.end('not berth\n'));
    await new Promise<void>((r) => holder!.listen(PUBLISH, '0.0.0.0', () => r()));
    await d.start();

    const backend = (name: string, labels: Record<string, string>, ports = '8080') => runContainer({
      suite: SUITE, name, binds: BINDS, labels: { 'berth.ports': ports, ...labels },
      cmd: ['/hostbin/node', BACKEND, name], waitFor: { tcp: ports.includes('50051') ? 50051 : 8080, timeoutMs: 20000 },
    });
    await backend(`bt-l7-app-${m}`, {
      'berth.service': 'app',
      'berth.http.edge.path': '/', 'berth.http.edge.publish': String(PUBLISH),
      'berth.http.secure.host': HOST, 'berth.http.secure.path': '/', 'berth.http.secure.tls': 'true', 'berth.http.secure.redirectHttps': 'true',
    });
    await backend(`bt-l7-api-${m}`, {
      'berth.service': 'api',
      'berth.http.edge.path': '/api', 'berth.http.edge.stripPrefix': 'true', 'berth.http.edge.timeout': '1s', 'berth.http.edge.retries': '2',
      'berth.http.secure.host': MISSING, 'berth.http.secure.path': '/',
    });
    await backend(`bt-l7-grpc-${m}`, { 'berth.service': 'grpc', 'berth.http.edge.path': '/berth.test.Echo', 'berth.http.edge.protocol': 'h2c' }, '50051');
    const client = await runContainer({ suite: SUITE, name: `bt-l7-client-${m}`, binds: BINDS, labels: {}, cmd: ['sleep', '900'] });

    const edge = await waitFor('ingress edge with 3 routes', async () => {
      const s = (await d.services()).find((x) => x.name === 'edge' && x.kind === 'ingress');
      return s && s.listenerPort && s.routes.length === 3 ? s : undefined;
    }, 30000);
    const secure = await waitFor('ingress secure', async () => (await d.services()).find((x) => x.name === 'secure' && x.kind === 'ingress' && x.listenerPort));
    t.deepEqual(secure.ports.map((p) => p.port).sort(), [443, 80], 'a TLS ingress listens on 80 and 443');

    // ---- part 5: the held publish port is reported (services, status, log), then served once free.
    const held = await waitFor('publish port reported as taken', async () => (await d.status()).ingressErrors?.find((e) => e.ingress === 'edge' && /publish port/.test(e.error)));
    t.regex(held.error, new RegExp(`publish port ${PUBLISH} is already in use`));
    t.true((await d.service('edge'))!.errors.some((e) => e.includes(`publish port ${PUBLISH}`)));
    t.regex(fs.readFileSync(d.logFile, 'utf8'), new RegExp(`publish port ${PUBLISH} is already in use`));
    await new Promise<void>((r) => holder!.close(() => r()));
    holder = null;
    ns = await createNetns(`bt-l7-${m}`);
    const outside = await waitFor('publish port served after it was freed (no restart)', async () => {
      const r = await httpGetInNetns(ns!.name, ns!.hostAddress, PUBLISH, '/outside');
      return r.status === 200 ? r : undefined;
    }, 20000, 250);
    t.regex(outside.body, /"path":"\/outside"/);
    // The status is that of the last finished reconcile: the redirect may serve a moment before.
    await waitFor('the publish-port error is gone', async () => !((await d.status()).ingressErrors ?? []).some((e) => /publish port/.test(e.error)), 10000, 200);

    // ---- part 1: protocols, from the client container through the redirect.
    const vip = edge.vip;
    await waitFor('edge serves the client container', async () => (await fetchIn(client.id, [`http://${vip}/`])).status === 200, 20000, 250);
    const h11 = await fetchIn(client.id, [`http://${vip}/hello`]);
    const seen = JSON.parse(h11.body) as { path: string; headers: Record<string, string>; httpVersion: string };
    t.is(seen.path, '/hello');
    t.is(seen.headers['x-forwarded-for'], client.ip!, 'X-Forwarded-For carries the real client address');
    const h10 = await fetchIn(client.id, ['--http1.0', `http://${vip}/old`]);
    t.is(h10.status, 200, 'HTTP/1.0 is answered');
    t.regex(h10.version, /^1(\.0)?$/, 'an HTTP/1.0 exchange (curl prints 1 or 1.0)');
    const h2c = await fetchIn(client.id, ['--http2-prior-knowledge', `http://${vip}/h2c`]);
    t.is(h2c.status, 200);
    t.is(h2c.version, '2', 'h2c with prior knowledge');
    const ws = await execInFull(client.id, ['/hostbin/node', BACKEND, '--ws-client', vip, '80', '/chat', 'ws.test'], { timeoutMs: 15000 });
    t.deepEqual(JSON.parse(ws.stdout.trim()), { ok: true, status: 101, echo: `bt-l7-app-${m}:hello over websocket` }, `WebSocket echo: ${ws.stderr}`);
    const g = await execInFull(client.id, ['/hostbin/node', BACKEND, '--grpc-client', `${vip}:80`], { timeoutMs: 20000 });
    const grpcOut = JSON.parse(g.stdout.trim()) as { unary: { msg: string; replica: string }; stream: { i: number }[] };
    t.deepEqual(grpcOut.unary, { msg: 'ping', replica: `bt-l7-grpc-${m}` }, `gRPC unary: ${g.stdout} ${g.stderr}`);
    t.deepEqual(grpcOut.stream.map((x) => x.i), [0, 1, 2, 3, 4], 'gRPC server streaming');

    // ---- part 3: strip-prefix, timeout, retries (observed by the backend).
    const stripped = JSON.parse((await fetchIn(client.id, [`http://${vip}/api/items/7`])).body) as { path: string; headers: Record<string, string> };
    t.is(stripped.path, '/items/7', 'prefix /api stripped');
    t.is(stripped.headers['x-envoy-original-path'], '/api/items/7');
    const t0 = Date.now();
    const slow = await fetchIn(client.id, [`http://${vip}/api/slow?ms=4000`]);
    t.is(slow.status, 504, 'timeout=1s answers 504');
    t.true(Date.now() - t0 < 3500, `gave up after ${Date.now() - t0} ms`);
    t.is((await fetchIn(client.id, [`http://${vip}/api/slow?ms=100`])).status, 200);
    const k = `k${mode}${Date.now()}`;
    const flaky = await fetchIn(client.id, [`http://${vip}/api/flaky?key=${k}&fail=2`]);
    t.is(flaky.status, 200, 'two 503s retried away');
    t.is((JSON.parse((await fetchIn(client.id, [`http://${vip}/api/count?key=${k}`])).body) as { count: number }).count, 3, 'the backend saw 1 + 2 retries');
    const k2 = `${k}b`;
    t.is((await fetchIn(client.id, [`http://${vip}/api/flaky?key=${k2}&fail=9`])).status, 503, 'retries=2 gives up after 3 tries');
    t.is((JSON.parse((await fetchIn(client.id, [`http://${vip}/api/count?key=${k2}`])).body) as { count: number }).count, 3);

    // ---- part 2: TLS by SNI with h2 by ALPN, redirect, a host without certificate, rotation.
    const svip = secure.vip;
    const resolve = ['--resolve', `${HOST}:443:${svip}`, '--resolve', `${HOST}:80:${svip}`, '--cacert', '/berth-ca.pem'];
    await execInFull(client.id, ['sh', '-c', `cat > /berth-ca.pem`], { input: ca });
    const https = await waitFor('HTTPS served', async () => {
      const r = await fetchIn(client.id, [...resolve, `https://${HOST}/secure`]);
      return r.status === 200 ? r : undefined;
    }, 20000, 250);
    t.is(https.version, '2', 'h2 by ALPN');
    const sb = JSON.parse(https.body) as { headers: Record<string, string> };
    t.is(sb.headers['x-forwarded-proto'], 'https');
    const h1tls = await fetchIn(client.id, [...resolve, '--http1.1', `https://${HOST}/one`]);
    t.is(h1tls.version, '1.1');
    const redirect = await curl(client.id, [...resolve, '-o', '/dev/null', '-w', '%{http_code} %{redirect_url}', `http://${HOST}/cart?x=1`]);
    t.is(redirect.out, `301 https://${HOST}/cart?x=1`, 'plain HTTP redirected to HTTPS');
    const secureErrors = (await d.service('secure'))!.errors.join('\n');
    t.regex(secureErrors, new RegExp(`TLS for host ${MISSING.replace('.', '\\.')} is not served: .*${MISSING.replace('.', '\\.')}\\.crt does not exist`));
    t.true((await d.status()).ingressErrors!.some((e) => e.ingress === 'secure' && e.error.includes(MISSING)), 'in berth status too');
    const noCert = await curl(client.id, ['--resolve', `${MISSING}:443:${svip}`, '--cacert', '/berth-ca.pem', `https://${MISSING}/`]);
    t.not(noCert.code, 0, 'no TLS for a host without certificate');
    t.is((await fetchIn(client.id, ['-H', `Host: ${MISSING}`, `http://${svip}/plain`])).status, 200, 'its plain HTTP still serves (no redirect without a certificate)');

    const envoyPid = (await d.status()).envoy.pid;
    t.is(await servedSerial(svip, 443, HOST, ca), '03E9'); // 1001
    await makeLeaf(work, tlsDir, HOST, 1002);
    await waitFor('rotated certificate served', async () => (await servedSerial(svip, 443, HOST, ca)) === '03EA', 15000, 200);
    t.is((await d.status()).envoy.pid, envoyPid, 'rotation without restarting Envoy');
    // A mismatched pair: the host's TLS chain is dropped with a clear error, the rest serves.
    fs.copyFileSync(path.join(work, 'ca.key'), path.join(tlsDir, `${HOST}.key`));
    await waitFor('mismatched pair reported', async () => (await d.service('secure'))!.errors.some((e) => /does not belong to the certificate/.test(e)), 15000, 200);
    t.is((await fetchIn(client.id, [`http://${vip}/still`])).status, 200, 'other ingresses unaffected');
    await makeLeaf(work, tlsDir, HOST, 1003);
    await waitFor('good pair back', async () => (await servedSerial(svip, 443, HOST, ca).catch(() => '')) === '03EB', 15000, 200);

    // ---- part 3: access log in berthd's log, metrics per ingress and route.
    await waitFor('access log line in berthd log', () => fs.readFileSync(d.logFile, 'utf8').split('\n').some((l) => l.includes('"part":"access"') && l.includes('/api/items/7')), 10000, 200);
    const line = JSON.parse(fs.readFileSync(d.logFile, 'utf8').split('\n').find((l) => l.includes('"part":"access"') && l.includes('/api/items/7'))!) as { access: Record<string, string | number> };
    t.is(line.access.ingress, 'edge');
    t.is(line.access.status, 200);
    t.is(line.access.client, client.ip!);
    t.is(line.access.route, '*/api');
    const metrics = await waitFor('ingress metrics', async () => {
      const text = await d.metrics();
      return /berth_route_requests_total\{ingress="edge",route="\*\/api",code_class="5xx"\} [1-9]/.test(text) ? text : undefined;
    }, 15000, 500);
    t.regex(metrics, /berth_ingress_requests_total\{ingress="edge",code_class="2xx"\} [1-9]/);
    t.regex(metrics, /berth_ingress_requests_total\{ingress="edge",code_class="5xx"\} [1-9]/);
    t.regex(metrics, /berth_ingress_request_duration_ms_count\{ingress="edge"\} [1-9]/);
    t.regex(metrics, /berth_route_upstream_duration_ms_bucket\{ingress="edge",route="\*\/api",le="\+Inf"\} [1-9]/);

    // ---- part 4: restarts. kill -9 + start, then exit-for-restart (SIGUSR2) + start: Envoy is
    // adopted, 0 failed requests in a bounded loop to the ingress VIP.
    const before = (await d.status()).envoy.pid!;
    const version = await waitFor('acked version', async () => (await d.status()).envoy.ackedVersion);
    const crash = await loopDuring(vip, 80, async () => {
      await d.kill9();
      await sleep(300);
      d = new Berthd({ ...d.opts });
      await d.start();
    });
    t.log(`kill -9 + restart: ${crash.ok} ok, ${crash.failed} failed`);
    t.true(crash.ok > 50, `the loop ran (${crash.ok})`);
    t.is(crash.failed, 0, crash.errors.slice(0, 5).join('; '));
    let st = await d.status();
    t.is(st.envoy.pid, before, 'the same Envoy, adopted');
    t.true(st.envoy.adopted);
    // The new berthd computes the same state, so it serves the very version Envoy runs.
    t.is(await waitFor('the adopted Envoy ACKs the new berthd', async () => (await d.status()).envoy.ackedVersion, 40000, 200), version, 'same config version');
    const clean = await loopDuring(vip, 80, async () => {
      d.proc!.kill('SIGUSR2');
      await new Promise((r) => d.proc!.once('exit', r));
      d = new Berthd({ ...d.opts });
      await d.start();
    });
    t.log(`exit for restart + start: ${clean.ok} ok, ${clean.failed} failed`);
    t.true(clean.ok > 50);
    t.is(clean.failed, 0, clean.errors.slice(0, 5).join('; '));
    st = await d.status();
    t.is(st.envoy.pid, before, 'still the same Envoy');
    // A config change after the restart reaches the adopted Envoy.
    await backend(`bt-l7-late-${m}`, { 'berth.service': 'late', 'berth.http.edge.path': '/late' });
    await waitFor('new route through the adopted Envoy', async () => (JSON.parse((await fetchIn(client.id, [`http://${vip}/late/x`])).body) as { replica: string }).replica === `bt-l7-late-${m}`, 20000, 250);
    // A plain stop (SIGTERM outside systemd) stops Envoy.
    await d.stop();
    t.false(fs.existsSync(`/proc/${before}/cmdline`) && fs.readFileSync(`/proc/${before}/cmdline`, 'utf8').includes('envoy'), 'SIGTERM stopped Envoy');
  });
}

hostAsBefore(test);
