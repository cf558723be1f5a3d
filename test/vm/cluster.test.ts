/**
 * Several hosts, end to end (issue 12): three scripts/vm guests on one private segment, a
 * three-member etcd (one member per guest), berthd under systemd on each (test/vm/cluster.ts).
 * Guests are TCG-emulated and slow, so there are two test functions that each do a lot, in order:
 *
 *   1. every host serves one service namespace: the same VIP on every host, `berth services`
 *      lists every backend with its node, remote backends answer host and container clients over
 *      TCP and UDP, and an ingress on h1 routes to backends on all three hosts;
 *   2. faults: docker stop on one host -> gone from the others within 1 s; a guest powered off ->
 *      its backends gone within the lease TTL + 2 s, then a bounded client loop on another host
 *      sees no failure; etcd quorum lost -> nothing withdrawn (and a change made meanwhile stays
 *      local); quorum back -> converged.
 * Latencies are measured on one guest's clock (cluster-agent.ts says how).
 */
import test from 'ava';
import { buildTestBinaries } from '../helpers/images';
import { agentCmd, clusterDown, clusterHosts, clusterSetup, clusterUp, etcdLeader, etcdStatus, TCG_LEASE_TTL_S, type ClusterHost } from './cluster';
import { ENSURE_TEST_IMAGE, until, vmDown, vmJson, vmLogs, vmOk, vmSh } from './vm';
import { LEASE_TTL_S } from '../../src/cluster/store';
import type { ServiceView, StatusView } from '../../src/cli/format';
import { TIME_SCALE } from '../helpers/time';

const hosts = clusterHosts();
const [h1, h2, h3] = hosts;
const PROBE = '/berth/build/test-bin/berth-probe';
const T0 = Date.now();
let image = '';
let failed = false;
const down = new Set<string>();
/**
 * The issue's bounds: a stopped container is gone from the other hosts within 1 s; a dead host's
 * backends within the lease TTL + 2 s. What berth does in them (Docker event -> etcd -> the
 * peers' watch -> their reconcile; etcd's expiry -> the watch -> reconcile) is CPU, which TCG
 * slows: that part is stretched by the time scale (test/helpers/time.ts: BERTH_TEST_TIME_SCALE,
 * or 10 when the guests run under TCG, the kernel matrix's factor); the TTL (etcd's real-time
 * clock) is not. The raw numbers are printed either way.
 */
let timeScale = TIME_SCALE;
/** The guests' etcdLeaseTtl: berth's default, or TCG_LEASE_TTL_S under TCG (cluster.ts says why). */
let leaseTtlS = LEASE_TTL_S;
const goneBoundMs = () => Math.round(1000 * timeScale);
const dropBoundMs = () => leaseTtlS * 1000 + Math.round(2000 * timeScale);

interface ProbeLine { ok: boolean; reply: string | null; errno: string | null }

/**
 * An HTTP/1.1 request that makes Envoy close the connection after the answer (bash $'' quoting);
 * berth-probe reads until the close (--idle-ms as long as its timeout), as in systemd.test.ts.
 */
const HTTP_GET = "$'GET / HTTP/1.1\\r\\nHost: shop\\r\\nConnection: close\\r\\n\\r\\n'";

/**
 * berthd's /services on `h` straight from the admin socket (the CLI's Node start-up costs seconds
 * under TCG). Three tries, 10 s apart: in the run of 2026-11-30 20:05 a starved guest's berthd
 * once gave no answer within socat's 30 s (its Docker list timed out at the same moment), which
 * is slowness, not a wrong answer; a berthd that stays silent still fails the test.
 */
async function services(h: ClusterHost): Promise<ServiceView[]> {
  for (let i = 1; ; i++) {
    try {
      // pipefail: a socat that fails (no socket, no answer) is an exit code with its message, not an empty body.
      return await vmJson<ServiceView[]>(h.name, "set -o pipefail; printf 'GET /services HTTP/1.0\\r\\n\\r\\n' | socat -t 30 - UNIX-CONNECT:/run/berth/berth.sock | sed '1,/^\\r\\?$/d'", 60000);
    } catch (e) {
      if (i === 3) throw e;
      log(`${h.name}: /services try ${i}: ${(e as Error).message.slice(0, 300)}`);
      await new Promise((r) => setTimeout(r, 10000));
    }
  }
}

const backendsOf = (svcs: ServiceView[], name: string) => (svcs.find((s) => s.name === name && s.kind === 'service')?.backends ?? []).map((b) => `${b.node}/${b.container}`).sort();

/**
 * Run client probes in guest `h` and return their output: berth-probe exits non-zero when an
 * attempt fails, and the assertions, not the exit code, judge the attempts (so the output of a
 * failing run is kept and the test goes on to report the rest).
 */
async function probeOut(h: ClusterHost, script: string, timeoutMs = 300000): Promise<string> {
  const r = await vmSh(h.name, script, timeoutMs);
  if (!r.stdout.includes('{')) throw new Error(`no probe output in ${h.name} from ${script} (exit ${r.code}): ${r.stderr.slice(-1500)}`);
  return r.stdout;
}

/** berth-probe lines (test/helpers/c/berth-probe.c) as data. */
function lines(out: string): ProbeLine[] {
  return out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as ProbeLine);
}
const tagsOf = (ls: ProbeLine[]) => new Set(ls.filter((l) => l.ok && l.reply).map((l) => l.reply!.split(/[:\n]/)[0]));
const failuresOf = (ls: ProbeLine[]) => ls.filter((l) => !l.ok);

function log(msg: string): void {
  console.log(`[${((Date.now() - T0) / 1000).toFixed(0)} s] ${msg}`);
}

/** A web backend: TCP echo on 8080 and UDP echo on 5353, both tagged with the container's name. */
function webRun(name: string): string {
  return `docker run -d --init --name ${name} --label berth.service=web --label berth.ports=80:8080/tcp,53:5353/udp ${image} sh -c 'berth-udp-echo 5353 --tag ${name} & exec berth-tcp-echo 8080 --tag ${name}' >/dev/null`;
}

/** Development only: BERTH_VM_CLUSTER_REUSE=1 runs against guests a previous run set up and left up. */
const REUSE = process.env.BERTH_VM_CLUSTER_REUSE === '1';

test.before(async () => {
  await buildTestBinaries(); // the guests run the static helpers from the checkout disk
  if (REUSE) {
    image = (await vmOk(h1.name, ENSURE_TEST_IMAGE, 600000)).trim().split('\n').pop() ?? '';
    await Promise.all(hosts.map((h) => vmOk(h.name, 'docker rm -f $(docker ps -aq) >/dev/null 2>&1; true')));
    leaseTtlS = Number(/etcdLeaseTtl: (\d+)/.exec(await vmOk(h1.name, 'cat /etc/berth/config.yaml'))?.[1] ?? LEASE_TTL_S);
    if (!process.env.BERTH_TEST_TIME_SCALE && /tcg/.test(await vmOk(h1.name, 'systemd-detect-virt || true'))) timeScale = 10;
    return;
  }
  try {
    const ups = await clusterUp(hosts);
    for (const l of ups) log(l);
    const tcg = ups.some((l) => /accel tcg/.test(l));
    if (!process.env.BERTH_TEST_TIME_SCALE && tcg) timeScale = 10;
    if (tcg) leaseTtlS = TCG_LEASE_TTL_S;
    log(`etcdLeaseTtl ${leaseTtlS} s, time scale ${timeScale}`);
    image = await clusterSetup(hosts, leaseTtlS);
  } catch (e) {
    failed = true; // keep the guests' journals (after.always)
    throw e;
  }
  log(`etcd and berthd up on ${hosts.map((h) => h.name).join(', ')}; test image ${image}`);
});

test.afterEach.always((t) => {
  if (!t.passed) failed = true;
});

test.after.always(async () => {
  if (failed) await Promise.all(hosts.filter((h) => !down.has(h.name)).map((h) => vmLogs(h.name).catch(() => undefined)));
  if (REUSE) return;
  await clusterDown(hosts);
  log('guests down');
});

test.serial('three hosts, one service namespace: same VIP everywhere, backends listed with their node, TCP and UDP to remote backends from host and container clients, an ingress on h1 to all three', async (t) => {
  // web-N and shop-N on every host; the ingress route labels only on h1 (ingresses are per host).
  await Promise.all(hosts.map((h, i) => vmOk(h.name, `${webRun(`web-${i + 1}`)}
    docker run -d --init --name shop-${i + 1} --label berth.service=shop --label berth.ports=80:8080 ${i === 0 ? '--label berth.http.front.path=/ ' : ''}${image} sh -c 'echo shop-on-${h.name} > /www/index.html; exec httpd -f -p 8080 -h /www' >/dev/null
    docker run -d --name cl ${image} sleep 3600 >/dev/null`, 900000))); // over 300 s for these three on h2 in the run of 2026-11-30 17:51

  const want = { web: hosts.map((h, i) => `${h.name}/web-${i + 1}`).sort(), shop: hosts.map((h, i) => `${h.name}/shop-${i + 1}`).sort() };
  const views = new Map<string, ServiceView[]>();
  await until('every host lists web and shop with all three backends', async () => {
    for (const h of hosts) views.set(h.name, await services(h));
    return hosts.every((h) => JSON.stringify(backendsOf(views.get(h.name)!, 'web')) === JSON.stringify(want.web) && JSON.stringify(backendsOf(views.get(h.name)!, 'shop')) === JSON.stringify(want.shop));
  }, 900000, 15000).catch((e: Error) => { // every poll is three ssh sessions into emulated guests: not too often
    throw new Error(`${e.message}: ${JSON.stringify([...views].map(([n, v]) => [n, backendsOf(v, 'web'), backendsOf(v, 'shop')]))}`);
  });
  log('every host lists 3 web and 3 shop backends');

  // The same VIP on every host, agreed through etcd.
  const vipOf = (h: ClusterHost, name: string) => views.get(h.name)!.find((s) => s.name === name && s.kind === 'service')!.vip;
  const web = vipOf(h1, 'web');
  const shop = vipOf(h1, 'shop');
  for (const h of hosts) {
    t.is(vipOf(h, 'web'), web, `web's VIP on ${h.name}`);
    t.is(vipOf(h, 'shop'), shop, `shop's VIP on ${h.name}`);
    t.deepEqual(views.get(h.name)!.flatMap((s) => s.errors), [], `no service errors on ${h.name}`);
  }
  // The CLI names each backend's node.
  const text = await vmOk(h3.name, 'berth services', 300000);
  for (const b of want.web) t.true(text.includes(`${b}(`), `berth services on h3 shows ${b}: ${text}`);
  // The CLI is a node process: in a starved 1-vCPU guest its start alone took over a minute.
  const st = (await vmJson<StatusView>(h3.name, 'berth status --json', 300000)).cluster;
  if (!st) throw new Error('berth status on h3 has no cluster section');
  // etcd's state: connected now, or within 5 min. In the starved guests the client's calls miss
  // their deadlines now and then and it reports 'disconnected' until the next call succeeds
  // (run of 2026-12-01 00:37); polled over the socket, as a node start per try costs a minute.
  if (st.etcd !== 'connected') {
    await until('h3 reports etcd connected', async () => {
      const again = await vmJson<StatusView>(h3.name, "set -o pipefail; printf 'GET /status HTTP/1.0\\r\\n\\r\\n' | socat -t 30 - UNIX-CONNECT:/run/berth/berth.sock | sed '1,/^\\r\\?$/d'", 60000).catch(() => null);
      return again?.cluster?.etcd === 'connected';
    }, 300000, 10000);
  }
  t.deepEqual([...st.nodes].sort(), hosts.map((h) => h.name).sort());
  t.deepEqual([...new Set(st.routes.map((r) => r.node))].sort(), [h1.name, h2.name], 'routes to both peers\' subnets');
  t.deepEqual([...new Set((st.accepts ?? []).map((r) => r.node))].sort(), [h1.name, h2.name], 'both peers accepted into local subnets');
  t.is(st.peerAccept?.find((f) => f.family === 4)?.error, null);
  t.deepEqual(st.overlaps, [], 'no container subnet overlaps');
  t.regex(await vmOk(h3.name, 'iptables -S DOCKER-USER; iptables -S BERTH_PEERS'), new RegExp(`-A BERTH_PEERS -s ${h1.addr}/32 -d 172\\.20\\.0\\.0/16 -m comment --comment berth -j ACCEPT`));

  // h3's host and a container on h3: TCP and UDP, 30 connects each; every attempt answered, all
  // three backends seen (random choice: missing one of three in 30 tries has p < 1e-5).
  const all = ['web-1', 'web-2', 'web-3'];
  const outs = await probeOut(h3, `${PROBE} tcp ${web} 80 --send ping --count 30 --timeout-ms 3000; ${PROBE} udp ${web} 53 --send ping --count 30 --timeout-ms 3000;
    echo ===; docker exec cl berth-probe tcp ${web} 80 --send ping --count 30 --timeout-ms 3000; docker exec cl berth-probe udp ${web} 53 --send ping --count 30 --timeout-ms 3000`, 300000);
  const [fromHost, fromCtr] = outs.split('===').map(lines);
  for (const [who, ls] of [['h3 host', fromHost], ['container on h3', fromCtr]] as const) {
    t.is(ls.length, 60, `${who}: 60 attempts`);
    t.deepEqual(failuresOf(ls), [], `${who}: every attempt answered`);
    t.deepEqual([...tagsOf(ls.slice(0, 30))].sort(), all, `${who}: TCP reached backends on all three hosts`);
    t.deepEqual([...tagsOf(ls.slice(30))].sort(), all, `${who}: UDP reached backends on all three hosts`);
  }
  log('h3 host and container: TCP and UDP to web-1/2/3, no failure');

  // The ingress on h1 (Envoy's EDS has every host's shop backend): 30 requests from h1's host.
  let ingress = '';
  await until('ingress front on h1', async () => {
    ingress = (await services(h1)).find((s) => s.name === 'front' && s.kind === 'ingress')?.vip ?? '';
    return ingress !== '';
  }, 60000, 2000);
  await until('the ingress on h1 answers', async () => (await vmSh(h1.name, `${PROBE} tcp ${ingress} 80 --send ${HTTP_GET} --idle-ms 5000 --timeout-ms 5000`, 60000)).stdout.includes('shop-on-'), 180000, 2000);
  const ing = lines(await probeOut(h1, `${PROBE} tcp ${ingress} 80 --send ${HTTP_GET} --idle-ms 5000 --count 30 --timeout-ms 5000`, 600000));
  t.is(ing.length, 30);
  t.deepEqual(failuresOf(ing), [], 'every request to the ingress VIP answered');
  const bodies = ing.map((l) => /shop-on-[a-z0-9-]+/.exec(l.reply ?? '')?.[0] ?? `no body: ${(l.reply ?? '').slice(0, 200)}`);
  t.is(bodies.filter((b) => b.startsWith('shop-on-')).length, 30, `all 30 answered by a shop backend: ${bodies.join(' ')}`);
  t.deepEqual([...new Set(bodies)].sort(), hosts.map((h) => `shop-on-${h.name}`), 'the ingress on h1 routed to shop on every host');
  log('ingress on h1 reached shop on h1, h2, h3');
  // How much of each guest's memory the whole set-up uses (GUEST_MEM is sized from this).
  for (const h of hosts) {
    const [used, avail, total] = (await vmOk(h.name, "free -m | awk '/^Mem:/{print $3, $7, $2}'")).trim().split(' ');
    log(`${h.name} memory: ${used} MiB used, ${avail} MiB available of ${total} MiB`);
  }
});

test.serial('faults: docker stop -> gone elsewhere within 1 s; power-off -> gone within TTL + 2 s, then no failures; quorum lost -> nothing withdrawn; quorum back -> converged', async (t) => {
  const web = (await services(h1)).find((s) => s.name === 'web')!.vip;

  // docker stop on h2, timed on h2's clock: die event -> web-2 no longer in h1's and h3's /services.
  const g = await vmJson<{ dieMs: number; goneMs: Record<string, number | null>; pollMs: Record<string, number | null> }>(h2.name,
    agentCmd(['gone', 'web-2', 'docker stop web-2', h1.agent, h3.agent]), 180000);
  log(`docker stop web-2: gone from h1 after ${g.goneMs[h1.agent]} ms (poll ${g.pollMs[h1.agent]} ms), from h3 after ${g.goneMs[h3.agent]} ms (poll ${g.pollMs[h3.agent]} ms); the unscaled 1000 ms ${[h1, h3].every((h) => (g.goneMs[h.agent] ?? Infinity) <= 1000) ? 'met' : 'missed'}`);
  for (const h of [h1, h3]) {
    const ms = g.goneMs[h.agent];
    t.true(ms !== null && ms <= goneBoundMs(), `web-2 gone from ${h.name} ${ms} ms after it stopped (limit ${goneBoundMs()} ms, time scale ${timeScale})`);
  }
  const after = lines(await probeOut(h1, `${PROBE} tcp ${web} 80 --send ping --count 20 --timeout-ms 3000`));
  t.deepEqual(failuresOf(after), []);
  t.false(tagsOf(after).has('web-2'), 'the stopped backend is not chosen any more');
  await vmOk(h2.name, 'docker start web-2 >/dev/null');

  // Power a guest off that is not etcd's leader (a new leader renews every lease, which would
  // add an election to the drop time; README "Failure behaviour" says so).
  let leader: string | null = null;
  await until('etcd leader known', async () => (leader = await etcdLeader(h1, hosts)) !== null, 60000, 2000);
  const victim = hosts.find((h) => h.name !== leader)!;
  const [observer, other] = hosts.filter((h) => h !== victim);
  await until(`${observer.name} lists web-2 again and ${victim.name}'s backends`, async () => {
    const b = backendsOf(await services(observer), 'web');
    return b.length === 3;
  }, 60000, 2000);
  // The watcher (on the observer's clock): last answer from the victim -> no backend of it left.
  await vmOk(observer.name, `rm -f /tmp/dead.json /tmp/dead.ready; (setsid ${agentCmd(['dead-host', victim.agent, observer.agent, victim.name, '120000', '/tmp/dead.ready'])} > /tmp/dead.json 2>/tmp/dead.err &)`, 60000);
  // Powered off only once the watcher is armed (its node start-up alone takes seconds here).
  await until('the dead-host watcher is armed', async () => (await vmSh(observer.name, 'test -e /tmp/dead.ready && echo yes; cat /tmp/dead.err', 30000)).stdout.includes('yes'), 180000, 2000);
  log(`etcd leader ${leader}; powering off ${victim.name} (observer ${observer.name})`);
  await vmDown(victim.name);
  down.add(victim.name);
  let dead: { sawBackends: boolean; armedAt: number; lastAliveMs: number; goneMs: number; dropMs: number | null } | null = null;
  await until('the observer saw the dead host\'s backends go', async () => {
    const r = await vmSh(observer.name, 'cat /tmp/dead.json', 30000);
    if (r.stdout.trim().endsWith('}')) dead = JSON.parse(r.stdout) as typeof dead;
    return dead !== null;
  }, 240000, 2000);
  log(`power-off of ${victim.name}: its backends gone from ${observer.name} ${dead!.dropMs} ms after its last answer; the unscaled TTL + 2 s (${(leaseTtlS + 2) * 1000} ms) ${(dead!.dropMs ?? Infinity) <= (leaseTtlS + 2) * 1000 ? 'met' : 'missed'} (${JSON.stringify(dead)})`);
  t.true(dead!.sawBackends, 'the victim\'s backends were there before');
  t.true(dead!.dropMs !== null && dead!.dropMs <= dropBoundMs(), `dropped in ${dead!.dropMs} ms (limit ${dropBoundMs()} ms, time scale ${timeScale})`);
  // A bounded client loop on the observer: 200 TCP connects and 100 UDP requests, none fails.
  const loop = lines(await probeOut(observer, `${PROBE} tcp ${web} 80 --send ping --count 200 --timeout-ms 3000; ${PROBE} udp ${web} 53 --send ping --count 100 --timeout-ms 3000`, 600000));
  t.is(loop.length, 300);
  t.deepEqual(failuresOf(loop), [], 'no failure after the dead host\'s backends were dropped');
  const victimWeb = `web-${hosts.indexOf(victim) + 1}`;
  t.false(tagsOf(loop).has(victimWeb), 'the dead host\'s backend is never chosen');
  log(`client loop on ${observer.name}: 300 attempts, 0 failures`);

  // Quorum lost: the victim's member is gone; stop the other's. Nothing is withdrawn anywhere,
  // for longer than the lease TTL, and a local change still applies locally.
  await vmOk(other.name, 'systemctl stop berth-test-etcd');
  // The remaining member notices the lost quorum within its election timeout (4 s here).
  let noQuorum = await etcdStatus(observer, hosts);
  await until('no etcd member with a leader', async () => !(noQuorum = await etcdStatus(observer, hosts)).some((e) => e.ok), 30000, 1000)
    .catch(() => undefined);
  t.false(noQuorum.some((e) => e.ok), `no etcd member has a leader: ${JSON.stringify(noQuorum)}`);
  const lostAt = Date.now();
  const before = { o: backendsOf(await services(observer), 'web'), x: backendsOf(await services(other), 'web') };
  await vmOk(other.name, webRun('web-late'));
  log('etcd quorum lost; web-late started on the other host');
  // The local change applies locally (the reconcile does not wait for etcd)...
  await until(`${other.name} serves web-late without quorum`, async () => backendsOf(await services(other), 'web').includes(`${other.name}/web-late`), 180000, 2000);
  // ...and past the lease TTL (no leader: etcd expires nothing) every backend is still there.
  const wait = lostAt + (leaseTtlS + 4) * 1000 - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  const during = { o: backendsOf(await services(observer), 'web'), x: backendsOf(await services(other), 'web') };
  t.deepEqual(during.o, before.o, `nothing withdrawn on ${observer.name} without quorum`);
  t.deepEqual(during.x, [...before.x, `${other.name}/web-late`].sort(), `${other.name} keeps the peer's backends and adds its own new one`);
  const still = lines(await probeOut(observer, `${PROBE} tcp ${web} 80 --send ping --count 40 --timeout-ms 3000`, 300000));
  t.deepEqual(failuresOf(still), [], 'VIP serves without quorum');
  t.true(tagsOf(still).has(`web-${hosts.indexOf(other) + 1}`), 'including the peer\'s backend');

  // Quorum back: both hosts converge on the same view, web-late included.
  const back = Date.now();
  await vmOk(other.name, 'systemctl start --no-block berth-test-etcd');
  await until('converged after quorum returned', async () => {
    const o = backendsOf(await services(observer), 'web');
    const x = backendsOf(await services(other), 'web');
    return JSON.stringify(o) === JSON.stringify(x) && o.includes(`${other.name}/web-late`);
  }, 120000, 2000);
  log(`quorum back: converged (web-late on ${observer.name}) ${Date.now() - back} ms after etcd was started again`);
  const late = lines(await probeOut(observer, `${PROBE} tcp ${web} 80 --send ping --count 40 --timeout-ms 3000`, 300000));
  t.deepEqual(failuresOf(late), []);
  t.true(tagsOf(late).has('web-late'), 'the backend started without quorum is served on the peer');
  log(`wall time so far ${((Date.now() - T0) / 1000).toFixed(0)} s`);
});
