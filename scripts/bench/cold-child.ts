/**
 * The "berthd-like process" of the cold-start scenario, run by scenarios/cold.ts as a fresh
 * node process: the same modules berthd uses for its first reconcile (model + datapath addon),
 * a synthetic Docker snapshot of S services × B containers, then buildDesiredState →
 * Datapath.open → Datapath.sync with fresh pins, and a second sync with nothing changed (the
 * steady-state periodic reconcile). Prints one JSON line with phase times, map counts, the
 * addon's writes, RSS and CPU. Pins are removed before exit.
 */
import { loadDatapath, loadModel, silentLogger, syntheticSnapshot } from './lib/berth';
import type { DatapathOptions } from '../../src/datapath/types';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const rss = () => process.memoryUsage().rss / 1048576;
/** RSS after a full GC (what the process keeps), when node runs with --expose-gc. */
const rssAfterGc = () => {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    gc();
    gc();
  }
  return rss();
};

async function main(): Promise<void> {
  const services = Number(arg('services', '10000'));
  const backends = Number(arg('backends', '4'));
  const opts: DatapathOptions = {
    pinDir: arg('pin-dir', '/sys/fs/bpf/berth-bench-cold'),
    runDir: arg('run-dir', '/run/berth-bench-cold'),
    cgroupRoot: 'auto',
    hostProc: '/proc',
    serviceCidr: arg('cidr', '10.94.0.0/16'),
    serviceCidr6: arg('cidr6', 'fd00:94::/112'),
    logger: silentLogger(),
  };
  let t = process.hrtime.bigint();
  const model = loadModel();
  const Datapath = loadDatapath();
  const loadMs = ms(t);
  await Datapath.cleanup(opts).catch(() => undefined);
  const rssLoaded = rssAfterGc();
  const snap = syntheticSnapshot(services, backends);
  const rssSnapshot = rssAfterGc();
  const cpu0 = process.cpuUsage();
  const tAll = process.hrtime.bigint();
  t = process.hrtime.bigint();
  const state = model.buildDesiredState(snap, { addresses: ['127.0.0.1', '::1'] }, {
    serviceCidr: opts.serviceCidr,
    serviceCidr6: opts.serviceCidr6,
    store: model.VipStore.inMemory(),
  });
  const modelMs = ms(t);
  t = process.hrtime.bigint();
  const dp = await Datapath.open(opts);
  const openMs = ms(t);
  try {
    t = process.hrtime.bigint();
    const sync = await dp.sync(state.services, { prune: true });
    const syncMs = ms(t);
    const totalMs = ms(tAll);
    const cpu = process.cpuUsage(cpu0);
    const mem = process.memoryUsage();
    const status = dp.status();
    t = process.hrtime.bigint();
    const again = await dp.sync(state.services, { prune: true });
    const resyncMs = ms(t);
    const out = {
      services: state.services.length,
      backendsTotal: state.services.reduce((n, s) => n + s.backends.length, 0),
      labelErrors: state.labelErrors.length,
      serviceErrors: sync.errors.length,
      firstError: sync.errors[0] ? `${sync.errors[0].service}: ${sync.errors[0].error}` : null,
      loadMs, modelMs, openMs, syncMs, totalMs,
      syncReportedMs: sync.durationMs,
      updates: sync.updates,
      deletes: sync.deletes,
      writesPerS: sync.updates / (syncMs / 1000),
      counts: status.counts,
      resyncMs, resyncUpdates: again.updates + again.deletes,
      cpuMs: (cpu.user + cpu.system) / 1000,
      rssMb: mem.rss / 1048576,
      heapMb: mem.heapUsed / 1048576,
      rssLoadedMb: rssLoaded,
      rssSnapshotMb: rssSnapshot,
      rssAfterGcMb: rssAfterGc(),
      maxRssMb: process.resourceUsage().maxRSS / 1024,
    };
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    dp.close();
    await Datapath.cleanup(opts).catch(() => undefined);
  }
}

main().then(
  () => process.exit(0),
  (e: Error & { constructor: { name: string } }) => {
    process.stdout.write(JSON.stringify({ error: e.message, notRun: e.constructor.name === 'NotRun' }) + '\n');
    process.exit(1);
  },
);
