/**
 * Cluster benchmark (issue 12) in the three-guest VM cluster of test/vm/cluster.ts:
 *
 *   node dist/scripts/bench/cluster.js [--reuse] [--samples 20] [--services 1000] [--keep]
 *
 *   1. event -> VIP: on h1 a container of service `lat` starts; h2's VIP serves it. Measured on
 *      h1's clock (cluster-agent.ts serve-latency): Docker's `start` event time on h1 -> the first
 *      connect from h2 (through h2's agent) answered by the new container. One backend at a
 *      time, so h2's VIP has exactly the new backend to find. p50/p99 over --samples.
 *   2. berthd RSS and CPU with 3 hosts x --services services: on every host berthd.service is
 *      stopped and a berthd (same build, same config, no sandbox) runs against a fake Docker
 *      engine (test/helpers/fake-engine.ts) that lists --services labelled containers on this
 *      host's own pool (fake: no container runs), so each berthd holds its 1,000 local services
 *      and 2,000 remote ones. Measured from /proc: RSS when all 3,000 are merged, CPU seconds
 *      until then and over the next 60 s of steady state.
 *   3. time to drop a dead host's backends: h3 powered off (qemu killed); h2's agent reports
 *      the last answer of h3 -> no backend of h3 left in h2's /services (dead-host).
 * --reuse runs on guests a previous run (or the VM test with BERTH_VM_CLUSTER_REUSE) left up;
 * --keep leaves them up. Prints a JSON report and writes .bench/cluster.json.
 */
import fs from 'node:fs';
import path from 'node:path';
import { agentCmd, clusterDown, clusterHosts, clusterSetup, clusterUp, GUEST_MEM, TCG_LEASE_TTL_S } from '../../test/vm/cluster';
import { LEASE_TTL_S } from '../../src/cluster/store';
import { ENSURE_TEST_IMAGE, until, vmDown, vmJson, vmOk, vmSh } from '../../test/vm/vm';
import { buildTestBinaries } from '../../test/helpers/images';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
}
const flag = (name: string) => process.argv.includes(`--${name}`);

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

/**
 * Guest script: a fake engine with N containers on POOL (x.y.0.0/16), socket at
 * /run/berth-fake/engine.sock (FakeEngine.start(dir) listens on dir/engine.sock); service names `fk<host>-<j>`, so each host's are its own and the
 * cluster has hosts x N services.
 */
function fakeEngineScript(n: number, pool: string, host: number): string {
  const [a, b] = pool.split('.');
  return `mkdir -p /run/berth-fake; cat > /run/berth-fake/engine.js <<'JS'
const { FakeEngine } = require('/berth/dist/test/helpers/fake-engine.js');
(async () => {
  const e = await FakeEngine.start('/run/berth-fake');
  e.recordRequests = false;
  e.networks = [{ Id: 'n1', Name: 'bench-fake', IPAM: { Config: [{ Subnet: '${a}.${b}.0.0/16' }] } }];
  for (let j = 0; j < ${n}; j++) {
    e.add('c' + j.toString(16).padStart(63, '0'), 'fake-' + j, { Labels: { 'berth.service': 'fk${host}-' + j, 'berth.ports': '80:8080' } }, undefined, '${a}.${b}.' + ((j + 2) >> 8) + '.' + ((j + 2) & 255));
  }
  console.log(e.dockerHost);
})();
JS
systemd-run --unit berth-bench-engine --collect node /run/berth-fake/engine.js >/dev/null
for i in $(seq 120); do [ -S /run/berth-fake/engine.sock ] && break; sleep 0.5; done
[ -S /run/berth-fake/engine.sock ] || { echo "the fake engine did not listen on /run/berth-fake/engine.sock" >&2; exit 1; }`;
}

async function main(): Promise<void> {
  const hosts = clusterHosts();
  const [h1, h2, h3] = hosts;
  const samples = Number(arg('samples', '20'));
  const services = Number(arg('services', '1000'));
  const t0 = Date.now();
  const report: Record<string, unknown> = { when: new Date().toISOString(), conditions: `three TCG guests (1 vCPU, ${GUEST_MEM} each) on a 2-core host shared with other sessions; see README` };
  await buildTestBinaries();
  let image: string;
  if (flag('reuse')) {
    image = (await vmOk(h1.name, ENSURE_TEST_IMAGE, 600000)).trim().split('\n').pop() ?? '';
  } else {
    const ups = await clusterUp(hosts);
    image = await clusterSetup(hosts, ups.some((l) => /accel tcg/.test(l)) ? TCG_LEASE_TTL_S : LEASE_TTL_S);
  }
  report.loadavg = fs.readFileSync('/proc/loadavg', 'utf8').trim();

  // 1. event on h1 -> h2's VIP serves the new backend.
  const lat = await vmJson<{ startMs: number; servedMs: number; ms: number }[]>(h1.name, agentCmd(['serve-latency', 'lat', '80', h2.agent, String(samples), image]), 3600000);
  const ok = lat.filter((x) => x.ms >= 0).map((x) => x.ms);
  report.eventToVip = { samples: lat.length, served: ok.length, p50Ms: pct(ok, 50), p99Ms: pct(ok, 99), maxMs: Math.max(...ok), all: ok };
  console.log(JSON.stringify(report.eventToVip));

  // 2. RSS and CPU with 3 hosts x N (fake) services.
  const pools = hosts.map((_, i) => `172.${27 + i + 1}.0.0`);
  await Promise.all(hosts.map((h, i) => vmOk(h.name, `systemctl stop berthd; ${fakeEngineScript(services, pools[i], i + 1)}`, 300000)));
  const startAt = Date.now();
  await Promise.all(hosts.map((h) => vmOk(h.name, 'systemd-run --unit berth-bench-d --collect /usr/local/bin/berthd --docker-host unix:///run/berth-fake/engine.sock >/dev/null', 60000)));
  const total = services * hosts.length;
  const perHost: Record<string, unknown> = {};
  await Promise.all(hosts.map(async (h) => {
    await until(`${h.name} merged ${total} services`, async () => {
      // /services is pretty-printed JSON: one `"kind": "service"` line per service. Polled every
      // 15 s (each answer is ~1 MB of JSON that berthd builds: CPU the measurement adds).
      const r = await vmSh(h.name, "printf 'GET /services HTTP/1.0\\r\\n\\r\\n' | socat -t 60 - UNIX-CONNECT:/run/berth/berth.sock | grep -c '\"kind\": \"service\"'", 120000);
      return Number(r.stdout.trim()) >= total;
    }, 1800000, 15000);
    const convergedS = (Date.now() - startAt) / 1000;
    const proc = async () => {
      const out = await vmOk(h.name, 'pid=$(systemctl show -p MainPID --value berth-bench-d); grep VmRSS /proc/$pid/status | awk "{print \\$2}"; awk "{print \\$14+\\$15}" /proc/$pid/stat; getconf CLK_TCK');
      const [rssKb, ticks, hz] = out.trim().split('\n').map(Number);
      return { rssMb: rssKb / 1024, cpuS: ticks / hz };
    };
    const a = await proc();
    await new Promise((r) => setTimeout(r, 60000));
    const b = await proc();
    perHost[h.name] = { convergedS, rssMbConverged: a.rssMb, cpuSToConverge: a.cpuS, rssMbAfter60s: b.rssMb, cpuPctSteady: ((b.cpuS - a.cpuS) / 60) * 100 };
  }));
  report.scale = { servicesPerHost: services, totalServices: total, containers: 'fake (test/helpers/fake-engine.ts), 1 per service', perHost };
  console.log(JSON.stringify(report.scale));
  await Promise.all(hosts.map((h) => vmOk(h.name, 'systemctl stop berth-bench-d berth-bench-engine; rm -rf /run/berth-fake; systemctl start berthd', 300000)));

  // 3. a dead host's backends: h3 powered off, observed on h2.
  await vmOk(h3.name, 'docker rm -f dead-1 >/dev/null 2>&1; ' + `docker run -d --init --name dead-1 --label berth.service=dead --label berth.ports=80:8080 ${image} berth-tcp-echo 8080 --tag dead-1 >/dev/null`);
  await until('h2 lists h3\'s backend', async () => (await vmSh(h2.name, "printf 'GET /services HTTP/1.0\\r\\n\\r\\n' | socat -t 30 - UNIX-CONNECT:/run/berth/berth.sock | grep -c dead-1")).stdout.trim() !== '0', 300000, 3000);
  await vmOk(h2.name, `rm -f /tmp/dead.json /tmp/dead.ready; (setsid ${agentCmd(['dead-host', h3.agent, h2.agent, h3.name, '120000', '/tmp/dead.ready'])} > /tmp/dead.json 2>/tmp/dead.err &)`);
  await until('the dead-host watcher is armed', async () => (await vmSh(h2.name, 'test -e /tmp/dead.ready && echo yes')).stdout.includes('yes'), 180000, 2000);
  await vmDown(h3.name);
  let dead: unknown = null;
  await until('h2 dropped h3', async () => {
    const r = await vmSh(h2.name, 'cat /tmp/dead.json');
    if (r.stdout.trim().endsWith('}')) dead = JSON.parse(r.stdout);
    return dead !== null;
  }, 180000, 2000);
  report.deadHost = dead;
  console.log(JSON.stringify(dead));
  report.wallS = (Date.now() - t0) / 1000;
  fs.mkdirSync('.bench', { recursive: true });
  fs.writeFileSync(path.join('.bench', 'cluster.json'), JSON.stringify(report, null, 2));
  console.log(JSON.stringify(report, null, 2));
  if (!flag('keep')) await clusterDown(hosts);
}

main().catch(async (e: Error) => {
  console.error(e.stack);
  if (!flag('keep')) await clusterDown(clusterHosts());
  process.exit(1);
});
