/**
 * Scenario 2b, cold start at size and map write speed, interleaved per round:
 *   A  the real berthd (dist/berthd.js, the bundle) started against a fake Docker engine
 *      (test/helpers/fake-engine.ts) that lists S × B labelled containers: time from spawn until
 *      berthd is ready with every backend in the maps (list + inspects + model + maps), its RSS
 *      and CPU then, and one Docker event at that size (a container's new address);
 *   B  a fresh berthd-like process (cold-child.js) doing only berthd's reconcile on a synthetic
 *      snapshot already in memory (no Docker API): the phase breakdown, the addon's writes/s;
 *   C  the same number of map updates written with `bpftool batch file` into a hash map of the
 *      services map's shape (key 24 B, value 8 B, BPF_F_NO_PREALLOC): the baseline writes/s.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cleanup } from '../lib/cleanup';
import { REPO, RANGES, log, nowMs, run } from '../lib/util';
import { FakeEngine } from '../../../test/helpers/fake-engine';
import { Berthd, sleep } from '../../../test/helpers/berthd';
import { getJson } from '../../../src/api/server';

export interface ColdConfig {
  rounds: number;
  /** The largest size (the in-memory reconcile and the churn run at it). */
  services: number;
  /** Sizes the real berthd is started at, interleaved per round (default: just `services`). */
  sizes?: number[];
  backends: number;
  /** Churn at the largest size: events/s and seconds, then events up to `churnTotal` (RSS after). */
  churn?: { perSecond: number; seconds: number; total: number } | null;
}

export interface ColdRun {
  services: number;
  backendsTotal: number;
  labelErrors: number;
  serviceErrors: number;
  firstError: string | null;
  loadMs: number;
  modelMs: number;
  openMs: number;
  syncMs: number;
  totalMs: number;
  updates: number;
  writesPerS: number;
  counts: { services: number; backends: number };
  resyncMs: number;
  resyncUpdates: number;
  cpuMs: number;
  rssMb: number;
  heapMb: number;
  maxRssMb: number;
  /** RSS after loading the modules (GC'd), after building the snapshot (GC'd), after everything (GC'd). */
  rssLoadedMb: number;
  rssSnapshotMb: number;
  rssAfterGcMb: number;
}

/** Churn at size: events at a fixed rate, each a container's new address. */
export interface ChurnRun {
  perSecond: number;
  seconds: number;
  sent: number;
  /** Event → maps over the churn (ms, from berthd's /status events.recentMs). */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** p99 of the first and the last third of the churn: a growing backlog shows as last ≫ first. */
  p99FirstThirdMs: number;
  p99LastThirdMs: number;
  /** Events sent but not yet applied, sampled every second: the largest, and at the end. */
  maxBacklog: number;
  endBacklog: number;
  /** Total events applied when RSS was read (churn + a faster run up to `total`). */
  totalEvents: number;
  rssAfterMb: number;
  /** RSS 3 s later: after berthd's collection once the events pause (1 s; util/quiet-collector.ts). */
  rssSettledMb: number;
}

/** The real berthd against the fake engine. */
export interface BerthdColdRun {
  services: number;
  containers: number;
  /** spawn → ready with every backend in the maps (node start-up included). */
  readyMs: number;
  /** berthd's own first reconcile (from its /status), and the fake engine's inspect calls. */
  reconcileMs: number;
  inspects: number;
  mapBackends: number;
  mapServiceEntries: number;
  rssMb: number;
  /** Peak RSS (VmHWM) up to ready. */
  hwmMb: number;
  /** CPU time (user + system) of berthd from spawn to ready. */
  cpuMs: number;
  /**
   * One Docker event (a container's address changed) → maps updated: median of `eventSamples`
   * events one at a time (berthd's own measure, /status events.recentMs: engine's event time →
   * its reconcile done), and the inspects they took.
   */
  eventMs: number;
  eventSamplesMs: number[];
  eventInspects: number;
  /** A container of a NEW service (a `docker run` at this size): event → maps, median of 5. */
  newServiceMs: number;
  /** The slowest /status answer from spawn to the end of the run (ms): how long berthd's event loop stalled at most. */
  statusMaxMs: number;
  churn: ChurnRun | null;
}

export interface BatchRun {
  entries: number;
  ms: number;
  writesPerS: number;
}

export interface ColdReport {
  status: 'ok' | 'not run' | 'failed';
  reason: string | null;
  services: number;
  backends: number;
  runs: ColdRun[];
  batch: BatchRun[];
  batchError: string | null;
  berthd: BerthdColdRun[];
  berthdError: string | null;
}

/** VmRSS/VmHWM (MB) and utime+stime (ms) of a process. */
function procUsage(pid: number): { rssMb: number; hwmMb: number; cpuMs: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  // Fields after the parenthesised command: utime and stime are the 12th and 13th (clock ticks, 100/s).
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { rssMb: kb('VmRSS') / 1024, hwmMb: kb('VmHWM') / 1024, cpuMs: (Number(f[11]) + Number(f[12])) * 10 };
}

interface StatusLike {
  ready: boolean;
  maps: { services: number; backends: number } | null;
  lastReconcile: { at: string; durationMs: number; sync: { updates: number } | null } | null;
  events?: { applied: number; recentMs: number[] };
}

function pct(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)];
}

/** A: the real berthd, cold, against a fake engine of services × backends containers. */
async function berthdColdStart(services: number, backends: number, churn: ColdConfig['churn']): Promise<BerthdColdRun> {
  const engine = await FakeEngine.start();
  engine.recordRequests = false;
  engine.networks = [{ Id: 'n1', Name: 'bench-syn', IPAM: { Config: [{ Subnet: '127.1.0.0/16' }] } }];
  const n = services * backends;
  const extraIps = 2 + 40 + (churn ? churn.total : 0);
  if (n + extraIps > 65000) throw new Error('at most 65,000 containers and event addresses (127.1.0.0/16)');
  const ipOf = (j: number) => `127.1.${(j + 2) >> 8}.${(j + 2) & 255}`;
  const idOf = (j: number) => `c${j.toString(16).padStart(63, '0')}`;
  for (let j = 0; j < n; j++) {
    const svc = Math.floor(j / backends);
    engine.add(idOf(j), `svc-${svc}-${j % backends}`, { Labels: { 'berth.service': `svc-${svc}`, 'berth.ports': '80:8080' } }, '2026-01-01T00:00:00.000000000Z', ipOf(j));
  }
  const d = new Berthd({
    name: 'bench-coldd', serviceCidr: RANGES.cold, serviceCidr6: RANGES.cold6,
    extraArgs: ['--docker-host', engine.dockerHost, '--envoy-path', '/nonexistent/envoy', '--resync-interval', '3600', '--log-level', 'info'],
  });
  const mark = cleanup.mark;
  cleanup.add('cold-start berthd', async () => {
    await d.cleanup().catch(() => undefined);
    await engine.close().catch(() => undefined);
  });
  // berthd answers /status from its event loop; at 10,000 services on a loaded machine a long
  // synchronous step (the first model build) can hold it for more than getJson's default 5 s,
  // which made the 10,000 column vanish ("did not answer /status within 5000 ms"). The bench
  // waits (up to 60 s) and reports the longest wait instead.
  let statusMaxMs = 0;
  // A reused keep-alive connection that berthd's server closes as the request goes out (its 5 s
  // keep-alive timer fires as soon as a long step lets the loop run) is reset: asked again.
  const status = async <T>(): Promise<T> => {
    for (let attempt = 1; ; attempt++) {
      const t = nowMs();
      try {
        const r = await getJson<T>(d.socket, '/status', 60000);
        statusMaxMs = Math.max(statusMaxMs, nowMs() - t);
        return r;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ECONNRESET' || attempt >= 3) throw e;
      }
    }
  };
  try {
    const t0 = nowMs();
    await d.start(180000);
    let st = await status<StatusLike>();
    // Ready means the first reconcile from the full list is in the maps.
    while (!st.maps || st.maps.backends < n) {
      if (nowMs() - t0 > 180000) throw new Error(`maps hold ${st.maps?.backends} of ${n} backends after 180 s`);
      await sleep(10);
      st = await status<StatusLike>();
    }
    const readyMs = nowMs() - t0;
    const use = procUsage(d.proc!.pid!);
    const inspects = engine.inspects;
    const events = async () => (await status<StatusLike>()).events ?? { applied: 0, recentMs: [] };
    let nextIp = n;
    /** Send one event for container j with a new address; resolves its event → maps ms. */
    const one = async (id: string, mutate: () => void): Promise<number> => {
      const before = (await events()).applied;
      mutate();
      engine.event({ Type: 'container', Action: 'start', Actor: { ID: id, Attributes: {} }, timeNano: Date.now() * 1e6 });
      for (let i = 0; i < 4000; i++) {
        await sleep(2);
        const e = await events();
        if (e.applied > before) return e.recentMs[e.recentMs.length - 1];
      }
      return NaN;
    };
    // Single events at this size: a container comes back with a new address (one at a time).
    const samples: number[] = [];
    for (let k = 0; k < 21; k++) {
      const c = engine.containers.get(idOf(k * backends))!;
      samples.push(await one(c.Id, () => {
        c.NetworkSettings.Networks.bridge.IPAddress = ipOf(nextIp++);
      }));
    }
    const eventInspects = engine.inspects - inspects;
    // `docker run` of a new service at this size (its VIP is placed, its entries written).
    const fresh: number[] = [];
    for (let k = 0; k < 5; k++) {
      const id = `d${k.toString(16).padStart(63, '0')}`;
      fresh.push(await one(id, () => engine.add(id, `new-${k}`, { Labels: { 'berth.service': `new-svc-${k}`, 'berth.ports': '80:8080' } }, '2026-01-01T00:00:01.000000000Z', ipOf(nextIp++))));
    }
    let churnRun: ChurnRun | null = null;
    if (churn) churnRun = await runChurn(churn, engine, d, events, idOf, ipOf, () => nextIp++, n);
    return {
      services, containers: n, readyMs, reconcileMs: st.lastReconcile?.durationMs ?? NaN, inspects,
      mapBackends: st.maps.backends, mapServiceEntries: st.maps.services, ...use,
      eventMs: pct(samples.slice(1), 0.5), eventSamplesMs: samples, eventInspects,
      newServiceMs: pct(fresh, 0.5), statusMaxMs, churn: churnRun,
    };
  } finally {
    await cleanup.unwindTo(mark);
  }
}

/**
 * Churn: `perSecond` events for `seconds` (each a container's new address, round robin over all
 * containers), backlog sampled every second; then events at ~500/s up to `total`, and RSS.
 */
async function runChurn(
  cfg: NonNullable<ColdConfig['churn']>, engine: FakeEngine, d: Berthd,
  events: () => Promise<{ applied: number; recentMs: number[] }>,
  idOf: (j: number) => string, ipOf: (j: number) => string, nextIp: () => number, n: number,
): Promise<ChurnRun> {
  const start = await events();
  let sent = 0;
  const send = () => {
    const c = engine.containers.get(idOf((sent * 7919) % n))!;
    c.NetworkSettings.Networks.bridge.IPAddress = ipOf(nextIp());
    engine.event({ Type: 'container', Action: 'start', Actor: { ID: c.Id, Attributes: {} }, timeNano: Date.now() * 1e6 });
    sent++;
  };
  const planned = cfg.perSecond * cfg.seconds;
  const t0 = nowMs();
  let maxBacklog = 0;
  let nextSample = t0 + 1000;
  while (sent < planned) {
    const due = Math.min(planned, Math.floor(((nowMs() - t0) / 1000) * cfg.perSecond) + 1);
    while (sent < due) send();
    if (nowMs() >= nextSample) {
      nextSample += 1000;
      const e = await events();
      maxBacklog = Math.max(maxBacklog, sent - (e.applied - start.applied));
    } else {
      await sleep(2);
    }
  }
  let e = await events();
  const endBacklog = sent - (e.applied - start.applied);
  for (let i = 0; i < 1000 && e.applied - start.applied < sent; i++) {
    await sleep(10);
    e = await events();
  }
  const lat = e.recentMs.slice(-(e.applied - start.applied));
  const third = Math.floor(lat.length / 3);
  // Up to `total` events at ~500/s, then RSS (after everything settled).
  const t1 = nowMs();
  while (sent < cfg.total) {
    const due = Math.min(cfg.total, planned + Math.floor(((nowMs() - t1) / 1000) * 500) + 1);
    while (sent < due) send();
    await sleep(5);
  }
  for (let i = 0; i < 3000; i++) {
    e = await events();
    if (e.applied - start.applied >= sent) break;
    await sleep(10);
  }
  await sleep(500);
  const rssAfterMb = procUsage(d.proc!.pid!).rssMb;
  await sleep(2500);
  return {
    perSecond: cfg.perSecond, seconds: cfg.seconds, sent: planned,
    p50Ms: pct(lat, 0.5), p99Ms: pct(lat, 0.99), maxMs: Math.max(...lat),
    p99FirstThirdMs: pct(lat.slice(0, third), 0.99), p99LastThirdMs: pct(lat.slice(-third), 0.99),
    maxBacklog, endBacklog, totalEvents: e.applied - start.applied,
    rssAfterMb, rssSettledMb: procUsage(d.proc!.pid!).rssMb,
  };
}

const BATCH_PIN = '/sys/fs/bpf/berth-bench-batch';

function hex(bytes: number[]): string {
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(' ');
}

/** One `bpftool batch file` run writing `entries` services-map-shaped updates into a fresh map. */
async function bpftoolBatch(entries: number): Promise<BatchRun> {
  await run('rm', ['-f', BATCH_PIN]);
  const mk = await run('bpftool', ['map', 'create', BATCH_PIN, 'type', 'hash', 'key', '24', 'value', '8', 'entries', String(1 << 19), 'name', 'bb_svc', 'flags', '1']);
  if (mk.code !== 0) throw new Error(`bpftool map create: ${mk.stderr.trim()}`);
  cleanup.add(`pin ${BATCH_PIN}`, () => run('rm', ['-f', BATCH_PIN]));
  const file = path.join(os.tmpdir(), `berth-bench-batch-${process.pid}.txt`);
  const lines: string[] = [];
  for (let i = 0; i < entries; i++) {
    const svc = Math.floor(i / 5);
    const slot = i % 5;
    // struct berth_svc_key: addr[4] (VIP 10.94.x.y), port 80, proto 6, family 4, slot, pad.
    const key = [10, 94, (svc >> 8) & 255, svc & 255, ...Array(12).fill(0), 0, 80, 6, 4, slot & 255, slot >> 8, 0, 0];
    const val = [(i + 1) & 255, ((i + 1) >> 8) & 255, ((i + 1) >> 16) & 255, 0, slot ? 0 : 4, 0, 0, 0];
    lines.push(`map update pinned ${BATCH_PIN} key hex ${hex(key)} value hex ${hex(val)}`);
  }
  fs.writeFileSync(file, lines.join('\n') + '\n');
  try {
    const t0 = nowMs();
    const r = await run('bpftool', ['batch', 'file', file], { timeoutMs: 120000 });
    const ms = nowMs() - t0;
    if (r.code !== 0) throw new Error(`bpftool batch: ${r.stderr.trim().slice(0, 300)}`);
    return { entries, ms, writesPerS: entries / (ms / 1000) };
  } finally {
    fs.rmSync(file, { force: true });
    await run('rm', ['-f', BATCH_PIN]);
  }
}

export async function coldScenario(cfg: ColdConfig): Promise<ColdReport> {
  const report: ColdReport = { status: 'ok', reason: null, services: cfg.services, backends: cfg.backends, runs: [], batch: [], batchError: null, berthd: [], berthdError: null };
  const mark = cleanup.mark;
  const child = path.join(REPO, 'dist/scripts/bench/cold-child.js');
  const pinDir = '/sys/fs/bpf/berth-bench-cold';
  const runDir = '/run/berth-bench-cold';
  try {
    cleanup.add('cold-start pins', async () => {
      await run(process.execPath, ['-e', `try{require(${JSON.stringify(path.join(REPO, 'dist/src/datapath/index.js'))}).Datapath.cleanup({pinDir:${JSON.stringify(pinDir)},runDir:${JSON.stringify(runDir)},cgroupRoot:'auto',hostProc:'/proc',serviceCidr:${JSON.stringify(RANGES.cold)},serviceCidr6:${JSON.stringify(RANGES.cold6)},logger:require(${JSON.stringify(path.join(REPO, 'dist/src/util/log.js'))}).silentLogger()}).catch(()=>{})}catch{}`]);
    });
    for (let round = 0; round < cfg.rounds; round++) {
      log(`cold start round ${round + 1}/${cfg.rounds}: ${cfg.services} services × ${cfg.backends}`);
      // Sizes interleaved within the round (smallest first), so their ratio is taken in one run.
      for (const size of [...(cfg.sizes ?? [cfg.services])].sort((a, b) => a - b)) {
        try {
          report.berthd.push(await berthdColdStart(size, cfg.backends, size === cfg.services ? (cfg.churn ?? null) : null));
        } catch (e) {
          report.berthdError = (e as Error).message.slice(0, 500);
        }
      }
      const r = await run(process.execPath, ['--expose-gc', child, '--services', String(cfg.services), '--backends', String(cfg.backends), '--pin-dir', pinDir, '--run-dir', runDir, '--cidr', RANGES.cold, '--cidr6', RANGES.cold6], { timeoutMs: 180000 });
      const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
      if (!line) throw new Error(`cold-child printed nothing (exit ${r.code}): ${r.stderr.trim().slice(0, 500)}`);
      const out = JSON.parse(line) as ColdRun & { error?: string; notRun?: boolean };
      if (out.error) {
        report.status = out.notRun ? 'not run' : 'failed';
        report.reason = out.error;
        break;
      }
      report.runs.push(out);
      try {
        report.batch.push(await bpftoolBatch(out.updates > 0 ? out.updates : 50000));
      } catch (e) {
        report.batchError = (e as Error).message;
      }
    }
  } catch (e) {
    report.status = 'failed';
    report.reason = (e as Error).message;
  } finally {
    await cleanup.unwindTo(mark);
  }
  return report;
}
