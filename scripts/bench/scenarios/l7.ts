/**
 * Scenario 3, L7: HTTP requests/s and latency through berth's ingress (the real berthd and its
 * Envoy), wrk as the client, interleaved per round: berthd with `--redirect ebpf`, then with
 * `--redirect iptables` (a berthd restart between, as an operator switching modes would do).
 *   ebpf / iptables  wrk inside a client container's network namespace → ingress VIP:80; the
 *                    packets leave the container and are steered into Envoy on the bridge
 *   envoy            the same client namespace → Envoy's listener port on the docker0 gateway
 *                    address: the same path minus the redirect, i.e. the limit of Envoy itself
 *                    (measured in both berthd phases, so twice per round)
 *   host             wrk on the host → ingress VIP:80, which berth's socket LB sends straight
 *                    to Envoy's listener (no redirect involved), for reference
 * The backend is `berth-bench serve --http` (keep-alive, tiny fixed body).
 */
import { Berthd, waitFor } from '../../../test/helpers/berthd';
import { cleanup } from '../lib/cleanup';
import { containerPid, removeContainer, runContainer } from '../lib/docker';
import { NAMES, RANGES, log, run } from '../lib/util';

export interface L7Config {
  rounds: number;
  seconds: number;
  connections: number;
}

export interface WrkResult {
  rps: number;
  p50_ms: number;
  p99_ms: number;
  requests: number;
  errors: number;
}

export interface L7Variant {
  id: 'ebpf' | 'iptables' | 'envoy' | 'host';
  label: string;
  status: 'ok' | 'not run' | 'failed';
  reason: string | null;
  runs: WrkResult[];
  errors: string[];
}

export interface L7Report {
  status: 'ok' | 'not run' | 'failed';
  reason: string | null;
  variants: L7Variant[];
  wrk: string | null;
}

const INGRESS = 'bench';

function toMs(v: string, unit: string): number {
  const x = Number(v);
  return unit === 'us' ? x / 1000 : unit === 's' ? x * 1000 : unit === 'm' ? x * 60000 : x;
}

export function parseWrk(out: string): WrkResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (!rps) throw new Error(`wrk printed no rate: ${out.trim().slice(0, 300)}`);
  const pct = (p: string) => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(out);
    return m ? toMs(m[1], m[2]) : NaN;
  };
  const req = /(\d+) requests in/.exec(out);
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = (non2xx ? Number(non2xx[1]) : 0) + (sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
  return { rps: Number(rps[1]), p50_ms: pct('50'), p99_ms: pct('99'), requests: req ? Number(req[1]) : 0, errors };
}

async function wrk(prefix: string[], url: string, cfg: L7Config): Promise<WrkResult> {
  const args = [...prefix, 'wrk', '-t1', `-c${cfg.connections}`, `-d${cfg.seconds}s`, '--timeout', '2s', '--latency', url];
  const r = await run(args[0], args.slice(1), { timeoutMs: (cfg.seconds + 20) * 1000 });
  if (r.code !== 0) throw new Error(`wrk ${url} failed (${r.code}): ${(r.stderr || r.stdout).trim().slice(0, 300)}`);
  const res = parseWrk(r.stdout);
  if (res.requests === 0 || res.errors > res.requests / 100) throw new Error(`wrk ${url}: ${res.requests} requests, ${res.errors} errors`);
  return res;
}

export async function l7Scenario(cfg: L7Config): Promise<L7Report> {
  const mk = (id: L7Variant['id'], label: string): L7Variant => ({ id, label, status: 'ok', reason: null, runs: [], errors: [] });
  const v = {
    ebpf: mk('ebpf', 'container → ingress VIP, redirect ebpf (tc + bpf_sk_assign)'),
    iptables: mk('iptables', 'container → ingress VIP, redirect iptables (container clients: nat REDIRECT, see README)'),
    envoy: mk('envoy', "container → Envoy's listener port directly (Envoy's own limit)"),
    host: mk('host', 'host → ingress VIP (socket LB straight to Envoy)'),
  };
  const report: L7Report = { status: 'ok', reason: null, variants: [v.ebpf, v.iptables, v.envoy, v.host], wrk: null };
  const wrkVersion = await run('wrk', ['-v']);
  if (wrkVersion.code === 127) {
    return { ...report, status: 'not run', reason: 'wrk is not installed (scripts/setup installs it)' };
  }
  report.wrk = (wrkVersion.stdout + wrkVersion.stderr).split('\n')[0].trim();
  const mark = cleanup.mark;
  const d = new Berthd({ name: 'bench-l7', serviceCidr: RANGES.berthd, serviceCidr6: RANGES.berthd6, extraArgs: ['--log-level', 'info'] });
  const attempt = async (x: L7Variant, fn: () => Promise<WrkResult>) => {
    if (x.status !== 'ok') return;
    try {
      x.runs.push(await fn());
    } catch (e) {
      x.errors.push((e as Error).message);
      if (x.errors.length >= 3) Object.assign(x, { status: 'failed', reason: (e as Error).message });
    }
  };
  try {
    cleanup.add('berthd bench-l7', () => d.cleanup());
    await runContainer({
      name: `${NAMES.containerPrefix}web`,
      labels: { 'berth.service': 'bench-web', 'berth.ports': '80:8082', [`berth.http.${INGRESS}.path`]: '/' },
      cmd: ['/bench/berth-bench', 'serve', '--http', '8082', '--tag', 'web'],
    });
    await runContainer({ name: `${NAMES.containerPrefix}l7c`, cmd: ['sleep', '3600'] });
    const nsenter = ['nsenter', '-t', String(await containerPid(`${NAMES.containerPrefix}l7c`)), '-n'];
    const gateway = (await run('docker', ['network', 'inspect', 'bridge', '-f', '{{(index .IPAM.Config 0).Gateway}}'])).stdout.trim() || '172.17.0.1';

    for (let round = 0; round < cfg.rounds; round++) {
      for (const mode of ['ebpf', 'iptables'] as const) {
        if (v[mode].status !== 'ok' && v.envoy.status !== 'ok') continue;
        log(`L7 round ${round + 1}/${cfg.rounds}: berthd --redirect ${mode}`);
        const dm = new Berthd({ ...d.opts, extraArgs: [...(d.opts.extraArgs ?? []), '--redirect', mode] });
        try {
          await dm.start();
        } catch (e) {
          const msg = `berthd --redirect ${mode} does not start: ${(e as Error).message.split('\n')[0]}`;
          if (round === 0 && mode === 'ebpf') return { ...report, status: 'not run', reason: msg };
          v[mode].errors.push(msg);
          if (v[mode].errors.length >= 3) Object.assign(v[mode], { status: 'failed', reason: msg });
          await dm.cleanup().catch(() => undefined);
          continue;
        }
        try {
          const ing = await waitFor('ingress with a listener', async () => {
            const s = (await dm.services()).find((x) => x.name === INGRESS);
            return s && s.kind === 'ingress' && s.listenerPort && s.routes.length ? s : undefined;
          }, 30000, 100).catch((e: Error) => {
            throw new Error(`${e.message} (berthd log: ${dm.tail(5)})`);
          });
          const st = await dm.status();
          if (st.redirect !== mode) throw new Error(`berthd runs redirect ${st.redirect}, not ${mode}`);
          // Safety: the ingress VIP is in berthd's unreachable range.
          if ((await run('ip', ['-o', 'route', 'get', ing.vip])).code === 0) throw new Error(`refusing to send traffic: ${ing.vip} is routable`);
          const url = `http://${ing.vip}/`;
          const direct = `http://${gateway}:${ing.listenerPort}/`;
          const answers = async (u: string) => {
            const r = await run(nsenter[0], [...nsenter.slice(1), 'wrk', '-t1', '-c1', '-d1s', '--timeout', '1s', u], { timeoutMs: 10000 });
            const w = r.stdout.includes('Requests/sec') ? parseWrk(r.stdout) : null;
            return w !== null && w.requests > 0 && w.errors === 0;
          };
          // Envoy takes a moment to get its first config: wait until its listener answers.
          await waitFor("Envoy's listener answers from the client container", () => answers(direct), 20000, 300);
          if (v[mode].status === 'ok') {
            const through = await waitFor(`ingress VIP answers through redirect ${mode}`, () => answers(url), 8000, 300).catch((e: Error) => e);
            if (through instanceof Error) {
              v[mode].errors.push(through.message);
              if (v[mode].errors.length >= 3) Object.assign(v[mode], { status: 'failed', reason: through.message });
            } else {
              await attempt(v[mode], () => wrk(nsenter, url, cfg));
            }
          }
          await attempt(v.envoy, () => wrk(nsenter, direct, cfg));
          await attempt(v.host, () => wrk([], url, cfg));
        } catch (e) {
          v[mode].errors.push((e as Error).message);
          if (v[mode].errors.length >= 3) Object.assign(v[mode], { status: 'failed', reason: (e as Error).message });
          log(`L7 ${mode}: ${(e as Error).message}`);
        } finally {
          await dm.stop();
        }
      }
    }
    await removeContainer(`${NAMES.containerPrefix}l7c`);
  } catch (e) {
    report.status = 'failed';
    report.reason = (e as Error).message;
  } finally {
    await cleanup.unwindTo(mark);
  }
  return report;
}
