/**
 * Scenario 2b, cold start at size and map write speed, interleaved per round:
 *   A  a fresh berthd-like process (cold-child.js) reconciling S services × B backends from a
 *      synthetic Docker snapshot into fresh pinned maps: time, RSS, CPU, the addon's writes/s;
 *   B  the same number of map updates written with `bpftool batch file` into a hash map of the
 *      services map's shape (key 24 B, value 8 B, BPF_F_NO_PREALLOC): the baseline writes/s.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cleanup } from '../lib/cleanup';
import { REPO, RANGES, log, nowMs, run } from '../lib/util';

export interface ColdConfig {
  rounds: number;
  services: number;
  backends: number;
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
  counts: { services: number; backends: number; revnat: number };
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
  const report: ColdReport = { status: 'ok', reason: null, services: cfg.services, backends: cfg.backends, runs: [], batch: [], batchError: null };
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
