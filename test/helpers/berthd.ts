/**
 * Run the real berthd (the bundle dist/berthd.js, what systemd runs) for integration tests, in
 * directories of the test's own so that it never collides with a berthd the machine may run,
 * and with a VIP range of the test's own (berthd makes it unreachable off-host at start-up,
 * before any test traffic goes to it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { getJson, getText } from '../../src/api/server';
import { scaled } from './time';
import type { ServiceView, StatusView } from '../../src/cli/format';

export const REPO = path.resolve(__dirname, '../../..');

/**
 * A bundle of `npm run build` (scripts/bundle.ts), by its name below dist/. The tests run the
 * bundles as users do (systemd's ExecStart, scripts/install's wrappers), so a bundle that is
 * missing (e.g. after a bare tsc) stops them here with what to run, rather than testing the
 * unbundled files instead.
 */
function bundle(name: string): string {
  const file = path.join(REPO, 'dist', name);
  if (!fs.existsSync(file)) throw new Error(`${file} is missing: run \`npm run build\` (its build:bundle step, scripts/bundle.ts, makes it)`);
  return file;
}

/** berthd as users run it (dist/berthd.js). */
export const DAEMON = bundle('berthd.js');
/** The CLI as users run it (dist/berth.js). */
export const CLI = bundle('berth.js');

export interface BerthdOptions {
  /** Short unique name: directories are /run/berth-<name>, /var/lib/berth-<name>, /sys/fs/bpf/berth-<name>. */
  name: string;
  /** IPv4 VIP range for this test (default 10.96.0.0/16). */
  serviceCidr?: string;
  serviceCidr6?: string;
  extraArgs?: string[];
  env?: NodeJS.ProcessEnv;
  /** Options for node itself, before the script (e.g. --cpu-prof, which NODE_OPTIONS refuses). */
  nodeArgs?: string[];
  /** Another build's berthd script (default: $BERTH_DAEMON, else this checkout's DAEMON), for
   * A/B measurements (`BERTH_DAEMON=/other/checkout/dist/berthd.js npm run bench …`). */
  daemon?: string;
}

export function berthdArgs(o: BerthdOptions): string[] {
  return [
    '--run-dir', `/run/berth-${o.name}`,
    '--state-dir', `/var/lib/berth-${o.name}`,
    '--bpf-pin-dir', `/sys/fs/bpf/berth-${o.name}`,
    '--service-cidr', o.serviceCidr ?? '10.96.0.0/16',
    '--service-cidr6', o.serviceCidr6 ?? 'fd00:96::/112',
    '--log-level', 'debug',
    ...(o.extraArgs ?? []),
  ];
}

export class Berthd {
  readonly socket: string;
  readonly logFile: string;
  proc: ChildProcess | null = null;
  private exited: Promise<number | null> = Promise.resolve(null);

  constructor(readonly opts: BerthdOptions) {
    this.socket = `/run/berth-${opts.name}/berth.sock`;
    this.logFile = `/tmp/berthd-${opts.name}.log`;
    // A fresh log per instance: tests read it, and must not see an earlier run's lines. (Restarts
    // of this instance append, so a test can follow one daemon across kill -9 and start.)
    fs.rmSync(this.logFile, { force: true });
  }

  get args(): string[] {
    return berthdArgs(this.opts);
  }

  /**
   * Start berthd and wait until it reports ready, or (until: 'serving') only until its admin
   * socket answers: a berthd that cannot list Docker never becomes ready.
   */
  async start(timeoutMs = 30000, until: 'ready' | 'serving' = 'ready'): Promise<void> {
    const log = fs.openSync(this.logFile, 'a');
    const proc = spawn(process.execPath, [...(this.opts.nodeArgs ?? []), this.opts.daemon ?? process.env.BERTH_DAEMON ?? DAEMON, ...this.args], {
      stdio: ['ignore', log, log],
      env: { ...process.env, ...(this.opts.env ?? {}) },
    });
    fs.closeSync(log);
    this.proc = proc;
    this.exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
    if (until === 'ready') await this.waitReady(timeoutMs);
    else await waitFor('berthd admin socket', async () => (await getJson<{ ok: boolean }>(this.socket, '/healthz', scaled(1000))).ok, timeoutMs, 100);
  }

  /** Wait until /healthz says ready; timeoutMs is stretched by BERTH_TEST_TIME_SCALE (helpers/time). */
  async waitReady(timeoutMs = 30000): Promise<void> {
    timeoutMs = scaled(timeoutMs);
    const deadline = Date.now() + timeoutMs;
    let lastErr = '';
    while (Date.now() < deadline) {
      if (this.proc && this.proc.exitCode !== null) throw new Error(`berthd exited with ${this.proc.exitCode}:\n${this.tail()}`);
      try {
        const st = await getJson<{ ready: boolean }>(this.socket, '/healthz', scaled(1000));
        if (st.ready) return;
      } catch (e) {
        lastErr = (e as Error).message;
      }
      await sleep(100);
    }
    throw new Error(`berthd not ready after ${timeoutMs} ms (${lastErr}):\n${this.tail()}`);
  }

  /** The last lines of berthd's log, for failure messages. */
  tail(lines = 40): string {
    try {
      return fs.readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  services(): Promise<ServiceView[]> {
    return getJson<ServiceView[]>(this.socket, '/services');
  }

  status(): Promise<StatusView> {
    return getJson<StatusView>(this.socket, '/status');
  }

  metrics(): Promise<string> {
    return getText(this.socket, '/metrics');
  }

  /** One value of /metrics, e.g. metric('berth_reconciles_total{result="skipped"}'); 0 when absent. */
  async metric(name: string): Promise<number> {
    return parseProm(await this.metrics()).get(name) ?? 0;
  }

  async service(name: string): Promise<ServiceView | undefined> {
    return (await this.services()).find((s) => s.name === name);
  }

  /** Wait (up to `ms`) until service `name` is listed and `ok` holds for it; throws naming it. */
  async waitService(name: string, ok: (s: ServiceView) => boolean = () => true, ms = 15000): Promise<ServiceView> {
    return waitFor(`service ${name}`, async () => {
      const s = await this.service(name);
      return s && ok(s) ? s : undefined;
    }, ms);
  }

  /** SIGTERM and wait for exit. */
  async stop(): Promise<number | null> {
    if (!this.proc || this.proc.exitCode !== null) return this.proc?.exitCode ?? null;
    this.proc.kill('SIGTERM');
    return this.exited;
  }

  /** kill -9: no chance to clean anything up. */
  async kill9(): Promise<void> {
    if (!this.proc || this.proc.exitCode !== null) return;
    this.proc.kill('SIGKILL');
    await this.exited;
  }

  /** `berth cleanup` with this instance's directories and ranges (always, also after failures). */
  async cleanup(): Promise<string> {
    await this.stop().catch(() => undefined);
    const r = await runCli(['cleanup', '--force', ...this.args.filter((a, i, all) => a !== '--log-level' && all[i - 1] !== '--log-level')]);
    if (r.code !== 0) throw new Error(`berth cleanup failed (${r.code}): ${r.stderr}`);
    return r.stdout;
  }
}

/** Parse Prometheus text exposition into name{labels} -> value. */
export function parseProm(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)/.exec(line);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}

export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Poll fn until it returns a truthy value (returned) or the bound passes (throws with the last
 * value). timeoutMs is stretched by BERTH_TEST_TIME_SCALE (helpers/time; 1 on the host).
 */
export async function waitFor<T>(what: string, fn: () => Promise<T> | T, timeoutMs = 10000, everyMs = 50): Promise<NonNullable<T>> {
  timeoutMs = scaled(timeoutMs);
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      last = await fn();
      if (last) return last as NonNullable<T>;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
    await sleep(everyMs);
  }
}
