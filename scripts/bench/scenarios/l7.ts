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
 *
 * Issue 10 adds, in the same berthd phases, from the same client namespace:
 *   HTTPS      wrk → https://<TLS_HOST>/ (VIP:443), TLS terminated by the ingress with a leaf of a
 *              CA the bench makes with openssl in a temporary tlsDir (Envoy gets it over SDS),
 *              and wrk → https://<TLS_HOST>:<listener port>/ on the gateway (Envoy direct, the
 *              same listener and filter chain). wrk takes the TLS server name (SNI) from the URL's
 *              host and cannot set it apart, so the name must resolve: wrk runs in a private
 *              mount namespace (unshare -m) whose /etc/resolv.conf names berth's DNS VIP — the
 *              VIP path resolves TLS_HOST (`<ingress>.ingress.<dnsDomain>`) through berth's own
 *              DNS — and whose /etc/hosts maps TLS_HOST to the gateway for the direct path. The
 *              host's files are not touched. curl with the CA checks chain and name first.
 *   WebSocket  ../ws-client.ts (N connections, each a closed loop of 64-byte text frames and
 *              their echoes) → ws://VIP:80/ and → the gateway's listener port; the echo backend
 *              is the integration tests' (test/helpers/l7-backend.ts), run with the host's node.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Berthd, waitFor } from '../../../test/helpers/berthd';
import { cleanup } from '../lib/cleanup';
import { containerPid, removeContainer, runContainer } from '../lib/docker';
import { NAMES, RANGES, REPO, log, must, run } from '../lib/util';
import { wsLoad, type WsResult } from '../lib/wsload';

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

/** A path of the HTTPS or WebSocket part: through the ingress VIP in one redirect mode, or Envoy direct. */
export interface L7PathVariant<R> {
  id: 'ebpf' | 'iptables' | 'envoy';
  label: string;
  status: 'ok' | 'not run' | 'failed';
  reason: string | null;
  runs: R[];
  errors: string[];
}

export interface L7Report {
  status: 'ok' | 'not run' | 'failed';
  reason: string | null;
  /** plain HTTP (wrk) */
  variants: L7Variant[];
  /** HTTPS, TLS terminated by the ingress (wrk: HTTP/1.1 over TLS, no ALPN) */
  https: L7PathVariant<WrkResult>[];
  /** WebSocket echo round trips (ws-client) */
  websocket: L7PathVariant<WsResult>[];
  wrk: string | null;
  /** the machine's 1-minute load average (os.loadavg) at the start of each berthd phase */
  loadavg: number[];
}

const INGRESS = 'bench';
const INGRESS_TLS = 'benchtls';
const INGRESS_WS = 'benchws';
/** The TLS ingress's host: the name berth's DNS gives that ingress (default dnsDomain). */
export const TLS_HOST = `${INGRESS_TLS}.ingress.berth`;
/** The WebSocket echo backend: the integration tests' backend with the host's node bind-mounted. */
const NODE_BINDS = ['/usr/bin:/hostbin:ro', '/usr/lib:/lib:ro', '/usr/lib64:/lib64:ro', `${REPO}:/berth:ro`];
const WS_BACKEND = ['/hostbin/node', '/berth/dist/test/helpers/l7-backend.js', 'ws'];

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

async function wrk(prefix: string[], url: string, cfg: L7Config, extra: string[] = []): Promise<WrkResult> {
  const args = [...prefix, 'wrk', '-t1', `-c${cfg.connections}`, `-d${cfg.seconds}s`, '--timeout', '2s', '--latency', ...extra, url];
  const r = await run(args[0], args.slice(1), { timeoutMs: (cfg.seconds + 20) * 1000 });
  if (r.code !== 0) throw new Error(`wrk ${url} failed (${r.code}): ${(r.stderr || r.stdout).trim().slice(0, 300)}`);
  const res = parseWrk(r.stdout);
  if (res.requests === 0 || res.errors > res.requests / 100) throw new Error(`wrk ${url}: ${res.requests} requests, ${res.errors} errors`);
  return res;
}

/**
 * argv prefix that runs a command in a private mount namespace (`unshare -m`: its mounts are
 * invisible to the host) with `hosts` bind-mounted on /etc/hosts and `resolv` on
 * /etc/resolv.conf, after `outer` (e.g. nsenter -n into the client container). This is how the
 * bench gives wrk a resolvable TLS name without touching the host's files.
 */
export function withResolver(outer: string[], hosts: string, resolv: string): string[] {
  return [...outer, 'unshare', '-m', 'sh', '-c', 'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && shift 2 && exec "$@"', 'sh', hosts, resolv];
}

async function openssl(args: string[], cwd: string): Promise<void> {
  await must('sh', ['-c', 'cd "$0" && exec openssl "$@"', cwd, ...args], { timeoutMs: 60000 });
}

/** A test CA (dir/ca.pem) and <tlsDir>/<host>.crt/.key signed by it (subjectAltName = host). */
async function makeCert(dir: string, tlsDir: string, host: string): Promise<void> {
  await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=berth bench CA'], dir);
  await openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(tlsDir, `${host}.key`), '-out', `${host}.csr`, '-subj', `/CN=${host}`], dir);
  fs.writeFileSync(path.join(dir, 'ext.cnf'), `subjectAltName=DNS:${host}\n`);
  await openssl(['x509', '-req', '-in', `${host}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', '1', '-days', '2', '-extfile', 'ext.cnf', '-out', path.join(tlsDir, `${host}.crt`)], dir);
}

type Outcome<R> = { status: 'ok' | 'not run' | 'failed'; reason: string | null; runs: R[]; errors: string[] };

/** Record a failed attempt; the third one fails the variant (it is not tried again). */
function note<R>(x: Outcome<R>, msg: string): void {
  x.errors.push(msg);
  if (x.errors.length >= 3) Object.assign(x, { status: 'failed', reason: msg });
}

async function attempt<R>(x: Outcome<R>, fn: () => Promise<R>): Promise<void> {
  if (x.status !== 'ok') return;
  try {
    x.runs.push(await fn());
  } catch (e) {
    note(x, (e as Error).message);
  }
}

export async function l7Scenario(cfg: L7Config): Promise<L7Report> {
  const mk = (id: L7Variant['id'], label: string): L7Variant => ({ id, label, status: 'ok', reason: null, runs: [], errors: [] });
  const v = {
    ebpf: mk('ebpf', 'container → ingress VIP, redirect ebpf (tc + bpf_sk_assign)'),
    iptables: mk('iptables', 'container → ingress VIP, redirect iptables (container clients: nat REDIRECT, see README)'),
    envoy: mk('envoy', "container → Envoy's listener port directly (Envoy's own limit)"),
    host: mk('host', 'host → ingress VIP (socket LB straight to Envoy)'),
  };
  const pv = <R>(id: L7PathVariant<R>['id'], label: string): L7PathVariant<R> => ({ id, label, status: 'ok', reason: null, runs: [], errors: [] });
  const https = {
    ebpf: pv<WrkResult>('ebpf', 'container → ingress VIP:443 (name via berth DNS), redirect ebpf'),
    iptables: pv<WrkResult>('iptables', 'container → ingress VIP:443 (name via berth DNS), redirect iptables'),
    envoy: pv<WrkResult>('envoy', "container → Envoy's listener port directly, TLS"),
  };
  const ws = {
    ebpf: pv<WsResult>('ebpf', 'container → ingress VIP:80, redirect ebpf'),
    iptables: pv<WsResult>('iptables', 'container → ingress VIP:80, redirect iptables'),
    envoy: pv<WsResult>('envoy', "container → Envoy's listener port directly"),
  };
  const report: L7Report = {
    status: 'ok', reason: null, variants: [v.ebpf, v.iptables, v.envoy, v.host],
    https: [https.ebpf, https.iptables, https.envoy], websocket: [ws.ebpf, ws.iptables, ws.envoy], wrk: null, loadavg: [],
  };
  const wrkVersion = await run('wrk', ['-v']);
  if (wrkVersion.code === 127) {
    return { ...report, status: 'not run', reason: 'wrk is not installed (scripts/setup installs it)' };
  }
  report.wrk = (wrkVersion.stdout + wrkVersion.stderr).split('\n')[0].trim();
  const mark = cleanup.mark;
  // The TLS material lives in a temporary directory of the bench's own, removed at the end.
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bt-bench-l7-'));
  cleanup.add(`directory ${work}`, () => fs.rmSync(work, { recursive: true, force: true }));
  const tlsDir = path.join(work, 'tls');
  const d = new Berthd({ name: 'bench-l7', serviceCidr: RANGES.berthd, serviceCidr6: RANGES.berthd6, extraArgs: ['--log-level', 'info', '--tls-dir', tlsDir] });
  try {
    fs.mkdirSync(tlsDir);
    await makeCert(work, tlsDir, TLS_HOST);
    const ca = path.join(work, 'ca.pem');
    cleanup.add('berthd bench-l7', () => d.cleanup());
    await runContainer({
      name: `${NAMES.containerPrefix}web`,
      labels: {
        'berth.service': 'bench-web', 'berth.ports': '80:8082', [`berth.http.${INGRESS}.path`]: '/',
        [`berth.http.${INGRESS_TLS}.path`]: '/', [`berth.http.${INGRESS_TLS}.host`]: TLS_HOST, [`berth.http.${INGRESS_TLS}.tls`]: 'true',
      },
      cmd: ['/bench/berth-bench', 'serve', '--http', '8082', '--tag', 'web'],
    });
    await runContainer({
      name: `${NAMES.containerPrefix}ws`,
      labels: { 'berth.service': 'bench-ws', 'berth.ports': '80:8080', [`berth.http.${INGRESS_WS}.path`]: '/' },
      binds: NODE_BINDS,
      cmd: WS_BACKEND,
    });
    await runContainer({ name: `${NAMES.containerPrefix}l7c`, cmd: ['sleep', '3600'] });
    const nsenter = ['nsenter', '-t', String(await containerPid(`${NAMES.containerPrefix}l7c`)), '-n'];
    const gateway = (await run('docker', ['network', 'inspect', 'bridge', '-f', '{{(index .IPAM.Config 0).Gateway}}'])).stdout.trim() || '172.17.0.1';
    // Name resolution for wrk's TLS server name (see the top of this file): the VIP path asks
    // berth's DNS (resolv.conf is written per phase, once the DNS VIP is known), the direct path
    // finds TLS_HOST at the gateway in its hosts file.
    const hostsVia = path.join(work, 'hosts-via-dns');
    const hostsDirect = path.join(work, 'hosts-direct');
    const resolv = path.join(work, 'resolv.conf');
    fs.writeFileSync(hostsVia, '127.0.0.1 localhost\n');
    fs.writeFileSync(hostsDirect, `127.0.0.1 localhost\n${gateway} ${TLS_HOST}\n`);
    fs.writeFileSync(resolv, '');
    const viaDns = withResolver(nsenter, hostsVia, resolv);
    const viaHosts = withResolver(nsenter, hostsDirect, resolv);
    const hostHeader = ['-H', `Host: ${TLS_HOST}`];
    /** HTTPS answers 200 with a certificate the bench's CA signed for TLS_HOST (curl verifies). */
    const httpsAnswers = async (prefix: string[], u: string) => {
      const r = await run(prefix[0], [...prefix.slice(1), 'curl', '-sS', '--max-time', '3', '--cacert', ca, ...hostHeader, '-o', '/dev/null', '-w', '%{http_code}', u], { timeoutMs: 10000 });
      if (r.stdout.trim() !== '200') throw new Error(`${u}: ${r.stdout.trim() || '-'} ${r.stderr.trim().slice(0, 200)}`);
      return true;
    };

    for (let round = 0; round < cfg.rounds; round++) {
      for (const mode of ['ebpf', 'iptables'] as const) {
        if ([v[mode], v.envoy, https[mode], https.envoy, ws[mode], ws.envoy].every((x) => x.status !== 'ok')) continue;
        report.loadavg.push(Number(os.loadavg()[0].toFixed(2)));
        log(`L7 round ${round + 1}/${cfg.rounds}: berthd --redirect ${mode} (load average ${os.loadavg()[0].toFixed(2)})`);
        const dm = new Berthd({ ...d.opts, extraArgs: [...(d.opts.extraArgs ?? []), '--redirect', mode] });
        try {
          await dm.start();
        } catch (e) {
          const msg = `berthd --redirect ${mode} does not start: ${(e as Error).message.split('\n')[0]}`;
          if (round === 0 && mode === 'ebpf') return { ...report, status: 'not run', reason: msg };
          note(v[mode], msg);
          await dm.cleanup().catch(() => undefined);
          continue;
        }
        try {
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
              if (through instanceof Error) note(v[mode], through.message);
              else await attempt(v[mode], () => wrk(nsenter, url, cfg));
            }
            await attempt(v.envoy, () => wrk(nsenter, direct, cfg));
            await attempt(v.host, () => wrk([], url, cfg));
          } catch (e) {
            note(v[mode], (e as Error).message);
            log(`L7 ${mode}: ${(e as Error).message}`);
          }

          // HTTPS: TLS terminated by the ingress, through the VIP (name via berth's DNS) and direct.
          try {
            if (https[mode].status !== 'ok' && https.envoy.status !== 'ok') throw new Error('skipped');
            const tls = await waitFor(`ingress ${INGRESS_TLS} with a listener`, async () => {
              const s = (await dm.services()).find((x) => x.name === INGRESS_TLS && x.kind === 'ingress');
              return s && s.listenerPort && s.routes.length ? s : undefined;
            }, 10000, 100);
            const dns = (await dm.status()).dns;
            if (!dns) throw new Error("berthd's DNS is off: the bench resolves the TLS name through it");
            fs.writeFileSync(resolv, `nameserver ${dns.vip}\noptions timeout:1 attempts:2\n`);
            const direct443 = `https://${TLS_HOST}:${tls.listenerPort}/`;
            await waitFor("Envoy's TLS chain answers from the client container", () => httpsAnswers(viaHosts, direct443), 20000, 300);
            // A failure of the VIP path (e.g. the name answered by some other DNS server on the
            // host) is that path's; Envoy direct is measured regardless.
            if (https[mode].status === 'ok') {
              try {
                // Safety and correctness: the name resolves, through berth's DNS, to the TLS
                // ingress's VIP, which is in berthd's unreachable range.
                const got = (await run(viaDns[0], [...viaDns.slice(1), 'getent', 'ahostsv4', TLS_HOST], { timeoutMs: 10000 })).stdout.trim().split(/\s+/)[0];
                if (got !== tls.vip) throw new Error(`${TLS_HOST} resolves to ${got || 'nothing'} through berth's DNS, not to the ingress VIP ${tls.vip}`);
                if ((await run('ip', ['-o', 'route', 'get', tls.vip])).code === 0) throw new Error(`refusing to send traffic: ${tls.vip} is routable`);
                const through = await waitFor(`HTTPS through redirect ${mode}`, () => httpsAnswers(viaDns, `https://${TLS_HOST}/`), 8000, 300).catch((e: Error) => e);
                if (through instanceof Error) note(https[mode], through.message);
                else await attempt(https[mode], () => wrk(viaDns, `https://${TLS_HOST}/`, cfg, hostHeader));
              } catch (e) {
                note(https[mode], (e as Error).message);
                log(`L7 HTTPS ${mode}: ${(e as Error).message}`);
              }
            }
            await attempt(https.envoy, () => wrk(viaHosts, direct443, cfg, hostHeader));
          } catch (e) {
            if ((e as Error).message !== 'skipped') {
              note(https[mode], (e as Error).message);
              log(`L7 HTTPS ${mode}: ${(e as Error).message}`);
            }
          }

          // WebSocket: echo round trips over cfg.connections connections, through the VIP and direct.
          try {
            if (ws[mode].status !== 'ok' && ws.envoy.status !== 'ok') throw new Error('skipped');
            const wsi = await waitFor(`ingress ${INGRESS_WS} with a listener`, async () => {
              const s = (await dm.services()).find((x) => x.name === INGRESS_WS && x.kind === 'ingress');
              return s && s.listenerPort && s.routes.length ? s : undefined;
            }, 10000, 100);
            const port = wsi.listenerPort!;
            if ((await run('ip', ['-o', 'route', 'get', wsi.vip])).code === 0) throw new Error(`refusing to send traffic: ${wsi.vip} is routable`);
            const probe = { connections: 1, seconds: 0.2 };
            await waitFor('WebSocket echo answers directly', () => wsLoad(nsenter, gateway, port, INGRESS_WS, probe), 20000, 300);
            if (ws[mode].status === 'ok') {
              const through = await waitFor(`WebSocket through redirect ${mode}`, () => wsLoad(nsenter, wsi.vip, 80, INGRESS_WS, probe), 8000, 300).catch((e: Error) => e);
              if (through instanceof Error) note(ws[mode], through.message);
              else await attempt(ws[mode], () => wsLoad(nsenter, wsi.vip, 80, INGRESS_WS, cfg));
            }
            await attempt(ws.envoy, () => wsLoad(nsenter, gateway, port, INGRESS_WS, cfg));
          } catch (e) {
            if ((e as Error).message !== 'skipped') {
              note(ws[mode], (e as Error).message);
              log(`L7 WebSocket ${mode}: ${(e as Error).message}`);
            }
          }
        } finally {
          await dm.stop();
        }
      }
    }
    await removeContainer(`${NAMES.containerPrefix}l7c`);
    await removeContainer(`${NAMES.containerPrefix}ws`);
  } catch (e) {
    report.status = 'failed';
    report.reason = (e as Error).message;
  } finally {
    await cleanup.unwindTo(mark);
  }
  return report;
}
