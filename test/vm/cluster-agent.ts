/**
 * Runs inside the guests of the cluster VM test and benchmark (node builtins only; started from
 * the read-only checkout at /berth/dist). Timing across hosts needs one clock: a guest's clock
 * cannot be compared with another's to the millisecond under TCG, so every measurement is taken
 * on ONE guest, which reads the other guests' state through their agents over the private
 * segment (a reply received at local time t shows the peer's state at some instant before t, so
 * each latency below is an upper bound).
 *
 *   node cluster-agent.js serve ADDR PORT
 *       HTTP/JSON on ADDR:PORT (the segment address; test-only):
 *         GET /time                      {ms}: this guest's wall clock
 *         GET /services                  berthd's /services (admin socket)
 *         GET /probe?mode=tcp|udp&addr=VIP&port=P&count=N&timeoutMs=T
 *                                        N connects/datagrams from this guest (its berth socket
 *                                        LB applies): [{ok, tag, ms, error}]
 *   node cluster-agent.js gone CONTAINER 'CMD' AGENT...
 *       polls each AGENT's /services until CONTAINER is listed there, runs CMD (e.g. `docker
 *       stop web-2`) here, takes the time the container stopped from this Docker (State.
 *       FinishedAt) and the time each AGENT's answer first lacked CONTAINER:
 *       {dieMs, goneMs: {AGENT: ms after the stop}, pollMs: {AGENT: that poll's round trip}}
 *   node cluster-agent.js dead-host VICTIM_AGENT SELF_AGENT NODE TIMEOUT_MS [READY_FILE]
 *       polls VICTIM_AGENT /time (alive) and SELF_AGENT /services; once the victim answered and
 *       NODE's backends are listed it is armed (writes READY_FILE: power the victim off only
 *       then), and then waits up to TIMEOUT_MS for no backend of NODE to be left; prints
 *       {sawBackends, armedAt, lastAliveMs, goneMs, dropMs = goneMs - lastAliveMs}
 *   node cluster-agent.js etcd-status ENDPOINT...
 *       etcd's member id and leader per endpoint (JSON gateway; the guest has no etcdctl)
 *   node cluster-agent.js serve-latency SERVICE PORT B_AGENT N IMAGE
 *       N times: run a new container of SERVICE here (tag = its name) and probe B_AGENT's VIP until
 *       the new tag answers: [{startMs, servedMs, ms}] (the previous container is removed first,
 *       and B has dropped it, so B's VIP has exactly the new backend to find)
 */
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';

const ADMIN_SOCKET = '/run/berth/berth.sock';

interface ProbeResult { ok: boolean; tag: string | null; ms: number; error: string | null }
interface ServiceView { name: string; kind: string; vip: string; backends: { container: string; node?: string }[] }

function admin(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath: ADMIN_SOCKET, path, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error(`admin ${path}: timeout`)));
    req.on('error', reject);
  });
}

/** GET http://agent/path as JSON, bounded by timeoutMs. */
export function getJson<T>(agent: string, path: string, timeoutMs = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = http.get(`http://${agent}${path}`, { timeout: timeoutMs }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => {
        try {
          resolve(JSON.parse(body) as T);
        } catch (e) {
          reject(new Error(`${agent}${path}: ${(e as Error).message}: ${body.slice(0, 200)}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${agent}${path}: timeout`)));
    req.on('error', reject);
  });
}

function probeTcp(addr: string, port: number, timeoutMs: number): Promise<ProbeResult> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    let data = '';
    let done = false;
    const s = net.connect({ host: addr, port });
    const end = (ok: boolean, error: string | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ ok, tag: ok ? data.split('\n')[0] : null, ms: performance.now() - t0, error });
    };
    const timer = setTimeout(() => end(false, 'timeout'), timeoutMs);
    // berth-tcp-echo writes "TAG\n" first.
    s.on('data', (d: Buffer) => {
      data += d.toString();
      if (data.includes('\n')) end(true, null);
    });
    s.on('error', (e: NodeJS.ErrnoException) => end(false, e.code ?? e.message));
    s.on('close', () => end(data.includes('\n'), data.includes('\n') ? null : 'closed'));
  });
}

function probeUdp(addr: string, port: number, timeoutMs: number): Promise<ProbeResult> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    let done = false;
    const end = (ok: boolean, tag: string | null, error: string | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.close();
      resolve({ ok, tag, ms: performance.now() - t0, error });
    };
    const timer = setTimeout(() => end(false, null, 'timeout'), timeoutMs);
    // berth-udp-echo answers "TAG:payload".
    s.on('message', (m) => end(true, m.toString().split(':')[0], null));
    s.on('error', (e: NodeJS.ErrnoException) => end(false, null, e.code ?? e.message));
    s.connect(port, addr, () => s.send('ping'));
  });
}

async function probe(mode: string, addr: string, port: number, count: number, timeoutMs: number): Promise<ProbeResult[]> {
  const out: ProbeResult[] = [];
  for (let i = 0; i < Math.min(count, 5000); i++) out.push(await (mode === 'udp' ? probeUdp : probeTcp)(addr, port, timeoutMs));
  return out;
}

function serve(addr: string, port: number): void {
  http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://agent');
    const reply = (code: number, body: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(typeof body === 'string' ? body : JSON.stringify(body));
    };
    (async () => {
      if (u.pathname === '/time') return reply(200, { ms: Date.now() });
      if (u.pathname === '/services') return reply(200, await admin('/services'));
      if (u.pathname === '/status') return reply(200, await admin('/status'));
      if (u.pathname === '/probe') {
        const q = u.searchParams;
        return reply(200, await probe(q.get('mode') ?? 'tcp', q.get('addr') ?? '', Number(q.get('port')), Number(q.get('count') ?? 1), Number(q.get('timeoutMs') ?? 2000)));
      }
      reply(404, { error: `no ${u.pathname}` });
    })().catch((e: Error) => reply(500, { error: e.message }));
  }).listen(port, addr);
}

function sh(cmd: string): Promise<string> {
  return new Promise((resolve, reject) => execFile('bash', ['-c', cmd], { timeout: 120000 }, (e, stdout, stderr) => (e ? reject(new Error(`${cmd}: ${stderr || e.message}`)) : resolve(stdout))));
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * When Docker says `container` started or stopped (its State.StartedAt / FinishedAt, this
 * guest's clock, ms). Read after the fact: no event subscription to race with.
 */
async function stateTime(container: string, field: 'StartedAt' | 'FinishedAt'): Promise<number> {
  const out = (await sh(`docker inspect -f '{{.State.${field}}}' ${container}`)).trim();
  const ms = Date.parse(out);
  if (!Number.isFinite(ms) || ms <= 0) throw new Error(`docker inspect ${container}: ${field} is '${out}'`);
  return ms;
}

function hasContainer(svcs: ServiceView[], container: string): boolean {
  return svcs.some((s) => s.backends.some((b) => b.container === container));
}

async function gone(container: string, cmd: string, agents: string[]): Promise<void> {
  // Each watcher first sees the container listed, then notes when the first answer without it
  // arrived: the peer had dropped it by then, so goneMs is an upper bound; pollMs is that poll's
  // round trip (how much of goneMs may be the measurement itself).
  const goneAt: Record<string, { at: number; pollMs: number }> = {};
  const seen = new Set<string>();
  let stop = false;
  const watchers = agents.map(async (a) => {
    while (!stop) {
      const sent = Date.now();
      const svcs = await getJson<ServiceView[]>(a, '/services', 3000).catch(() => null);
      const t = Date.now();
      if (svcs && hasContainer(svcs, container)) seen.add(a);
      else if (svcs && seen.has(a)) {
        goneAt[a] = { at: t, pollMs: t - sent };
        return;
      }
      // 200 ms between polls, not 10: each poll costs the peer's agent and berthd CPU, and back
      // to back they kept the 1-vCPU TCG peers busy during the very change being timed (poll
      // round trips of 1-3.5 s in the 2026-12-01 runs). The error this adds is at most 200 ms
      // of the 10 s scaled bound, and goneMs stays an upper bound.
      await sleep(200);
    }
  });
  for (let i = 0; i < 300 && seen.size < agents.length; i++) await sleep(100);
  if (seen.size < agents.length) throw new Error(`${container} is not listed on ${agents.filter((a) => !seen.has(a)).join(', ')} before ${cmd}`);
  await sh(cmd);
  const dieMs = await stateTime(container, 'FinishedAt');
  await Promise.race([Promise.all(watchers), sleep(30000)]);
  stop = true;
  const goneMs: Record<string, number | null> = {};
  const pollMs: Record<string, number | null> = {};
  for (const a of agents) {
    goneMs[a] = goneAt[a] ? goneAt[a].at - dieMs : null;
    pollMs[a] = goneAt[a]?.pollMs ?? null;
  }
  process.stdout.write(JSON.stringify({ dieMs, goneMs, pollMs }));
}

async function deadHost(victim: string, self: string, node: string, timeoutMs: number, readyFile: string | null): Promise<void> {
  let lastAliveMs = 0;
  let goneMs = 0;
  let stop = false;
  // Timeouts and poll gaps sized for 1-vCPU TCG guests: an answer takes 1-3.5 s there under
  // load (2026-12-01 runs), and a poll that times out is a blind spot, not a measurement.
  const alive = (async () => {
    while (!stop) {
      const r = await getJson<{ ms: number }>(victim, '/time', 3000).catch(() => null);
      if (r) lastAliveMs = Date.now();
      await sleep(100);
    }
  })();
  let sawBackends = false;
  let armedAt = 0;
  const begin = Date.now();
  // Armed once the victim answered and its backends were listed here: only then is there a
  // "last answer" to measure from (the 06:58 run powered the victim off before the agent's own
  // start-up had finished, and measured nothing). The caller waits for readyFile.
  while (armedAt === 0 ? Date.now() - begin < timeoutMs : Date.now() - armedAt < timeoutMs) {
    const svcs = await getJson<ServiceView[]>(self, '/services', 10000).catch(() => null);
    const t = Date.now();
    if (svcs) {
      const has = svcs.some((s) => s.backends.some((b) => b.node === node));
      if (has) sawBackends = true;
      if (armedAt === 0 && sawBackends && lastAliveMs > 0) {
        armedAt = t;
        if (readyFile) fs.writeFileSync(readyFile, `${t}\n`);
      }
      if (armedAt > 0 && !has) {
        goneMs = t;
        break;
      }
    }
    await sleep(200);
  }
  stop = true;
  await alive;
  process.stdout.write(JSON.stringify({ sawBackends, armedAt, lastAliveMs, goneMs, dropMs: goneMs ? goneMs - lastAliveMs : null }));
}

async function serveLatency(service: string, port: number, bAgent: string, n: number, image: string): Promise<void> {
  const out: { startMs: number; servedMs: number; ms: number }[] = [];
  let prev: string | null = null;
  for (let i = 0; i < n; i++) {
    if (prev) await sh(`docker rm -f ${prev} >/dev/null`);
    // B has dropped the previous backend: its /services lists none for SERVICE.
    for (let k = 0; k < 600; k++) {
      const svcs = await getJson<ServiceView[]>(bAgent, '/services', 3000).catch(() => null);
      if (svcs && !(svcs.find((s) => s.name === service)?.backends.length)) break;
      await sleep(50);
    }
    const name = `${service}-${process.pid}-${i}`;
    await sh(`docker run -d --init --name ${name} --label berth.service=${service} --label berth.ports=${port}:8080 ${image} berth-tcp-echo 8080 --tag ${name} >/dev/null`);
    const startMs = await stateTime(name, 'StartedAt');
    let servedMs = 0;
    const deadline = Date.now() + 60000;
    while (Date.now() < deadline) {
      const svcs = await getJson<ServiceView[]>(bAgent, '/services', 3000).catch(() => null);
      const vip = svcs?.find((s) => s.name === service)?.vip;
      if (vip) {
        const r = await getJson<ProbeResult[]>(bAgent, `/probe?mode=tcp&addr=${vip}&port=${port}&count=1&timeoutMs=1000`, 5000).catch(() => []);
        if (r[0]?.tag === name) {
          servedMs = Date.now();
          break;
        }
      }
      await sleep(10);
    }
    out.push({ startMs, servedMs, ms: servedMs ? servedMs - startMs : -1 });
    prev = name;
  }
  if (prev) await sh(`docker rm -f ${prev} >/dev/null`);
  process.stdout.write(JSON.stringify(out));
}

/**
 * etcd's own view per endpoint, over its JSON gateway (the guest has no etcdctl):
 * [{endpoint, ok, member, leader, error}] (ids as strings).
 */
async function etcdStatus(eps: string[]): Promise<void> {
  const one = (ep: string) => new Promise<Record<string, unknown>>((resolve) => {
    const req = http.request(`${ep}/v3/maintenance/status`, { method: 'POST', timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => {
        try {
          const j = JSON.parse(body) as { header?: { member_id?: string }; leader?: string; error?: string };
          resolve({ endpoint: ep, ok: res.statusCode === 200 && !!j.leader && j.leader !== '0', member: j.header?.member_id ?? null, leader: j.leader ?? null, error: j.error ?? null });
        } catch (e) {
          resolve({ endpoint: ep, ok: false, error: (e as Error).message });
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ endpoint: ep, ok: false, error: e.message }));
    req.end('{}');
  });
  process.stdout.write(JSON.stringify(await Promise.all(eps.map(one))));
}

async function main(): Promise<void> {
  const [cmd, ...a] = process.argv.slice(2);
  if (cmd === 'serve') return serve(a[0], Number(a[1]));
  if (cmd === 'gone') return gone(a[0], a[1], a.slice(2));
  if (cmd === 'dead-host') return deadHost(a[0], a[1], a[2], Number(a[3]), a[4] ?? null);
  if (cmd === 'serve-latency') return serveLatency(a[0], Number(a[1]), a[2], Number(a[3]), a[4]);
  if (cmd === 'etcd-status') return etcdStatus(a);
  throw new Error(`unknown command ${cmd}`);
}

if (require.main === module) {
  main().catch((e: Error) => {
    process.stderr.write(`${e.stack}\n`);
    process.exit(1);
  });
}
