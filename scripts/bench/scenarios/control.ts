/**
 * Scenario 2a, the control plane's reaction time: the real berthd (test/helpers/berthd.ts, with
 * directories and a VIP range of the bench's own) watches Docker; for each of K containers we
 * time, from the moment `docker run -d` returns, (a) until the container's own IP answers and
 * (b) until the service VIP answers through THAT container (its tag in the reply). Both waits
 * poll side by side from the same instant, so (b) − (a) is what berth adds: event, re-list,
 * model, map sync. One backend at a time (the previous one is removed and gone from berthd's
 * view before the next run), so the VIP can only answer through the new one.
 */
import net from 'node:net';
import { Berthd } from '../../../test/helpers/berthd';
import { cleanup } from '../lib/cleanup';
import { containerIp, removeContainer, runArgs } from '../lib/docker';
import { NAMES, RANGES, cidrBase, ipv4Add, log, must, nowMs, percentile, run, sleep, summarize, type Summary } from '../lib/util';

export interface ControlConfig {
  containers: number;
}

export interface ControlSample {
  dockerRunMs: number;
  ownMs: number;
  vipMs: number;
}

export interface ControlReport {
  status: 'ok' | 'not run' | 'failed';
  reason: string | null;
  samples: ControlSample[];
  summary: { n: number; own: { p50: number; p99: number; max: number }; vip: { p50: number; p99: number; max: number }; extra: { p50: number; p99: number }; dockerRun: Summary } | null;
  berthdRssMb: number | null;
  /** Containers not measured because Docker failed under the bench (e.g. restarted by another suite). */
  skipped: number;
}

// .10 is berthd's DNS VIP (config dnsVip), reserved: the pinned service VIP is .11.
const VIP = ipv4Add(cidrBase(RANGES.berthd), 11);
const SERVICE = 'bench-cp';

/** One TCP transaction with berth-bench serve; resolves the server's tag. */
function ask(addr: string, port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: addr, port });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => s.destroy(new Error('timeout')), timeoutMs);
    s.on('connect', () => s.write(Buffer.concat([Buffer.from('C'), Buffer.alloc(63, 'x')])));
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 64) {
        clearTimeout(timer);
        s.destroy();
        const end = buf.indexOf(0, 1);
        resolve(buf.subarray(1, end < 0 ? 64 : end).toString());
      }
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on('close', () => {
      clearTimeout(timer);
      reject(new Error('closed'));
    });
  });
}

/** Poll until `addr:port` answers with `tag`; ms since t0, or throws after the bound. */
async function waitAnswer(addr: string, port: number, tag: string, t0: number, boundMs: number): Promise<number> {
  const deadline = t0 + boundMs;
  for (;;) {
    try {
      if ((await ask(addr, port, 250)) === tag) return nowMs() - t0;
    } catch {
      /* not yet */
    }
    if (nowMs() > deadline) throw new Error(`${addr}:${port} did not answer as ${tag} within ${boundMs} ms`);
    await sleep(1);
  }
}

async function rssMb(pid: number | undefined): Promise<number | null> {
  if (!pid) return null;
  const r = await run('ps', ['-o', 'rss=', '-p', String(pid)]);
  return r.code === 0 ? Number(r.stdout.trim()) / 1024 : null;
}

export async function controlScenario(cfg: ControlConfig): Promise<ControlReport> {
  const report: ControlReport = { status: 'ok', reason: null, samples: [], summary: null, berthdRssMb: null, skipped: 0 };
  const mark = cleanup.mark;
  const d = new Berthd({ name: 'bench-cp', serviceCidr: RANGES.berthd, serviceCidr6: RANGES.berthd6, extraArgs: ['--log-level', 'info'] });
  try {
    try {
      cleanup.add('berthd bench-cp', () => d.cleanup());
      await d.start();
    } catch (e) {
      report.status = 'not run';
      report.reason = `berthd does not start: ${(e as Error).message.split('\n')[0]}`;
      return report;
    }
    // Safety: the VIP range is unreachable (berthd's route) before any traffic goes to it.
    if ((await run('ip', ['-o', 'route', 'get', VIP])).code === 0) throw new Error(`refusing to send traffic: ${VIP} is routable`);

    const measureOne = async (name: string, tag: string, into: ControlSample[] | null): Promise<void> => {
      const args = runArgs({
        name,
        labels: { 'berth.service': SERVICE, 'berth.ports': '80:8080', 'berth.vip': VIP },
        cmd: ['/bench/berth-bench', 'serve', '--tcp', '8080', '--tag', tag],
      });
      cleanup.add(`container ${name}`, () => removeContainer(name));
      const tStart = nowMs();
      await must('docker', args, { timeoutMs: 60000 });
      const t0 = nowMs();
      const ip = await containerIp(name);
      const [own, vip] = await Promise.all([waitAnswer(ip, 8080, tag, t0, 10000), waitAnswer(VIP, 80, tag, t0, 10000)]);
      into?.push({ dockerRunMs: t0 - tStart, ownMs: own, vipMs: vip });
      await removeContainer(name);
      // Gone from berthd's view before the next one starts (so only the new one can answer).
      const dl = nowMs() + 15000;
      while (((await d.service(SERVICE))?.backends.length ?? 0) > 0) {
        if (nowMs() > dl) throw new Error(`${name} still a backend of ${SERVICE} 15 s after docker rm`);
        await sleep(20);
      }
    };

    let failures = 0;
    // One unrecorded warm-up container, then until cfg.containers samples are in.
    for (let i = -1; report.samples.length < cfg.containers; i++) {
      const name = `${NAMES.containerPrefix}cp-${i + 1}`;
      const tag = `cp-${i + 1}`;
      try {
        await measureOne(name, tag, i >= 0 ? report.samples : null);
      } catch (e) {
        // This machine is shared: another suite may restart dockerd under us. Skip the sample,
        // wait for Docker (and berthd's view) to settle, go on; give up after a few.
        if (++failures > 3) throw e;
        log(`control plane: container ${i + 1} not measured: ${(e as Error).message}`);
        await removeContainer(name).catch(() => undefined);
        for (let k = 0; k < 60 && (await run('docker', ['version', '--format', '{{.Server.Version}}'])).code !== 0; k++) await sleep(1000);
        continue;
      }
      if (i >= 0 && report.samples.length % 10 === 0) log(`control plane: ${report.samples.length}/${cfg.containers} containers`);
    }
    report.skipped = failures;
    report.berthdRssMb = await rssMb(d.proc?.pid);
    const own = report.samples.map((s) => s.ownMs);
    const vip = report.samples.map((s) => s.vipMs);
    const extra = report.samples.map((s) => s.vipMs - s.ownMs);
    report.summary = {
      n: report.samples.length,
      own: { p50: percentile(own, 0.5), p99: percentile(own, 0.99), max: Math.max(...own) },
      vip: { p50: percentile(vip, 0.5), p99: percentile(vip, 0.99), max: Math.max(...vip) },
      extra: { p50: percentile(extra, 0.5), p99: percentile(extra, 0.99) },
      dockerRun: summarize(report.samples.map((s) => s.dockerRunMs)),
    };
  } catch (e) {
    report.status = 'failed';
    report.reason = (e as Error).message;
  } finally {
    await cleanup.unwindTo(mark);
  }
  return report;
}
