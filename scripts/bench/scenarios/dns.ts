/**
 * Scenario: berth's DNS. The real berthd (its own range and DNS port) forwards to a stub upstream
 * (a dns-packet server in a child process on 127.0.0.1: nothing leaves the machine). A closed-loop
 * UDP client (this process, `concurrency` queries outstanding, each with its own socket) measures
 * queries/s and latency percentiles for, interleaved round by round:
 *   stub     the stub, asked directly (the reference)
 *   forward  a name outside the zone through the DNS VIP: socket LB -> berthd -> stub
 *   zone     a service name through the DNS VIP, answered by berthd itself
 * Bounded: each variant runs `seconds` per round and at most 200,000 queries.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';
import * as dnsPacket from 'dns-packet';
import { Berthd } from '../../../test/helpers/berthd';
import { cleanup } from '../lib/cleanup';
import { runContainer } from '../lib/docker';
import { RANGES, cidrBase, ipv4Add, log, percentile, sleep, summarize, type Summary } from '../lib/util';

export interface DnsBenchConfig {
  rounds: number;
  seconds: number;
  concurrency: number;
}

export interface DnsVariantRun {
  qps: number;
  p50_ms: number;
  p99_ms: number;
  errors: number;
}

export interface DnsReport {
  status: 'ok' | 'failed';
  reason: string | null;
  variants: { id: string; label: string; runs: DnsVariantRun[] }[];
}

const DNS_VIP = ipv4Add(cidrBase(RANGES.berthd), 10);
const DNS_PORT = 10453;
const MAX_QUERIES = 200_000;

/** The stub upstream, run by `node -e` so that it has an event loop of its own. */
const STUB = `
const dgram = require('node:dgram'); const p = require(process.argv[1]);
const s = dgram.createSocket('udp4');
s.on('message', (m, r) => { try { const q = p.decode(m);
  s.send(p.encode({ id: q.id, type: 'response', flags: p.RECURSION_AVAILABLE, questions: q.questions,
    answers: [{ type: 'A', name: q.questions[0].name, ttl: 30, data: '192.0.2.1' }] }), r.port, r.address); } catch {} });
s.bind(0, '127.0.0.1', () => console.log(s.address().port));
`;

async function startStub(): Promise<{ port: number; proc: ChildProcess }> {
  const proc = spawn(process.execPath, ['-e', STUB, require.resolve('dns-packet')], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    proc.stdout!.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
    proc.once('exit', (c) => reject(new Error(`stub exited ${c}`)));
  });
  return { port, proc };
}

/** Closed loop: `concurrency` workers, each a socket sending its next query when the last is answered. */
async function load(server: string, port: number, name: string, seconds: number, concurrency: number): Promise<DnsVariantRun> {
  const lat: number[] = [];
  let errors = 0;
  const end = performance.now() + seconds * 1000;
  const t0 = performance.now();
  const worker = () => new Promise<void>((resolve) => {
    const s = dgram.createSocket('udp4');
    let id = 0;
    let sent = 0;
    let timer: NodeJS.Timeout | null = null;
    const next = () => {
      if (timer) clearTimeout(timer);
      if (performance.now() >= end || lat.length + errors >= MAX_QUERIES) {
        s.close();
        resolve();
        return;
      }
      id = randomInt(0, 0x10000);
      sent = performance.now();
      s.send(dnsPacket.encode({ id, type: 'query', flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: 'A' }] }), port, server);
      timer = setTimeout(() => { errors++; next(); }, 1000);
    };
    s.on('message', (m) => {
      if (m.readUInt16BE(0) !== id) return;
      lat.push(performance.now() - sent);
      next();
    });
    next();
  });
  await Promise.all(Array.from({ length: concurrency }, worker));
  const secs = (performance.now() - t0) / 1000;
  return { qps: lat.length / secs, p50_ms: percentile(lat, 0.5), p99_ms: percentile(lat, 0.99), errors };
}

export async function dnsScenario(c: DnsBenchConfig): Promise<DnsReport> {
  const report: DnsReport = { status: 'ok', reason: null, variants: [
    { id: 'stub', label: 'stub upstream, directly', runs: [] },
    { id: 'forward', label: 'outside name via the DNS VIP (berthd forwards to the stub)', runs: [] },
    { id: 'zone', label: 'service name via the DNS VIP (berthd answers)', runs: [] },
  ] };
  const mark = cleanup.mark;
  try {
    const stub = await startStub();
    cleanup.add('dns stub', () => stub.proc.kill());
    const d = new Berthd({ name: 'bench-dns', serviceCidr: RANGES.berthd, serviceCidr6: RANGES.berthd6, extraArgs: ['--dns-port', String(DNS_PORT), '--dns-upstreams', `127.0.0.1:${stub.port}`, '--log-level', 'warn'] });
    cleanup.add('berthd bench-dns', () => d.cleanup());
    await d.start();
    await runContainer({ name: 'bench-dns-svc', labels: { 'berth.service': 'benchdns', 'berth.ports': '53/udp' }, cmd: ['sleep', '3600'] });
    for (let i = 0; i < 100; i++) {
      if ((await d.services()).some((s) => s.name === 'benchdns')) break;
      await sleep(100);
    }
    const targets: Record<string, [string, number, string]> = {
      stub: ['127.0.0.1', stub.port, 'www.example.test'],
      forward: [DNS_VIP, 53, 'www.example.test'],
      zone: [DNS_VIP, 53, 'benchdns.berth'],
    };
    for (let round = 0; round < c.rounds; round++) {
      for (const v of report.variants) {
        const [server, port, qname] = targets[v.id];
        const res = await load(server, port, qname, c.seconds, c.concurrency);
        v.runs.push(res);
        log(`dns ${v.id} round ${round + 1}: ${res.qps.toFixed(0)} q/s, p99 ${res.p99_ms.toFixed(2)} ms, ${res.errors} errors`);
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

export function dnsMarkdown(r: DnsReport, fmt: (s: Summary, digits?: number) => string): string {
  if (r.status !== 'ok') return `DNS: ${r.status}: ${r.reason}`;
  const ref = summarize(r.variants[0].runs.map((x) => x.qps)).median;
  const out = ['| path | queries/s | × stub direct | p50 ms | p99 ms | errors |', '|---|---|---|---|---|---|'];
  for (const v of r.variants) {
    const q = summarize(v.runs.map((x) => x.qps));
    out.push(`| ${v.label} | ${fmt(q)} | ${(q.median / ref).toFixed(2)} | ${fmt(summarize(v.runs.map((x) => x.p50_ms)), 2)} | ${fmt(summarize(v.runs.map((x) => x.p99_ms)), 2)} | ${v.runs.reduce((n, x) => n + x.errors, 0)} |`);
  }
  return out.join('\n');
}
