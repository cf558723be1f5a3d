/**
 * `npm run bench`: berth's benchmarks, side by side in one run on this machine.
 *
 *   node dist/scripts/bench/run.js [--quick] [--only datapath,whatif,control,cold,l7,dns]
 *                                  [--rounds N] [--seconds S] [--levels 1,1000,...] [--containers K]
 *                                  [--cpu N|none]   (datapath: CPU client+server are pinned to)
 *                                  [--services 1000,10000] [--churn-seconds 30]   (cold: sizes, churn)
 *
 * Sets up what it needs (the static load generator, a local busybox image, containers, an
 * iptables baseline, berthd), runs every scenario with its variants interleaved round by round,
 * and writes .bench/results.json and .bench/results.md. A scenario whose part of berth has not
 * landed (or does not work) is reported as "not run: <reason>" and the others go on. Everything
 * it creates is removed at the end, on errors, on Ctrl-C and when the global time bound fires.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cleanup, installExitHandlers, onBail, sweepLeftovers } from './lib/cleanup';
import { buildLoadgen, ensureImage } from './lib/docker';
import type { Mode } from './lib/loadgen';
import { datapathMarkdown, whatIfMarkdown, evaluateTargets, fmtSummary, targetsMarkdown, type Results } from './lib/report';
import { OUT_DIR, RANGES, log, run, summarize } from './lib/util';
import { loadDatapath, silentLogger } from './lib/berth';
import { Berthd } from '../../test/helpers/berthd';
import { datapathScenario, type DatapathConfig } from './scenarios/datapath';
import { controlScenario, type ControlReport } from './scenarios/control';
import { coldScenario, type ColdConfig, type ColdReport } from './scenarios/cold';
import { l7Scenario, type L7PathVariant, type L7Report } from './scenarios/l7';
import { whatIfScenario } from './scenarios/whatif';
import { dnsScenario, dnsMarkdown, type DnsReport } from './scenarios/dns';

/** Hard bound on the whole run (the issue asks for well under 15 minutes). */
const BOUND_MS = 14 * 60 * 1000;

interface Config {
  only: Set<string>;
  datapath: DatapathConfig;
  control: { containers: number };
  cold: ColdConfig;
  l7: { rounds: number; seconds: number; connections: number };
  dns: { rounds: number; seconds: number; concurrency: number };
}

function parseArgs(argv: string[]): Config {
  const get = (name: string): string | undefined => {
    const i = argv.indexOf(`--${name}`);
    if (i >= 0) return argv[i + 1];
    const eq = argv.find((a) => a.startsWith(`--${name}=`));
    return eq?.slice(name.length + 3);
  };
  const quick = argv.includes('--quick');
  const rounds = Number(get('rounds') ?? (quick ? 2 : 5));
  const seconds = Number(get('seconds') ?? 1);
  const cpuArg = get('cpu') ?? String(os.cpus().length - 1);
  const levels = (get('levels') ?? (quick ? '1,1000,10000' : '1,1000,10000,100000')).split(',').map(Number);
  const only = new Set((get('only') ?? 'datapath,whatif,control,cold,l7,dns').split(','));
  for (const x of only) if (!['datapath', 'whatif', 'control', 'cold', 'l7', 'dns'].includes(x)) throw new Error(`--only: unknown scenario ${x}`);
  if (!(rounds >= 1 && rounds <= 10)) throw new Error('--rounds must be 1..10');
  if (!(seconds > 0 && seconds <= 10)) throw new Error('--seconds must be in (0, 10]');
  if (levels.some((n) => !(n >= 1 && n <= 100000))) throw new Error('--levels must be in 1..100000');
  // Cold scenario sizes (services; × 4 containers): the largest also runs the churn.
  const sizes = (get('services') ?? (quick ? '200,2000' : '1000,10000')).split(',').map(Number);
  if (sizes.some((n) => !(Number.isInteger(n) && n >= 1 && n <= 15000))) throw new Error('--services must be a list of integers in 1..15000');
  const churnSeconds = Number(get('churn-seconds') ?? (quick ? 5 : 30));
  if (!(churnSeconds >= 0 && churnSeconds <= 120)) throw new Error('--churn-seconds must be in 0..120');
  return {
    only,
    datapath: { cpu: cpuArg === 'none' ? null : Number(cpuArg), rounds, seconds, warmupSeconds: 0.1, levels, modes: ['crr', 'rr', 'udp', 'udpu'] as Mode[] },
    control: { containers: Math.min(200, Number(get('containers') ?? (quick ? 20 : 50))) },
    cold: {
      rounds: Number(get('rounds') ?? (quick ? 2 : 3)), services: Math.max(...sizes), sizes, backends: 4,
      churn: churnSeconds > 0 ? { perSecond: 100, seconds: churnSeconds, total: quick ? 1000 : 10000 } : null,
    },
    l7: { rounds: quick ? 2 : 5, seconds: quick ? 1 : 3, connections: 8 },
    dns: { rounds: quick ? 2 : 3, seconds: quick ? 1 : 2, concurrency: 16 },
  };
}

/** Pins and berthd state of an earlier bench run that was killed (the bench's own names only). */
async function sweepBerth(): Promise<string[]> {
  const removed: string[] = [];
  for (const name of ['bench-cp', 'bench-l7', 'bench-dns']) {
    if (!fs.existsSync(`/sys/fs/bpf/berth-${name}`) && !fs.existsSync(`/run/berth-${name}`)) continue;
    const b = new Berthd({ name, serviceCidr: RANGES.berthd, serviceCidr6: RANGES.berthd6 });
    await b.cleanup().catch((e: Error) => log(`cleanup of berthd ${name}: ${e.message}`));
    removed.push(`berthd ${name} state`);
  }
  const dirs = [['berth-bench-dp', RANGES.sock, RANGES.sock6], ['berth-bench-whatif', RANGES.sock, RANGES.sock6], ['berth-bench-cold', RANGES.cold, RANGES.cold6]];
  for (const [dir, cidr, cidr6] of dirs) {
    if (!fs.existsSync(`/sys/fs/bpf/${dir}`)) continue;
    try {
      await loadDatapath().cleanup({ pinDir: `/sys/fs/bpf/${dir}`, runDir: `/run/${dir}`, cgroupRoot: 'auto', hostProc: '/proc', serviceCidr: cidr, serviceCidr6: cidr6, logger: silentLogger() });
      removed.push(`pins ${dir}`);
    } catch (e) {
      log(`cleanup of ${dir}: ${(e as Error).message}`);
    }
  }
  return removed;
}

async function hostFacts(): Promise<Record<string, string>> {
  const first = async (f: string, a: string[]) => {
    const r = await run(f, a);
    return (r.stdout + r.stderr).trim().split('\n')[0] ?? '';
  };
  return {
    kernel: os.release(),
    cpus: `${os.cpus().length} × ${os.cpus()[0]?.model ?? '?'}`,
    memoryGb: (os.totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    docker: await first('docker', ['version', '--format', '{{.Server.Version}}']),
    envoy: (await first('envoy', ['--version'])).replace(/^.*version:\s*/, '').slice(0, 80),
    iptables: await first('iptables', ['--version']),
    wrk: await first('wrk', ['-v']),
    // The machine is shared (other sessions' VM guests): the load at the start says how quiet it was.
    loadavg: os.loadavg().map((x) => x.toFixed(2)).join(' '),
  };
}

function controlMarkdown(c: ControlReport): string {
  if (c.status !== 'ok' || !c.summary) return `Control plane: ${c.status}: ${c.reason}`;
  const s = c.summary;
  const f = (x: number) => x.toFixed(0);
  return [
    `| wait after \`docker run -d\` returned (n=${s.n}) | p50 ms | p99 ms | max ms |`,
    '|---|---|---|---|',
    `| container's own IP answers | ${f(s.own.p50)} | ${f(s.own.p99)} | ${f(s.own.max)} |`,
    `| service VIP answers through it | ${f(s.vip.p50)} | ${f(s.vip.p99)} | ${f(s.vip.max)} |`,
    `| difference, per container | ${f(s.extra.p50)} | ${f(s.extra.p99)} | |`,
    '',
    `\`docker run -d\` itself took ${fmtSummary(s.dockerRun)} ms; berthd's RSS at the end: ${c.berthdRssMb?.toFixed(1) ?? '?'} MB.${c.skipped ? ` ${c.skipped} container(s) not measured (Docker failed under the bench) and replaced.` : ''}`,
  ].join('\n');
}

function coldMarkdown(k: ColdReport): string {
  if (k.status !== 'ok') return `Cold start: ${k.status}: ${k.reason}`;
  const s = (f: (r: ColdReport['runs'][number]) => number, d = 0) => fmtSummary(summarize(k.runs.map(f)), d);
  const out: string[] = [];
  if (k.berthd.length) {
    const sizes = [...new Set(k.berthd.map((r) => r.services))].sort((x, y) => x - y);
    const at = (size: number, f: (r: ColdReport['berthd'][number]) => number, dd = 0) => fmtSummary(summarize(k.berthd.filter((r) => r.services === size).map(f)), dd);
    const rounds = k.berthd.filter((r) => r.services === sizes[sizes.length - 1]).length;
    out.push(
      `The real berthd, fresh pins, against a fake Docker engine listing labelled containers (services × ${k.backends}), sizes interleaved, ${rounds} rounds, median (min–max):`,
      '',
      `| berthd | ${sizes.map((x) => `${x.toLocaleString('en-US')} services`).join(' | ')} |`,
      `|---|${sizes.map(() => '---|').join('')}`,
      `| **spawn → ready, every backend in the maps** | ${sizes.map((x) => `**${at(x, (r) => r.readyMs)} ms**`).join(' | ')} |`,
      `| of which its first reconcile (model + maps, from /status) | ${sizes.map((x) => `${at(x, (r) => r.reconcileMs)} ms`).join(' | ')} |`,
      `| Docker API inspects during the cold start | ${sizes.map((x) => at(x, (r) => r.inspects)).join(' | ')} |`,
      `| RSS when ready; peak (VmHWM) | ${sizes.map((x) => `${at(x, (r) => r.rssMb, 1)}; ${at(x, (r) => r.hwmMb, 1)} MB`).join(' | ')} |`,
      `| CPU time, spawn → ready | ${sizes.map((x) => `${at(x, (r) => r.cpuMs)} ms`).join(' | ')} |`,
      `| **one Docker event (new address) → maps, median of 20** | ${sizes.map((x) => `**${at(x, (r) => r.eventMs, 1)} ms**`).join(' | ')} |`,
      `| a new service's container (docker run) → maps, median of 5 | ${sizes.map((x) => `${at(x, (r) => r.newServiceMs, 1)} ms`).join(' | ')} |`,
      `| slowest /status answer (berthd's longest event-loop stall seen) | ${sizes.map((x) => `${at(x, (r) => r.statusMaxMs)} ms`).join(' | ')} |`,
      `| inspects for those events | ${sizes.map((x) => at(x, (r) => r.eventInspects)).join(' | ')} |`,
      '',
    );
    if (sizes.length > 1) {
      const ratios = sizes.slice(1).map((x) => `${x.toLocaleString('en-US')}/${sizes[0].toLocaleString('en-US')}: ${(summarize(k.berthd.filter((r) => r.services === x).map((r) => r.eventMs)).median / summarize(k.berthd.filter((r) => r.services === sizes[0]).map((r) => r.eventMs)).median).toFixed(2)}×`);
      out.push(`Event → maps, ratio of medians between sizes: ${ratios.join(', ')}.`, '');
    }
    const ch = k.berthd.map((r) => r.churn).filter((c): c is NonNullable<typeof c> => c !== null);
    if (ch.length) {
      const c = (f: (r: (typeof ch)[number]) => number, dd = 0) => fmtSummary(summarize(ch.map(f)), dd);
      out.push(
        `Churn at ${sizes[sizes.length - 1].toLocaleString('en-US')} services: ${ch[0].perSecond} events/s for ${ch[0].seconds} s (each a container's new address), ${ch.length} rounds:`,
        '',
        '| churn | value |',
        '|---|---|',
        `| event → maps p50 / p99 / max | ${c((r) => r.p50Ms, 1)} / ${c((r) => r.p99Ms, 1)} / ${c((r) => r.maxMs, 1)} ms |`,
        `| p99 first third → last third | ${c((r) => r.p99FirstThirdMs, 1)} → ${c((r) => r.p99LastThirdMs, 1)} ms |`,
        `| backlog (sent − applied), largest per-second sample / at the end | ${c((r) => r.maxBacklog)} / ${c((r) => r.endBacklog)} |`,
        `| RSS after ${ch[0].totalEvents.toLocaleString('en-US')} events | ${c((r) => r.rssAfterMb, 1)} MB |`,
        `| RSS 3 s after that | ${c((r) => r.rssSettledMb, 1)} MB |`,
        '',
      );
    }
  }
  if (k.berthdError) out.push(`The real berthd against a fake engine: ${k.berthd.length ? 'a run ' : ''}failed: ${k.berthdError}`, '');
  out.push(
    'The reconcile alone, in a fresh process (cold-child.js: berthd\'s model and datapath modules on a snapshot already in memory), median (min–max):',
    '',
    '| phase | value |',
    '|---|---|',
    `| buildDesiredState | ${s((r) => r.modelMs)} ms |`,
    `| Datapath.open (load, pin, attach) | ${s((r) => r.openMs)} ms |`,
    `| Datapath.sync, empty → full | ${s((r) => r.syncMs)} ms (${s((r) => r.updates)} map writes) |`,
    `| **total, snapshot → maps hold all** | **${s((r) => r.totalMs)} ms** |`,
    `| steady-state re-sync (nothing changed) | ${s((r) => r.resyncMs)} ms, ${s((r) => r.resyncUpdates)} writes |`,
    `| CPU time of the reconcile | ${s((r) => r.cpuMs)} ms |`,
    `| RSS right after it; peak (max RSS) | ${s((r) => r.rssMb, 1)} MB; ${s((r) => r.maxRssMb, 1)} MB |`,
    `| RSS after a full GC: all of it / modules loaded, no state / + the Docker snapshot | ${s((r) => r.rssAfterGcMb, 1)} / ${s((r) => r.rssLoadedMb, 1)} / ${s((r) => r.rssSnapshotMb, 1)} MB |`,
    `| map entries afterwards | ${k.runs[0].counts.services} service, ${k.runs[0].counts.backends} backend |`,
    `| map writes/s through the addon (sync) | ${s((r) => r.writesPerS)} |`,
  );
  if (k.batch.length) out.push(`| map writes/s, \`bpftool batch file\` (same count) | ${fmtSummary(summarize(k.batch.map((x) => x.writesPerS)))} |`);
  else if (k.batchError) out.push(`| bpftool batch | failed: ${k.batchError} |`);
  const errs = k.runs.filter((r) => r.serviceErrors || r.labelErrors);
  if (errs.length) out.push('', `Errors: ${errs.map((r) => `${r.serviceErrors} service / ${r.labelErrors} label errors (${r.firstError})`).join('; ')}`);
  return out.join('\n');
}

function l7Markdown(l: L7Report, connections: number): string {
  if (l.status !== 'ok') return `L7: ${l.status}: ${l.reason}`;
  const out = ['| path | requests/s | × straight to Envoy | p50 ms | p99 ms |', '|---|---|---|---|---|'];
  const envoy = l.variants.find((v) => v.id === 'envoy');
  const ref = envoy?.runs.length ? summarize(envoy.runs.map((r) => r.rps)).median : NaN;
  for (const v of l.variants) {
    if (!v.runs.length) {
      out.push(`| ${v.label} | ${v.status}: ${v.reason ?? v.errors[0] ?? 'no result'} | | | |`);
      continue;
    }
    const rps = summarize(v.runs.map((r) => r.rps));
    out.push(`| ${v.label} | ${fmtSummary(rps)} | ${(rps.median / ref).toFixed(3)} | ${fmtSummary(summarize(v.runs.map((r) => r.p50_ms)), 2)} | ${fmtSummary(summarize(v.runs.map((r) => r.p99_ms)), 2)} |`);
  }
  for (const v of l.variants.filter((x) => x.errors.length && x.runs.length)) out.push(`\n- ${v.id}: ${v.errors.join('; ')}`);
  out.push('', ...l7PathMarkdown('HTTPS (TLS terminated by the ingress; wrk, HTTP/1.1 over TLS, same connections and time)', 'requests/s', l.https ?? [], (r) => r.rps));
  out.push('', ...l7PathMarkdown(`WebSocket echo (ws-client: ${connections} connections, each a closed loop of 64-byte text frames; round trip = frame written → echo parsed)`, 'messages/s', l.websocket ?? [], (r) => r.rate));
  if (l.loadavg?.length) out.push('', `1-minute load average of the machine at the start of each berthd phase: ${fmtSummary(summarize(l.loadavg), 2)} (other engineers' QEMU guests share the 2 cores).`);
  return out.join('\n');
}

/** One table of the HTTPS or WebSocket part: each path's rate and latency, and its rate over Envoy direct's. */
function l7PathMarkdown<R extends { p50_ms: number; p99_ms: number }>(title: string, unit: string, vs: L7PathVariant<R>[], rate: (r: R) => number): string[] {
  if (!vs.length) return [];
  const out = [`${title}:`, '', `| path | ${unit} | × straight to Envoy | p50 ms | p99 ms |`, '|---|---|---|---|---|'];
  const envoy = vs.find((v) => v.id === 'envoy');
  const ref = envoy?.runs.length ? summarize(envoy.runs.map(rate)).median : NaN;
  for (const v of vs) {
    if (!v.runs.length) {
      out.push(`| ${v.label} | ${v.status}: ${v.reason ?? v.errors[0] ?? 'no result'} | | | |`);
      continue;
    }
    const r = summarize(v.runs.map(rate));
    out.push(`| ${v.label} | ${fmtSummary(r)} | ${(r.median / ref).toFixed(3)} | ${fmtSummary(summarize(v.runs.map((x) => x.p50_ms)), 2)} | ${fmtSummary(summarize(v.runs.map((x) => x.p99_ms)), 2)} |`);
  }
  for (const v of vs.filter((x) => x.errors.length && x.runs.length)) out.push(`\n- ${v.id}: ${v.errors.join('; ')}`);
  return out;
}

export function markdown(res: Results): string {
  const c = res.config as unknown as Config & { only: string[] };
  const out = [
    `# berth benchmarks`,
    '',
    `Run ${res.startedAt}, ${Math.round(res.durationS)} s; ${res.host.kernel}, ${res.host.cpus}, ${res.host.memoryGb} GB, Docker ${res.host.docker}, Envoy ${res.host.envoy}, node ${res.host.node}; load average at the start ${res.host.loadavg ?? '?'} (1, 5, 15 min).`,
    '',
    '## Targets',
    '',
    targetsMarkdown(res.targets),
    '',
    `## Datapath (${c.datapath.rounds} rounds × ${c.datapath.seconds} s per variant and kind, interleaved; median (min–max))`,
    '',
    res.datapath ? datapathMarkdown(res.datapath, c.datapath.modes) : 'not run (not selected)',
    '',
    '### What the reverse-NAT record costs (TCP_CRR, S(1) against D, with an edited build of bpf/sock_lb.bpf.c)',
    '',
    res.whatif ? whatIfMarkdown(res.whatif) : 'not run (not selected)',
    '',
    '## Control plane: `docker run` → answers',
    '',
    res.control ? controlMarkdown(res.control) : 'not run (not selected)',
    '',
    '## Cold start at size, map writes',
    '',
    res.cold ? coldMarkdown(res.cold) : 'not run (not selected)',
    '',
    `## L7 ingress (wrk with 1 thread, or ws-client; ${c.l7.connections} connections, ${c.l7.seconds} s per path and round, ${c.l7.rounds} rounds; median (min–max))`,
    '',
    res.l7 ? l7Markdown(res.l7, c.l7.connections) : 'not run (not selected)',
    '',
    `## DNS (UDP, ${c.dns.concurrency} queries outstanding, ${c.dns.seconds} s per path and round, ${c.dns.rounds} rounds; median (min–max))`,
    '',
    (res as Results & { dns?: DnsReport | null }).dns ? dnsMarkdown((res as Results & { dns: DnsReport }).dns, fmtSummary) : 'not run (not selected)',
    '',
  ];
  return out.join('\n');
}

async function main(): Promise<void> {
  const cfg = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('npm run bench needs root (BPF, iptables, netns, Docker)');
  installExitHandlers(BOUND_MS);
  const started = Date.now();
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const swept = [...(await sweepLeftovers()), ...(await sweepBerth())];
  if (swept.length) log(`removed leftovers of an earlier bench run: ${swept.join(', ')}`);
  if ((await run('docker', ['version', '--format', '{{.Server.Version}}'])).code !== 0) throw new Error('Docker does not answer (scripts/setup starts dockerd)');
  await buildLoadgen();
  await ensureImage();

  const res: Results = {
    startedAt: new Date(started).toISOString(),
    finishedAt: '',
    durationS: 0,
    host: await hostFacts(),
    config: { ...cfg, only: [...cfg.only] } as unknown as Record<string, unknown>,
    datapath: null,
    whatif: null,
    control: null,
    cold: null,
    l7: null,
    targets: [],
  };
  const write = (partial: string | null): void => {
    res.finishedAt = new Date().toISOString();
    res.durationS = (Date.now() - started) / 1000;
    res.targets = evaluateTargets(res);
    if (partial) (res as Results & { partial?: string }).partial = partial;
    const md = (partial ? `**Partial run (${partial}): the scenarios not reached are missing.**\n\n` : '') + markdown(res);
    fs.writeFileSync(path.join(OUT_DIR, 'results.json'), JSON.stringify(res, null, 2) + '\n');
    fs.writeFileSync(path.join(OUT_DIR, 'results.md'), md);
    process.stdout.write(md);
    log(`wrote ${path.relative(process.cwd(), path.join(OUT_DIR, 'results.json'))} and results.md in ${Math.round(res.durationS)} s`);
  };
  onBail(() => write('cut short by a signal or the time bound'));
  try {
    if (cfg.only.has('datapath')) res.datapath = await datapathScenario(cfg.datapath);
    if (cfg.only.has('whatif')) res.whatif = await whatIfScenario({ rounds: cfg.cold.rounds, seconds: cfg.datapath.seconds, cpu: cfg.datapath.cpu });
    if (cfg.only.has('cold')) res.cold = await coldScenario(cfg.cold);
    if (cfg.only.has('control')) res.control = await controlScenario(cfg.control);
    if (cfg.only.has('l7')) res.l7 = await l7Scenario(cfg.l7);
    if (cfg.only.has('dns')) (res as Results & { dns?: DnsReport }).dns = await dnsScenario(cfg.dns);
  } finally {
    await cleanup.runAll();
  }
  write(null);
}

main().then(
  () => process.exit(0),
  async (e: Error) => {
    log(`failed: ${e.stack ?? e.message}`);
    await cleanup.runAll();
    process.exit(1);
  },
);
