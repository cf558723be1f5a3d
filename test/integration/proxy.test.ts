/**
 * The proxy layer for real: the real Envoy, real ADS over the unix socket, real redirect rules,
 * real traffic. No Docker and no berthd: backends are node HTTP servers in a network namespace of
 * this test's own, the client is a second namespace (playing a container or an outside client),
 * and the DesiredState is written by hand.
 *
 *   netns bt-px-c  10.213.1.2 --veth-- 10.213.1.1 host            (client: VIP and publish port)
 *   netns bt-px-b  10.213.2.2, .3 --veth-- 10.213.2.1 host         (backends: 9080 details, 9081 page, 9082 reviews)
 *
 * The ingress VIP lies in 10.96.213.0/24, made unreachable off-host first (a route of our own,
 * more specific than any range a berthd may have installed).
 */
import test from 'ava';
import { hostAsBefore } from '../helpers/cleanup';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { Proxy } from '../../src/proxy';
import type { DesiredState, Service } from '../../src/model/types';
import type { RedirectMode } from '../../src/proxy/types';
import type { RedirectEntry } from '../../src/proxy/redirect-types';
import { applyIptables } from '../../src/proxy/iptables';
import { TcAttachment } from '../../src/proxy/tc';
import { ensureProxyRouting } from '../../src/proxy/routing';
import { run } from '../../src/util/exec';
import { silentLogger, createLogger } from '../../src/util/log';

const VIP_RANGE = '10.96.213.0/24';
const VIP = '10.96.213.10';
const VIP6_RANGE = 'fd00:96::d5:0/120';
const VIP6 = 'fd00:96::d5:10';
const HOST_C6 = 'fd00:213:1::1';
const CLIENT_NS = 'bt-px-c';
const BACKEND_NS = 'bt-px-b';
const HOST_C = '10.213.1.1';
const B1 = '10.213.2.2';
const B2 = '10.213.2.3';
const PUBLISH = 31917;
const TAKEN = 31918;
const PORTS = { from: 15990, to: 15999 };
/** A bpffs directory of this test's own (berthd's is /sys/fs/bpf/berth). */
const PIN_DIR = `/sys/fs/bpf/bt-px-${process.pid}`;
/** Kernel object names of this test's own, so that a berthd running on the machine is never touched. */
const NAMES = { chain: 'BT_PX_PREROUTING', table: 2213, rulePref: 8, tcPref: 47213 };

const logger = process.env.BERTH_TEST_LOG ? createLogger('debug') : silentLogger();

async function sh(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** Poll until fn returns a truthy value; generous bounds, never a timing assertion. */
async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false | null>, timeoutMs = 20000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  for (let i = 0; i < 10000 && Date.now() < deadline; i++) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

/** One HTTP GET from inside a namespace (node's http, Connection: close, 4 s timeout). */
async function getIn(ns: string, addr: string, port: number, p: string, host = 'berth.test'): Promise<{ status: number; body: string }> {
  const js = `const h=require('http');const r=h.get({host:${JSON.stringify(addr)},port:${port},path:${JSON.stringify(p)},headers:{host:${JSON.stringify(host)},connection:'close'},timeout:4000},(s)=>{let b='';s.on('data',(c)=>b+=c);s.on('end',()=>{process.stdout.write(JSON.stringify({status:s.statusCode,body:b}))})});r.on('timeout',()=>r.destroy(new Error('timeout')));r.on('error',(e)=>{process.stdout.write(JSON.stringify({status:0,body:e.message}))})`;
  const r = await run('ip', ['netns', 'exec', ns, process.execPath, '-e', js], { timeoutMs: 10000 });
  try {
    return JSON.parse(r.stdout) as { status: number; body: string };
  } catch {
    return { status: 0, body: r.stderr };
  }
}

const BACKEND_JS = `
const http = require('http');
const serve = (port, fn) => http.createServer((q, s) => { s.setHeader('content-type', 'text/plain'); s.end(fn(q)); }).listen(port, '0.0.0.0');
serve(9080, (q) => JSON.stringify({ replica: q.socket.localAddress, path: q.url }));
serve(9081, () => '<h1>Product page</h1>');
serve(9082, (q) => JSON.stringify({ reviews: [], replica: q.socket.localAddress }));
`;

let backend: ChildProcess | null = null;
let addedRoute = false;
let addedRoute6 = false;
let tmp = '';

async function setUp(): Promise<void> {
  await tearDown();
  // The unreachable route first: no VIP packet that nothing redirects can leave the machine.
  await sh('ip', ['route', 'add', 'unreachable', VIP_RANGE]);
  addedRoute = true;
  await sh('ip', ['-6', 'route', 'add', 'unreachable', VIP6_RANGE]);
  addedRoute6 = true;
  for (const [ns, hostIf, nsIf, hostAddr, nsAddrs] of [
    [CLIENT_NS, 'bt-px-c0', 'bt-px-c1', `${HOST_C}/30`, ['10.213.1.2/30']],
    [BACKEND_NS, 'bt-px-b0', 'bt-px-b1', '10.213.2.1/24', [`${B1}/24`, `${B2}/24`]],
  ] as const) {
    await sh('ip', ['netns', 'add', ns]);
    await sh('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf, 'netns', ns]);
    await sh('ip', ['addr', 'add', hostAddr, 'dev', hostIf]);
    await sh('ip', ['link', 'set', hostIf, 'up']);
    for (const a of nsAddrs) await sh('ip', ['-n', ns, 'addr', 'add', a, 'dev', nsIf]);
    await sh('ip', ['-n', ns, 'link', 'set', nsIf, 'up']);
    await sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    await sh('ip', ['-n', ns, 'route', 'add', 'default', 'via', hostAddr.split('/')[0]]);
  }
  // IPv6 between the client and the host too (nodad: usable at once).
  await sh('ip', ['-6', 'addr', 'add', `${HOST_C6}/64`, 'dev', 'bt-px-c0', 'nodad']);
  await sh('ip', ['-n', CLIENT_NS, '-6', 'addr', 'add', 'fd00:213:1::2/64', 'dev', 'bt-px-c1', 'nodad']);
  await sh('ip', ['-n', CLIENT_NS, '-6', 'route', 'add', 'default', 'via', HOST_C6]);
  backend = spawn('ip', ['netns', 'exec', BACKEND_NS, process.execPath, '-e', BACKEND_JS], { stdio: 'ignore' });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bt-px-'));
  await waitFor('backends up', async () => (await getIn(CLIENT_NS, B1, 9080, '/x')).status === 200 || (await run('ip', ['netns', 'exec', BACKEND_NS, process.execPath, '-e', `require('net').connect(9080,'${B2}').on('connect',()=>process.exit(0)).on('error',()=>process.exit(1))`])).code === 0);
}

async function tearDown(): Promise<void> {
  if (backend?.pid) {
    try { process.kill(backend.pid, 'SIGKILL'); } catch { /* gone */ }
  }
  backend = null;
  for (const ns of [CLIENT_NS, BACKEND_NS]) await run('ip', ['netns', 'del', ns]);
  for (const l of ['bt-px-c0', 'bt-px-b0']) await run('ip', ['link', 'del', l]);
  if (addedRoute) await run('ip', ['route', 'del', 'unreachable', VIP_RANGE]);
  if (addedRoute6) await run('ip', ['-6', 'route', 'del', 'unreachable', VIP6_RANGE]);
  addedRoute = addedRoute6 = false;
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  tmp = '';
}

function svc(name: string, ports: [number, number][], backends: string[]): Service {
  return {
    name, kind: 'service', vip: '10.96.213.100', vip6: null,
    ports: ports.map(([port, targetPort]) => ({ port, protocol: 'tcp', targetPort })),
    backends: backends.map((ip, i) => ({ container: `${name}-${i + 1}`, id: `${name}${i}`, ip, ip6: null })),
    routes: [], ingress: null, errors: [],
  };
}

function desired(extraRoutes: Service['routes'] = [], more: Service[] = []): DesiredState {
  const basic: Service = {
    name: 'basic', kind: 'ingress', vip: VIP, vip6: VIP6, ports: [{ port: 80, protocol: 'tcp', targetPort: 80 }], backends: [],
    routes: [
      ...extraRoutes,
      { host: null, path: '/details', service: 'details', port: 9080 },
      { host: null, path: '/', service: 'productpage', port: 9080 },
    ],
    ingress: { listen: 80, publish: PUBLISH, proxyPort: null }, errors: [],
  };
  const services = [basic, svc('details', [[9080, 9080]], [B1, B2]), svc('productpage', [[9080, 9081]], [B1]), svc('reviews', [[9080, 9082]], [B2]), ...more];
  return { services: services.sort((a, b) => a.name.localeCompare(b.name)), labelErrors: [] };
}

/** This test's rules and programs (its chain, its tc priority on its interfaces). */
async function berthRules(): Promise<{ tproxy: string[]; tc: string[] }> {
  const ipt = (await run('iptables-save', ['-t', 'mangle'])).stdout + (await run('ip6tables-save', ['-t', 'mangle'])).stdout;
  const tc: string[] = [];
  for (const l of ['bt-px-c0', 'bt-px-b0']) {
    const f = (await run('tc', ['filter', 'show', 'dev', l, 'ingress', 'pref', String(NAMES.tcPref)])).stdout;
    if (/berth_redirect/.test(f)) tc.push(l);
  }
  return { tproxy: ipt.split('\n').filter((x) => x.includes(NAMES.chain) && /TPROXY/.test(x) && /--comment berth/.test(x)), tc };
}

async function replicas(get: () => Promise<{ status: number; body: string }>): Promise<string[]> {
  const seen = new Set<string>();
  for (let i = 0; i < 20 && seen.size < 2; i++) {
    const r = await get();
    if (r.status !== 200) throw new Error(`status ${r.status}: ${r.body}`);
    seen.add((JSON.parse(r.body) as { replica: string }).replica);
  }
  return [...seen].sort();
}

test.after.always(async () => {
  await Proxy.cleanupRedirect({ logger, bpfPinDir: PIN_DIR, redirectNames: NAMES });
  fs.rmSync(PIN_DIR, { recursive: true, force: true });
  await tearDown();
});

// The host-as-before check (after the cleanup hooks above, before the setup hooks below).
hostAsBefore(test);

test.before(setUp);

function newProxy(mode: RedirectMode, stateDir = path.join(tmp, 'state')): Proxy {
  return new Proxy({
    envoyPath: 'envoy', runDir: path.join(tmp, 'run'), stateDir, proxyPorts: PORTS, redirect: mode,
    serviceCidr: '10.96.0.0/16', serviceCidr6: 'fd00:96::/112', logger, redirectInterfaces: ['bt-px-c0'], bpfPinDir: PIN_DIR, redirectNames: NAMES,
  });
}

for (const mode of ['iptables', 'ebpf'] as const) {
  test.serial(`ingress over redirect ${mode}: routing, balancing, publish, new route, NACK, Envoy restart`, async (t) => {
    const proxy = newProxy(mode);
    const squatter = net.createServer().listen(TAKEN, '127.0.0.1');
    t.teardown(async () => {
      squatter.close();
      await proxy.stop();
    });
    await proxy.start();
    t.is(proxy.status().redirect, mode);

    // A second ingress whose publish port another process holds: an error for it alone.
    const taken: Service = {
      name: 'taken', kind: 'ingress', vip: '10.96.213.11', vip6: null, ports: [], backends: [],
      routes: [{ host: null, path: '/', service: 'productpage', port: 9080 }], ingress: { listen: 80, publish: TAKEN, proxyPort: null }, errors: [],
    };
    const state = desired([], [taken]);
    const errors = await proxy.update(state);
    t.deepEqual(errors.map((e) => e.ingress), ['taken'], JSON.stringify(errors));
    t.regex(errors[0].error, /31918 is already in use/);
    const basic = state.services.find((s) => s.name === 'basic')!;
    const port = basic.ingress!.proxyPort!;
    t.true(port >= PORTS.from && port <= PORTS.to);
    t.is(JSON.parse(fs.readFileSync(path.join(tmp, 'state', 'proxy-ports.json'), 'utf8')).basic, port, 'listener port persisted');
    await waitFor('Envoy running', async () => proxy.status().envoy.state === 'running');

    // The client namespace plays a container: VIP:80, routed by path, balanced over both replicas.
    await waitFor('client -> VIP answers', async () => (await getIn(CLIENT_NS, VIP, 80, '/details/1')).status === 200);
    t.deepEqual(await replicas(() => getIn(CLIENT_NS, VIP, 80, '/details/1')), [B1, B2], 'balanced over both backends');
    t.regex((await getIn(CLIENT_NS, VIP, 80, '/')).body, /Product page/);
    // ... and an outside client: the host's own address on the publish port.
    t.is((await getIn(CLIENT_NS, HOST_C, PUBLISH, '/details/1')).status, 200);
    t.regex((await getIn(CLIENT_NS, HOST_C, PUBLISH, '/')).body, /Product page/);
    // The other ingress still serves on its VIP although its publish port was refused.
    await waitFor('ingress taken on its VIP', async () => /Product page/.test((await getIn(CLIENT_NS, '10.96.213.11', 80, '/')).body));
    await waitFor('config ACKed', async () => proxy.status().envoy.ackedVersion);
    // IPv6 clients: the ingress's IPv6 VIP and the host's IPv6 address on the publish port.
    t.deepEqual(await replicas(() => getIn(CLIENT_NS, VIP6, 80, '/details/1')), [B1, B2], 'IPv6 VIP');
    t.is((await getIn(CLIENT_NS, HOST_C6, PUBLISH, '/details/1')).status, 200, 'IPv6 publish');

    // A new route shows up (polled; the time is logged, not asserted).
    const t0 = Date.now();
    t.deepEqual(await proxy.update(desired([{ host: null, path: '/reviews', service: 'reviews', port: 9080 }], [taken])).then((e) => e.map((x) => x.ingress)), ['taken']);
    await waitFor('route /reviews', async () => (await getIn(CLIENT_NS, VIP, 80, '/reviews/1')).status === 200, 10000, 20);
    t.log(`new route served after ${Date.now() - t0} ms`);

    // A config Envoy rejects (a backend address that is no IP; the builder passes addresses
    // through): NACK logged, the last good config keeps serving, and it is not resent in a loop.
    const goodVersion = await waitFor('ACK of the /reviews config', async () => proxy.status().envoy.ackedVersion);
    const bad = desired([{ host: null, path: '/reviews', service: 'reviews', port: 9080 }], [taken]);
    bad.services.find((s) => s.name === 'reviews')!.backends[0].ip = '10.213.2.300';
    await proxy.update(bad);
    const nack = await waitFor('NACK', async () => proxy.status().envoy.lastNack);
    t.regex(nack, /ClusterLoadAssignment.*10\.213\.2\.300/);
    t.is(proxy.status().envoy.ackedVersion, goodVersion);
    t.is((await getIn(CLIENT_NS, VIP, 80, '/reviews/1')).status, 200, 'last good config still serves');
    t.deepEqual(await replicas(() => getIn(CLIENT_NS, VIP, 80, '/details/1')), [B1, B2]);
    const pushes = proxy.xdsStats().pushes;
    await new Promise((r) => setTimeout(r, 1500));
    t.is(proxy.xdsStats().pushes, pushes, 'the rejected version is not pushed again');
    t.is(proxy.xdsStats().nacks, 1);

    // Envoy killed: restarted with backoff, configured again over ADS, serving again.
    await proxy.update(desired([{ host: null, path: '/reviews', service: 'reviews', port: 9080 }], [taken]));
    const pid = proxy.status().envoy.pid!;
    process.kill(pid, 'SIGKILL');
    await waitFor('Envoy restarted', async () => {
      const e = proxy.status().envoy;
      return e.state === 'running' && e.pid !== pid && e.restarts >= 1;
    });
    await waitFor('serving after restart', async () => (await getIn(CLIENT_NS, VIP, 80, '/reviews/1')).status === 200);
    t.is((await getIn(CLIENT_NS, HOST_C, PUBLISH, '/details/1')).status, 200);

    // Only this mode's rules exist.
    const rules = await berthRules();
    if (mode === 'iptables') {
      t.true(rules.tproxy.length >= 2, rules.tproxy.join('\n'));
      t.deepEqual(rules.tc, []);
    } else {
      t.deepEqual(rules.tproxy, []);
      t.deepEqual(rules.tc, ['bt-px-c0']);
    }
  });
}

test.serial('a sticky listener port taken by another process: NACK, an error for that ingress, moved to a free port', async (t) => {
  const stateDir = path.join(tmp, 'state-taken');
  fs.mkdirSync(stateDir, { recursive: true });
  fs.writeFileSync(path.join(stateDir, 'proxy-ports.json'), JSON.stringify({ basic: 15995 }));
  const squatter = net.createServer().listen(15995, '0.0.0.0');
  await new Promise((r) => squatter.once('listening', r));
  const proxy = newProxy('iptables', stateDir);
  t.teardown(async () => {
    squatter.close();
    await proxy.stop();
  });
  await proxy.start();
  const first = desired();
  t.deepEqual(await proxy.update(first), [], 'a persisted port is kept: nothing known to be wrong yet');
  t.is(first.services.find((s) => s.name === 'basic')!.ingress!.proxyPort, 15995);
  await waitFor('Envoy NACKs the listener', async () => /berth_ingress_basic/.test(proxy.status().envoy.lastNack ?? ''));
  // The next reconcile reports it for this ingress and moves it.
  const second = desired();
  const errors = await proxy.update(second);
  t.deepEqual(errors.map((e) => e.ingress), ['basic']);
  t.regex(errors[0].error, /listener port 15995 is taken/);
  const moved = second.services.find((s) => s.name === 'basic')!.ingress!.proxyPort!;
  t.not(moved, 15995);
  t.true(moved >= PORTS.from && moved <= PORTS.to);
  await waitFor('serving on the new port', async () => (await getIn(CLIENT_NS, VIP, 80, '/details/1')).status === 200);
  t.deepEqual(await proxy.update(desired()), [], 'settled');
});

test.serial('cleanupRedirect removes both modes and the policy routing', async (t) => {
  // Both modes in place at once (as a crash between the switch's steps could leave them), and
  // the policy routing: checked present first, so that the removal below removes something.
  const entry: RedirectEntry = { ingress: 'basic', vip: VIP, vip6: VIP6, listen: 80, publish: PUBLISH, listenerPort: PORTS.from };
  await applyIptables([entry], NAMES);
  await new TcAttachment({ pinDir: PIN_DIR, interfaces: ['bt-px-c0'], tcPref: NAMES.tcPref }).apply([entry]);
  t.deepEqual(await ensureProxyRouting(NAMES), []);
  const present = await berthRules();
  t.true(present.tproxy.length >= 2, `TPROXY rules present: ${present.tproxy.join('\n')}`);
  t.deepEqual(present.tc, ['bt-px-c0'], 'tc program present');
  t.true(fs.existsSync(path.join(PIN_DIR, 'redirect')), 'pins present');
  t.regex((await run('ip', ['rule'])).stdout, /lookup 2213/);
  t.regex((await run('ip', ['-6', 'rule'])).stdout, /lookup 2213/);

  await Proxy.cleanupRedirect({ logger, bpfPinDir: PIN_DIR, redirectNames: NAMES });
  t.false(fs.existsSync(path.join(PIN_DIR, 'redirect')), 'pins removed');
  t.deepEqual(await berthRules(), { tproxy: [], tc: [] });
  t.not((await run('iptables', ['-t', 'mangle', '-S', NAMES.chain])).code, 0, 'chain gone');
  t.notRegex((await run('iptables', ['-t', 'mangle', '-S', 'PREROUTING'])).stdout, new RegExp(NAMES.chain), 'jump gone');
  t.notRegex((await run('ip', ['rule'])).stdout, /lookup 2213/);
  t.notRegex((await run('ip', ['-6', 'rule'])).stdout, /lookup 2213/);
  t.is((await run('ip', ['route', 'show', 'table', '2213'])).stdout.trim(), '');
});
