/**
 * Scenario 1b, "what would close the p99 gap": the S(1) TCP_CRR measurement against D with
 * hand-varied builds of bpf/sock_lb.bpf.c, made by the bench in .bench/whatif/ (the repository's
 * sources are not touched) and loaded through the real Datapath class via BERTH_BPF_OBJECT_DIR:
 *   built      build/bpf/sock_lb.bpf.o as `npm run build` made it
 *   percpu     the reverse-NAT LRU with BPF_F_NO_COMMON_LRU (per-CPU free lists, no global lock)
 *   norevnat   no reverse-NAT write at connect at all (diagnostic only: getpeername and UDP
 *              replies would then show the backend, not the VIP)
 * Interleaved per round; the LRU is filled first (its steady state) for the variants that write it.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { DatapathOptions } from '../../../src/datapath/types';
import { cleanup } from '../lib/cleanup';
import { containerIp, runContainer } from '../lib/docker';
import { loadgen, type LoadResult } from '../lib/loadgen';
import { RevnatMap, loadDatapath, silentLogger } from '../lib/berth';
import { NAMES, NotRun, OUT_DIR, REPO, RANGES, cidrBase, ipv4Add, log, must, run, summarize, type Summary } from '../lib/util';

export interface WhatIfVariant {
  id: 'built' | 'percpu' | 'norevnat';
  label: string;
  status: 'ok' | 'not run' | 'failed';
  reason: string | null;
  s: LoadResult[];
  d: LoadResult[];
}

export interface WhatIfReport {
  status: 'ok' | 'not run' | 'failed';
  reason: string | null;
  variants: WhatIfVariant[];
}

const VIP = ipv4Add(cidrBase(RANGES.sock), 1);

/** The object directory of one variant (compiled from an edited copy of sock_lb.bpf.c). */
async function buildVariant(id: WhatIfVariant['id'], src: string): Promise<string> {
  const dir = path.join(OUT_DIR, 'whatif', id);
  if (id === 'built') return path.join(REPO, 'build/bpf');
  let text = src;
  if (id === 'percpu') {
    if (/BPF_F_NO_COMMON_LRU/.test(src)) throw new NotRun('sock_lb.bpf.c already uses BPF_F_NO_COMMON_LRU (same as built)');
    // The map definition block that ends in "} berth_revnat SEC": add the flag after its type.
    const end = src.indexOf('} berth_revnat SEC');
    const start = src.lastIndexOf('struct {', end);
    const type = '__uint(type, BPF_MAP_TYPE_LRU_HASH);';
    const at = src.indexOf(type, start);
    if (end > 0 && start >= 0 && at > start && at < end) {
      text = `${src.slice(0, at + type.length)}\n\t__uint(map_flags, BPF_F_NO_COMMON_LRU);${src.slice(at + type.length)}`;
    }
  } else {
    text = src.replace(/bpf_map_update_elem\(&berth_revnat,[^;]*;/g, '/* what-if: no reverse-NAT write */;');
  }
  if (text === src) throw new NotRun(`the ${id} edit no longer applies to bpf/sock_lb.bpf.c`);
  fs.mkdirSync(dir, { recursive: true });
  const c = path.join(dir, 'sock_lb.bpf.c');
  fs.writeFileSync(c, text);
  await must('clang', ['-g', '-O2', '-target', 'bpf', `-D__TARGET_ARCH_${process.arch === 'x64' ? 'x86' : process.arch}`, `-I${path.join(REPO, 'build/bpf/include')}`, `-I${path.join(REPO, 'bpf')}`, '-c', c, '-o', path.join(dir, 'sock_lb.bpf.o')], { timeoutMs: 120000 });
  return dir;
}

export async function whatIfScenario(cfg: { rounds: number; seconds: number; cpu: number | null }): Promise<WhatIfReport> {
  const mk = (id: WhatIfVariant['id'], label: string): WhatIfVariant => ({ id, label, status: 'ok', reason: null, s: [], d: [] });
  const variants = [
    mk('built', 'as built'),
    mk('percpu', 'reverse-NAT LRU with BPF_F_NO_COMMON_LRU'),
    mk('norevnat', 'no reverse-NAT write (diagnostic only)'),
  ];
  const report: WhatIfReport = { status: 'ok', reason: null, variants };
  const mark = cleanup.mark;
  const savedDir = process.env.BERTH_BPF_OBJECT_DIR;
  try {
    const Datapath = loadDatapath();
    const src = fs.readFileSync(path.join(REPO, 'bpf/sock_lb.bpf.c'), 'utf8');
    if (!fs.existsSync(path.join(REPO, 'build/bpf/sock_lb.bpf.o'))) throw new NotRun('build/bpf/sock_lb.bpf.o is not built');
    const dirs = new Map<string, string>();
    for (const v of variants) {
      try {
        dirs.set(v.id, await buildVariant(v.id, src));
      } catch (e) {
        Object.assign(v, { status: e instanceof NotRun ? 'not run' : 'failed', reason: (e as Error).message });
      }
    }
    const name = `${NAMES.containerPrefix}whatif`;
    await runContainer({ name, cpus: cfg.cpu === null ? undefined : String(cfg.cpu), cmd: ['/bench/berth-bench', 'serve', '--tcp', '8080', '--tag', 'w'] });
    const ip = await containerIp(name);
    const cpu = cfg.cpu ?? undefined;
    const opts = (): DatapathOptions => ({
      pinDir: '/sys/fs/bpf/berth-bench-whatif', runDir: '/run/berth-bench-whatif', cgroupRoot: 'auto', hostProc: '/proc',
      serviceCidr: RANGES.sock, serviceCidr6: RANGES.sock6, logger: silentLogger(),
    });
    cleanup.add('what-if datapath', () => Datapath.cleanup(opts()));
    for (let round = 0; round < cfg.rounds; round++) {
      log(`what-if round ${round + 1}/${cfg.rounds}`);
      for (const v of variants) {
        if (v.status !== 'ok') continue;
        process.env.BERTH_BPF_OBJECT_DIR = dirs.get(v.id)!;
        await Datapath.cleanup(opts());
        const dp = await Datapath.open(opts());
        try {
          const res = await dp.sync([{
            name: 'whatif', kind: 'service', vip: VIP, vip6: null, ports: [{ port: 80, protocol: 'tcp', targetPort: 8080 }],
            backends: [{ container: name, id: 'e'.repeat(64), ip, ip6: null }], routes: [], ingress: null, errors: [],
          }], { prune: true });
          if (res.errors.length) throw new Error(res.errors[0].error);
          if ((await run('ip', ['-o', 'route', 'get', VIP])).code === 0) throw new Error(`refusing to send traffic: ${VIP} is routable`);
          if (v.id !== 'norevnat') {
            const lru = new RevnatMap(`${opts().pinDir}/berth_revnat`);
            for (let i = 0; i < 4 && lru.count() < lru.max * 0.97; i++) await loadgen('crr', VIP, 80, { seconds: 3, maxCount: lru.max, cpu });
          }
          v.d.push(await loadgen('crr', ip, 8080, { seconds: cfg.seconds, cpu }));
          v.s.push(await loadgen('crr', VIP, 80, { seconds: cfg.seconds, cpu }));
        } catch (e) {
          Object.assign(v, { status: 'failed', reason: (e as Error).message });
        } finally {
          dp.close();
          await Datapath.cleanup(opts());
        }
      }
    }
  } catch (e) {
    Object.assign(report, { status: e instanceof NotRun ? 'not run' : 'failed', reason: (e as Error).message });
  } finally {
    if (savedDir === undefined) delete process.env.BERTH_BPF_OBJECT_DIR;
    else process.env.BERTH_BPF_OBJECT_DIR = savedDir;
    await cleanup.unwindTo(mark);
  }
  return report;
}

/** Per-round S/D ratio of a field. */
export function whatIfRatio(v: WhatIfVariant, field: keyof LoadResult): Summary {
  return summarize(v.s.map((s, i) => Number(s[field]) / Number(v.d[i][field])));
}
