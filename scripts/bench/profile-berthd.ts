/**
 * Profile the real berthd at size against the fake engine (the cold scenario's set-up, one run):
 *
 *   flock /tmp/berth-host.lock node dist/scripts/bench/profile-berthd.js --services 10000 \
 *     [--backends 4] [--events 21] [--cpu-prof DIR] [--heap-prof DIR] [--heap-snapshot FILE]
 *     [--node-args '--max-semi-space-size=4 ...'] [--idle-seconds N] [--smaps]
 *     [--resync-interval S] [--churn N] [--daemon OTHER_CHECKOUT/dist/berthd.js]
 *
 * berthd runs with node's --cpu-prof / --heap-prof (written to DIR when it exits on SIGTERM at
 * the end), and --heap-snapshot writes a heap snapshot once it is ready (SIGPWR through
 * --heapsnapshot-signal). Prints spawn → ready, berthd's first reconcile, RSS and the event →
 * maps samples as one JSON line, with berthd's own CPU time at ready (/proc) and, where berthd logs
 * them (`start-up phases`, util/phases.ts), its start-up phases: per phase the wall and CPU ms it
 * took since the previous mark (CPU is what to compare on a busy machine). --churn N then sends N
 * more events at ~500/s (the cold scenario's tail) and prints RSS, smaps (with --smaps) and V8's
 * heap spaces (berthd's /metrics) 0.5 s after the last is applied, as the bench measures RSS after
 * its 10,000 events; --idle-seconds samples after that. Open the .cpuprofile/.heapprofile in Chrome DevTools, or
 * summarise them with `node dist/scripts/bench/profile-summary.js FILE`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { FakeEngine } from '../../test/helpers/fake-engine';
import { Berthd, sleep } from '../../test/helpers/berthd';
import { getJson, getText } from '../../src/api/server';
import { RANGES, nowMs } from './lib/util';

interface StatusLike {
  maps: { services: number; backends: number } | null;
  lastReconcile: { durationMs: number } | null;
  events?: { applied: number; recentMs: number[] };
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

/**
 * Resident MB of a process by kind of mapping (/proc/PID/smaps): malloc's brk heap ("[heap]"),
 * other anonymous mappings (V8's heap pages, malloc arenas and large mmap'd blocks), and files
 * (node's binary, shared libraries, the addon).
 */
function smapsMb(pid: number): Record<string, number | [number, number][]> {
  const out: Record<string, number> = { heap: 0, anon: 0, file: 0 };
  // The largest anonymous mappings: [size MB, resident MB] (V8's pages are 256 KiB each; glibc's
  // thread arenas are 64 MiB reservations; node's own mmaps sit between).
  const anon: [number, number][] = [];
  let kind = 'anon';
  let size = 0;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (head) {
      const name = head[3];
      kind = name === '[heap]' ? 'heap' : name === '' || name.startsWith('[') ? 'anon' : 'file';
      size = (parseInt(head[2], 16) - parseInt(head[1], 16)) / 1048576;
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) {
      out[kind] += Number(rss[1]) / 1024;
      if (kind === 'anon') anon.push([Math.round(size * 10) / 10, Math.round(Number(rss[1]) / 102.4) / 10]);
    }
  }
  for (const k of Object.keys(out)) out[k] = Math.round(out[k]);
  return { ...out, anonTop: anon.sort((a, b) => b[1] - a[1]).slice(0, 8) };
}

/** User + system CPU time of a process so far, ms (/proc/PID/stat, clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) * 10;
}

function rssMb(pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(s)?.[1] ?? NaN) / 1024;
}

/**
 * berthd's `start-up phases` log line (util/phases.ts) as [name, wall ms, CPU ms] per phase, each
 * the time since the previous mark (the first: since the process started); null when this
 * berthd does not log it (an older checkout) within 10 s of being ready.
 */
async function startupPhases(logFile: string): Promise<{ phases: [string, number, number][]; heap?: Record<string, [number, number]> } | null> {
  for (let i = 0; i < 100; i++) {
    for (const line of fs.readFileSync(logFile, 'utf8').split('\n')) {
      if (!line.includes('"start-up phases"')) continue;
      const rec = JSON.parse(line) as { phases: { name: string; wallMs: number; cpuMs: number }[]; heap?: { space: string; usedMb: number; committedMb: number }[] };
      // V8's heap spaces at READY (newer berthd only): space → [used MB, committed MB].
      const heap = rec.heap ? Object.fromEntries(rec.heap.map((h) => [h.space, [h.usedMb, h.committedMb] as [number, number]])) : undefined;
      let wall = 0, cpu = 0;
      return { phases: rec.phases.map((m) => {
        const row: [string, number, number] = [m.name, m.wallMs - wall, m.cpuMs - cpu];
        wall = m.wallMs;
        cpu = m.cpuMs;
        return row;
      }), ...(heap ? { heap } : {}) };
    }
    await sleep(100);
  }
  return null;
}

/** V8's heap spaces from berthd's /metrics (prom-client's nodejs_heap_space_size_*): space → [used MB, committed MB]. */
async function heapSpaces(socket: string): Promise<Record<string, [number, number]>> {
  const out: Record<string, [number, number]> = {};
  for (const line of (await getText(socket, '/metrics', 30000)).split('\n')) {
    const m = /^berthd_nodejs_heap_space_size_(used|total)_bytes\{space="(\w+)"\} (\d+)/.exec(line);
    if (!m) continue;
    const mb = Math.round(Number(m[3]) / 104857.6) / 10;
    const row = (out[m[2]] ??= [0, 0]);
    row[m[1] === 'used' ? 0 : 1] = mb;
  }
  return out;
}

async function main(): Promise<void> {
  const services = Number(arg('services') ?? 10000);
  const backends = Number(arg('backends') ?? 4);
  const nEvents = Number(arg('events') ?? 21);
  const cpuDir = arg('cpu-prof');
  const heapDir = arg('heap-prof');
  const snapFile = arg('heap-snapshot');
  const engine = await FakeEngine.start();
  engine.recordRequests = false;
  engine.networks = [{ Id: 'n1', Name: 'bench-syn', IPAM: { Config: [{ Subnet: '127.1.0.0/16' }] } }];
  const n = services * backends;
  const ipOf = (j: number) => `127.1.${(j + 2) >> 8}.${(j + 2) & 255}`;
  const idOf = (j: number) => `c${j.toString(16).padStart(63, '0')}`;
  for (let j = 0; j < n; j++) {
    const svc = Math.floor(j / backends);
    engine.add(idOf(j), `svc-${svc}-${j % backends}`, { Labels: { 'berth.service': `svc-${svc}`, 'berth.ports': '80:8080' } }, '2026-01-01T00:00:00.000000000Z', ipOf(j));
  }
  const nodeArgs = [
    ...(cpuDir ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(cpuDir)}`] : []),
    ...(heapDir ? ['--heap-prof', `--heap-prof-dir=${path.resolve(heapDir)}`] : []),
    ...(snapFile ? ['--heapsnapshot-signal=SIGPWR'] : []),
    ...(arg('node-args') ?? '').split(' ').filter(Boolean),
  ];
  const d = new Berthd({
    name: 'bench-prof', serviceCidr: RANGES.cold, serviceCidr6: RANGES.cold6,
    extraArgs: ['--docker-host', engine.dockerHost, '--envoy-path', '/nonexistent/envoy', '--resync-interval', arg('resync-interval') ?? '3600', '--log-level', 'info'],
    nodeArgs,
    ...(arg('daemon') ? { daemon: path.resolve(arg('daemon')!) } : {}),
  });
  const status = () => getJson<StatusLike>(d.socket, '/status', 60000);
  try {
    const t0 = nowMs();
    await d.start(180000);
    let st = await status();
    while (!st.maps || st.maps.backends < n) {
      if (nowMs() - t0 > 180000) throw new Error('not ready after 180 s');
      await sleep(10);
      st = await status();
    }
    const readyMs = nowMs() - t0;
    const pid = d.proc!.pid!;
    const readyCpuMs = cpuMs(pid);
    const phases = await startupPhases(d.logFile);
    const readyRss = rssMb(pid);
    const readySmaps = process.argv.includes('--smaps') ? smapsMb(pid) : undefined;
    if (snapFile) {
      const before = new Set(fs.readdirSync(process.cwd()));
      d.proc!.kill('SIGPWR');
      await sleep(20000);
      const made = fs.readdirSync(process.cwd()).filter((f) => f.endsWith('.heapsnapshot') && !before.has(f));
      if (made[0]) fs.renameSync(made[0], snapFile);
    }
    let nextIp = n;
    const samples: number[] = [];
    for (let k = 0; k < nEvents; k++) {
      const before = (await status()).events?.applied ?? 0;
      const c = engine.containers.get(idOf(k * backends))!;
      c.NetworkSettings.Networks.bridge.IPAddress = ipOf(nextIp++);
      engine.event({ Type: 'container', Action: 'start', Actor: { ID: c.Id, Attributes: {} }, timeNano: Date.now() * 1e6 });
      for (let i = 0; i < 4000; i++) {
        await sleep(2);
        const e = (await status()).events;
        if (e && e.applied > before) {
          samples.push(e.recentMs[e.recentMs.length - 1]);
          break;
        }
      }
    }
    const afterEventsRss = rssMb(pid);
    const churnN = Number(arg('churn') ?? 0);
    let churn: Record<string, unknown> | undefined;
    if (churnN > 0) {
      // ~500 events/s, each a container's new address, round robin (the bench's churn tail).
      const before = (await status()).events?.applied ?? 0;
      const tc = nowMs();
      let sent = 0;
      while (sent < churnN) {
        const due = Math.min(churnN, Math.floor(((nowMs() - tc) / 1000) * 500) + 1);
        for (; sent < due; sent++) {
          const c = engine.containers.get(idOf((sent * 7919) % n))!;
          c.NetworkSettings.Networks.bridge.IPAddress = ipOf(nextIp++);
          engine.event({ Type: 'container', Action: 'start', Actor: { ID: c.Id, Attributes: {} }, timeNano: Date.now() * 1e6 });
        }
        await sleep(5);
      }
      for (let i = 0; i < 3000 && ((await status()).events?.applied ?? 0) - before < sent; i++) await sleep(10);
      const sentMs = nowMs() - tc;
      await sleep(500);
      churn = { events: sent, ms: Math.round(sentMs), rssMb: Math.round(rssMb(pid)), ...(process.argv.includes('--smaps') ? { smaps: smapsMb(pid) } : {}), heap: await heapSpaces(d.socket) };
    }
    // What one /status answer costs berthd at this size (20 in a row, median ms).
    const statusMs: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t = nowMs();
      await status();
      statusMs.push(nowMs() - t);
    }
    statusMs.sort((a, b) => a - b);
    // RSS once berthd has been left alone for a while (V8's memory reducer runs on an idle heap).
    // (With --resync-interval: berthd's CPU over the idle time is what its periodic full lists,
    // with nothing changed, cost.)
    const idleS = Number(arg('idle-seconds') ?? 0);
    const cpuBefore = cpuMs(pid);
    const idleRss: number[] = [];
    for (let i = 0; i < idleS; i++) {
      await sleep(1000);
      idleRss.push(Math.round(rssMb(pid)));
    }
    const idleCpuMs = cpuMs(pid) - cpuBefore;
    const idleEnd = idleS > 0 ? { ...(process.argv.includes('--smaps') ? { smaps: smapsMb(pid) } : {}), heap: await heapSpaces(d.socket) } : undefined;
    console.log(JSON.stringify({
      services, containers: n, readyMs: Math.round(readyMs), readyCpuMs, ...(phases ?? {}), reconcileMs: st.lastReconcile?.durationMs, readyRssMb: Math.round(readyRss),
      afterEventsRssMb: Math.round(afterEventsRss), ...(churn ? { churn } : {}), ...(readySmaps ? { readySmaps } : {}), statusMs: Math.round(statusMs[10] * 10) / 10, ...(idleS > 0 ? { idleRssMb: idleRss, idleCpuMs, idleEnd } : {}), eventMs: samples,
    }));
  } finally {
    await d.cleanup().catch((e: Error) => console.error(e.message));
    await engine.close();
  }
}

main().catch((e: Error) => {
  console.error(e.stack);
  process.exit(1);
});
