/**
 * Turns the results into the markdown of .bench/results.md (and the README's Benchmarks table):
 * medians with min–max over rounds, ratios to the baseline of the SAME round, and the targets
 * next to what was measured.
 */
import type { DatapathReport, VariantResult } from '../scenarios/datapath';
import type { ControlReport } from '../scenarios/control';
import type { ColdReport } from '../scenarios/cold';
import type { L7Report } from '../scenarios/l7';
import { whatIfRatio, type WhatIfReport } from '../scenarios/whatif';
import type { LoadResult, Mode } from './loadgen';
import { summarize, type Summary } from './util';

export interface Target {
  target: string;
  measured: string;
  met: boolean | null;
}

export interface Results {
  startedAt: string;
  finishedAt: string;
  durationS: number;
  host: Record<string, string>;
  config: Record<string, unknown>;
  datapath: DatapathReport | null;
  whatif: WhatIfReport | null;
  control: ControlReport | null;
  cold: ColdReport | null;
  l7: L7Report | null;
  targets: Target[];
}

const fmt = (x: number, digits = 0): string =>
  Number.isFinite(x) ? x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '–';

export function fmtSummary(s: Summary, digits = 0): string {
  if (!s.n) return '–';
  if (s.n === 1 || s.min === s.max) return fmt(s.median, digits);
  return `${fmt(s.median, digits)} (${fmt(s.min, digits)}–${fmt(s.max, digits)})`;
}

/** Per-round ratio variant/D of one field, summarized. */
export function ratioSummary(v: VariantResult, mode: Mode, field: keyof LoadResult): Summary {
  const runs = v.runs[mode] ?? [];
  const base = v.direct[mode] ?? [];
  const xs: number[] = [];
  runs.forEach((r, i) => {
    const d = base[i];
    if (d && Number(d[field]) > 0) xs.push(Number(r[field]) / Number(d[field]));
  });
  return summarize(xs);
}

export function fieldSummary(v: VariantResult, mode: Mode, field: keyof LoadResult): Summary {
  return summarize((v.runs[mode] ?? []).map((r) => Number(r[field])));
}

const MODE_TITLE: Record<Mode, string> = {
  crr: 'TCP, one connection per request/response (TCP_CRR-like)',
  rr: 'TCP request/response on a kept connection (TCP_RR-like)',
  udp: 'UDP request/response (connected socket)',
  udpu: 'UDP request/response (unconnected socket: sendto/recvfrom, berth\'s hooks run per packet)',
};

export function datapathMarkdown(r: DatapathReport, modes: Mode[]): string {
  const out: string[] = [];
  if (r.status !== 'ok') out.push(`Datapath: ${r.status}: ${r.reason}\n`);
  if (!r.variants.length) return out.join('\n');
  for (const mode of modes) {
    out.push(`#### ${MODE_TITLE[mode]}\n`);
    out.push('| variant | transactions/s | × D (same round) | p50 µs | p99 µs | p99 × D | client CPU µs/op | machine CPU µs/op |');
    out.push('|---|---|---|---|---|---|---|---|');
    for (const v of r.variants) {
      if (!v.runs[mode]?.length) {
        out.push(`| ${v.id} ${v.label} | ${v.status === 'ok' ? 'no result' : `${v.status}: ${v.reason}`} | | | | | | |`);
        continue;
      }
      out.push(
        `| ${v.id} ${v.label} | ${fmtSummary(fieldSummary(v, mode, 'rate'))} | ${v.kind === 'D' ? '1' : fmtSummary(ratioSummary(v, mode, 'rate'), 3)}` +
          ` | ${fmtSummary(fieldSummary(v, mode, 'p50_us'))} | ${fmtSummary(fieldSummary(v, mode, 'p99_us'))}` +
          ` | ${v.kind === 'D' ? '1' : fmtSummary(ratioSummary(v, mode, 'p99_us'), 2)}` +
          ` | ${fmtSummary(fieldSummary(v, mode, 'cpu_us_per_op'), 1)} | ${fmtSummary(fieldSummary(v, mode, 'sys_cpu_us_per_op'), 1)} |`,
      );
    }
    out.push('');
  }
  const prep = r.variants.filter((v) => (v.kind === 'S' || v.kind === 'T') && v.prepareMs.length);
  if (prep.length) {
    out.push('Time to put each variant in place before its measurement (ms per round; S = `Datapath.sync` from the previous size; T = flush + `iptables-restore`):\n');
    out.push(prep.map((v) => `${v.id}: ${v.prepareMs.join(', ')}`).join(' · ') + '\n');
  }
  if (r.hookCost.length) {
    out.push(`Average run time of berth's hooks (kernel BPF statistics, separate 1 s runs through S at the end; all runs counted, this client's and any other process's): ${r.hookCost.map((h) => `${h.hook} ${fmt(h.avgNs)} ns over ${fmt(h.runs)} runs (${h.mode})`).join(', ')}.\n`);
  }
  const failed = r.variants.filter((v) => v.errors.length);
  for (const v of failed) out.push(`- ${v.id}: ${v.errors.join('; ')}`);
  if (r.otherSocketHooks.length) out.push(`\nOther programs attached at the root cgroup during the run (not the bench's): ${r.otherSocketHooks.join(', ')}`);
  return out.join('\n');
}

export function whatIfMarkdown(w: WhatIfReport): string {
  if (w.status !== 'ok') return `What-if: ${w.status}: ${w.reason}`;
  const out = ['| sock_lb.bpf.o | S rate × D | S p50 µs | S p99 µs | D p99 µs | S p99 × D |', '|---|---|---|---|---|---|'];
  for (const v of w.variants) {
    if (!v.s.length) {
      out.push(`| ${v.label} | ${v.status}: ${v.reason} | | | | |`);
      continue;
    }
    const f = (xs: LoadResult[], k: keyof LoadResult) => fmtSummary(summarize(xs.map((x) => Number(x[k]))));
    out.push(`| ${v.label} | ${fmtSummary(whatIfRatio(v, 'rate'), 3)} | ${f(v.s, 'p50_us')} | ${f(v.s, 'p99_us')} | ${f(v.d, 'p99_us')} | ${fmtSummary(whatIfRatio(v, 'p99_us'), 2)} |`);
  }
  return out.join('\n');
}

export function targetsMarkdown(t: Target[]): string {
  const out = ['| target | measured | met |', '|---|---|---|'];
  for (const x of t) out.push(`| ${x.target} | ${x.measured} | ${x.met === null ? 'not measured' : x.met ? 'yes' : '**no**'} |`);
  return out.join('\n');
}

/** The targets of issue 5 against the measured numbers. */
export function evaluateTargets(res: Results): Target[] {
  const t: Target[] = [];
  const dp = res.datapath;
  const S = dp?.variants.filter((v) => v.kind === 'S') ?? [];
  const T = dp?.variants.filter((v) => v.kind === 'T') ?? [];
  const ran = (v: VariantResult) => (v.runs.crr?.length ?? 0) > 0;
  if (S.some(ran)) {
    const rates = S.filter(ran).map((v) => ({ v, r: ratioSummary(v, 'crr', 'rate') }));
    t.push({
      target: 'S ≥ 0.95× D connection rate (crr), every N',
      measured: rates.map(({ v, r }) => `${v.id}: ${fmt(r.median, 3)}×`).join(', ') + (S.some((v) => !ran(v)) ? ` (not run: ${S.filter((v) => !ran(v)).map((v) => v.id).join(', ')})` : ''),
      met: rates.every(({ r }) => r.median >= 0.95) && S.every(ran),
    });
    const p99 = S.filter(ran).map((v) => ({ v, r: ratioSummary(v, 'crr', 'p99_us') }));
    t.push({
      target: 'S p99 within 5% of D (crr), every N',
      measured: p99.map(({ v, r }) => `${v.id}: ${fmt(r.median, 2)}×`).join(', '),
      met: p99.every(({ r }) => r.median <= 1.05) && S.every(ran),
    });
    const first = S.find(ran)!;
    const last = [...S].reverse().find(ran)!;
    if (first !== last) {
      const flat = fieldSummary(last, 'crr', 'rate').median / fieldSummary(first, 'crr', 'rate').median;
      t.push({ target: `S flat from ${first.n} to ${last.n} services (crr rate)`, measured: `${last.id}/${first.id} = ${fmt(flat, 3)}`, met: flat >= 0.95 });
    }
  } else {
    t.push({ target: 'S ≥ 0.95× D connection rate, p99 within 5%, flat in N', measured: S[0]?.reason ?? dp?.reason ?? 'not run', met: null });
  }
  if (T.filter(ran).length > 1) {
    const first = T.find(ran)!;
    const last = [...T].reverse().find(ran)!;
    const fall = fieldSummary(last, 'crr', 'rate').median / fieldSummary(first, 'crr', 'rate').median;
    t.push({ target: `(baseline) T(N) falls with N`, measured: `${last.id}/${first.id} = ${fmt(fall, 3)}`, met: fall < 0.95 });
  }
  const c = res.control;
  if (c && c.status === 'ok' && c.summary) {
    const d = c.summary.vip.p99 - c.summary.own.p99;
    t.push({ target: 'docker run → VIP answers: p99 ≤ own IP p99 + 100 ms', measured: `VIP p99 ${fmt(c.summary.vip.p99)} ms, own IP p99 ${fmt(c.summary.own.p99)} ms (+${fmt(d)} ms, n=${c.summary.n})`, met: d <= 100 });
  } else {
    t.push({ target: 'docker run → VIP answers: p99 ≤ own IP p99 + 100 ms', measured: c?.reason ?? 'not run', met: null });
  }
  const k = res.cold;
  const size = k ? `${k.services.toLocaleString('en-US')}×${k.backends}` : '10,000×4';
  if (k && k.berthd?.length) {
    const ready = summarize(k.berthd.map((x) => x.readyMs));
    const rss = summarize(k.berthd.map((x) => x.rssMb));
    t.push({ target: `${size} cold reconcile ≤ 2 s (real berthd: spawn → every backend in the maps)`, measured: `${fmtSummary(ready)} ms`, met: ready.median <= 2000 });
    t.push({ target: 'berthd RSS ≤ 150 MB at that size', measured: `${fmtSummary(rss, 1)} MB`, met: rss.median <= 150 });
  } else if (k && k.status === 'ok' && k.runs.length) {
    const total = summarize(k.runs.map((x) => x.totalMs));
    const rss = summarize(k.runs.map((x) => x.rssMb));
    t.push({ target: `${size} cold reconcile ≤ 2 s (reconcile only; the berthd run failed: ${k.berthdError ?? '?'})`, measured: `${fmtSummary(total)} ms`, met: total.median <= 2000 });
    t.push({ target: 'RSS ≤ 150 MB at that size (reconcile-only process)', measured: `${fmtSummary(rss, 1)} MB`, met: rss.median <= 150 });
  } else {
    t.push({ target: '10,000×4 cold reconcile ≤ 2 s; RSS ≤ 150 MB', measured: k?.reason ?? 'not run', met: null });
  }
  const l = res.l7;
  const rps = (id: string) => l?.variants.find((v) => v.id === id);
  const ok = (id: string) => (rps(id)?.runs.length ?? 0) > 0;
  if (l && ok('ebpf') && ok('iptables') && ok('envoy')) {
    const e = summarize(rps('ebpf')!.runs.map((r) => r.rps)).median;
    const i = summarize(rps('iptables')!.runs.map((r) => r.rps)).median;
    const x = summarize(rps('envoy')!.runs.map((r) => r.rps)).median;
    t.push({ target: 'ingress via ebpf ≥ via iptables (req/s)', measured: `${fmt(e)} vs ${fmt(i)} (${fmt(e / i, 3)}×)`, met: e >= i });
    t.push({ target: 'both ≥ 0.9× straight to Envoy', measured: `ebpf ${fmt(e / x, 3)}×, iptables ${fmt(i / x, 3)}× of ${fmt(x)}`, met: e >= 0.9 * x && i >= 0.9 * x });
  } else {
    t.push({ target: 'ingress via ebpf ≥ via iptables, both ≥ 0.9× straight to Envoy', measured: l?.reason ?? l?.variants.filter((v) => v.status !== 'ok').map((v) => `${v.id}: ${v.reason}`).join('; ') ?? 'not run', met: null });
  }
  return t;
}
