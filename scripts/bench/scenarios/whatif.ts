/**
 * Scenario 1b, "what would close the p99 gap": the S(1) TCP_CRR measurement against D with
 * hand-varied builds of bpf/sock_lb.bpf.c, made by the bench in .bench/whatif/ (the repository's
 * sources are not touched) and loaded through the real Datapath class via BERTH_BPF_OBJECT_DIR:
 *   built      build/bpf/sock_lb.bpf.o as `npm run build` made it
 *   norevnat   no reverse-NAT record at connect at all (diagnostic only: getpeername and UDP
 *              replies would then show the backend, not the VIP): the cost of that record
 * Interleaved per round.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { DatapathOptions } from '../../../src/datapath/types';
import { cleanup } from '../lib/cleanup';
import { containerIp, runContainer } from '../lib/docker';
import { loadgen, type LoadResult } from '../lib/loadgen';
import { loadDatapath, silentLogger } from '../lib/berth';
import { NAMES, NotRun, OUT_DIR, REPO, RANGES, cidrBase, ipv4Add, log, must, run, summarize, type Summary } from '../lib/util';

export interface WhatIfVariant {
  id: 'built' | 'norevnat';
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
  // The socket storage is never created, so no translation is recorded.
  const text = src.replace(/bpf_sk_storage_get\(&berth_sk_revnat, sk, 0, BPF_SK_STORAGE_GET_F_CREATE\)/g, '(void *)0 /* what-if: no reverse-NAT record */');
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
    mk('norevnat', 'no reverse-NAT record (diagnostic only)'),
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
