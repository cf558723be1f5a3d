/**
 * Envoy as a supervised child of berthd: bootstrap under the run dir (ADS over a unix socket,
 * admin on a 0600 unix socket, never a TCP port), its log lines folded into berthd's pino log,
 * restarted with capped exponential backoff when it dies.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import crypto from 'node:crypto';
import readline from 'node:readline';
import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from '../util/log';
import { run } from '../util/exec';
import type { EnvoyStatus } from './types';

export const XDS_CLUSTER = 'berth_xds';

export interface EnvoyPaths {
  bootstrap: string;
  xdsSocket: string;
  adminSocket: string;
  pidFile: string;
}

export function envoyPaths(runDir: string): EnvoyPaths {
  return {
    bootstrap: path.join(runDir, 'envoy.json'),
    xdsSocket: path.join(runDir, 'xds.sock'),
    adminSocket: path.join(runDir, 'envoy-admin.sock'),
    pidFile: path.join(runDir, 'envoy.pid'),
  };
}

/**
 * An Envoy left by a berthd that was killed with -9 keeps running and holds the listener ports.
 * Stop it (SIGKILL) if the pid file names a process that really is an Envoy started with this
 * runDir's bootstrap, and remove the pid file. Returns the pid stopped, or null.
 */
export function stopOrphanEnvoy(runDir: string): number | null {
  const p = envoyPaths(runDir);
  let pid = 0;
  try {
    pid = Number(fs.readFileSync(p.pidFile, 'utf8').trim());
  } catch {
    return null;
  }
  let stopped: number | null = null;
  try {
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    if (pid > 1 && cmd.includes(p.bootstrap)) {
      process.kill(pid, 'SIGKILL');
      stopped = pid;
    }
  } catch { /* gone */ }
  fs.rmSync(p.pidFile, { force: true });
  return stopped;
}

/**
 * The bootstrap is Envoy's own start-up file (not an xDS resource): everything else comes over
 * ADS. Pure, so the unit tests can check it.
 */
export function bootstrap(nodeId: string, p: EnvoyPaths): object {
  const ads = { ads: {}, resource_api_version: 'V3' };
  return {
    node: { id: nodeId, cluster: 'berth' },
    admin: { address: { pipe: { path: p.adminSocket, mode: 0o600 } } },
    dynamic_resources: {
      ads_config: {
        api_type: 'GRPC',
        transport_api_version: 'V3',
        grpc_services: [{ envoy_grpc: { cluster_name: XDS_CLUSTER } }],
        set_node_on_first_message_only: true,
      },
      cds_config: ads,
      lds_config: ads,
    },
    // A cap on downstream connections (Envoy warns at start-up without one); generous for one node.
    overload_manager: {
      resource_monitors: [{
        name: 'envoy.resource_monitors.global_downstream_max_connections',
        typed_config: {
          '@type': 'type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig',
          max_active_downstream_connections: 50000,
        },
      }],
    },
    static_resources: {
      clusters: [{
        name: XDS_CLUSTER,
        type: 'STATIC',
        connect_timeout: '1s',
        load_assignment: {
          cluster_name: XDS_CLUSTER,
          endpoints: [{ lb_endpoints: [{ endpoint: { address: { pipe: { path: p.xdsSocket } } } }] }],
        },
        // gRPC needs HTTP/2 to the control plane.
        typed_extension_protocol_options: {
          'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
            '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
            explicit_http_config: { http2_protocol_options: {} },
          },
        },
      }],
    },
  };
}

/** Resolve 'envoy' (or any bare name) on PATH; a path is taken as is. */
export function resolveBinary(envoyPath: string): string | null {
  if (envoyPath.includes('/')) return fs.existsSync(envoyPath) ? envoyPath : null;
  for (const dir of (process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    const f = path.join(dir || '.', envoyPath);
    try {
      fs.accessSync(f, fs.constants.X_OK);
      return f;
    } catch { /* next */ }
  }
  return null;
}

/** `envoy --version` -> "1.40.0", or null if the binary does not run. */
export async function envoyVersion(bin: string): Promise<string | null> {
  const r = await run(bin, ['--version'], { timeoutMs: 20000 });
  if (r.code !== 0) return null;
  const m = /version: \S+?\/(\d+\.\d+\.\d+)/.exec(r.stdout + r.stderr);
  return m ? m[1] : (r.stdout.trim().split('\n')[0] || null);
}

/** Envoy's log levels -> pino's. */
const LEVELS: Record<string, 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'> = {
  trace: 'trace', debug: 'debug', info: 'info', warning: 'warn', error: 'error', critical: 'fatal',
};

/** Envoy is started with --log-format '[%l][%n] %v'; parse that back into level/logger/message. */
export function parseEnvoyLine(line: string): { level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'; logger: string | null; msg: string } {
  const m = /^\[(\w+)\]\[([\w.-]+)\] ?(.*)$/.exec(line);
  if (!m) return { level: 'info', logger: null, msg: line };
  return { level: LEVELS[m[1]] ?? 'info', logger: m[2], msg: m[3] };
}

export interface SupervisorOptions {
  envoyPath: string;
  runDir: string;
  logger: Logger;
  /** Envoy's own log level (its info level is chatty; berth logs it at debug unless asked). */
  envoyLogLevel?: string;
  backoff?: { initialMs: number; maxMs: number };
}

export class EnvoySupervisor {
  private child: ChildProcess | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopping = false;
  private backoffMs: number;
  private startedAt = 0;
  readonly paths: EnvoyPaths;
  readonly st: Pick<EnvoyStatus, 'state' | 'pid' | 'version' | 'restarts'> = { state: 'stopped', pid: null, version: null, restarts: 0 };

  constructor(private readonly o: SupervisorOptions) {
    this.paths = envoyPaths(o.runDir);
    this.backoffMs = o.backoff?.initialMs ?? 250;
  }

  /**
   * Find and start Envoy. A missing binary is not an error for berthd: the state says 'missing'
   * and the next start() tries again.
   */
  async start(): Promise<void> {
    this.stopping = false;
    const bin = resolveBinary(this.o.envoyPath);
    const version = bin ? await envoyVersion(bin) : null;
    if (!bin || !version) {
      this.st.state = 'missing';
      this.st.pid = null;
      this.o.logger.error({ envoyPath: this.o.envoyPath }, bin ? `Envoy at ${bin} does not run (envoy --version failed); ingresses are not served` : `Envoy not found (envoyPath ${this.o.envoyPath}); ingresses are not served`);
      return;
    }
    this.st.version = version;
    fs.mkdirSync(this.o.runDir, { recursive: true });
    const orphan = stopOrphanEnvoy(this.o.runDir);
    if (orphan) this.o.logger.warn({ pid: orphan }, 'stopped an Envoy left behind by a previous berthd');
    const node = `berth-${os.hostname()}`;
    fs.writeFileSync(this.paths.bootstrap, JSON.stringify(bootstrap(node, this.paths), null, 2), { mode: 0o600 });
    this.o.logger.info({ bin, version }, 'starting Envoy');
    this.spawn(bin);
  }

  private spawn(bin: string): void {
    // --base-id: derived from the run dir so two berthds (tests, scratch installs) never share
    // Envoy's shared-memory domain; hot restart is disabled anyway (berth restarts Envoy whole).
    const baseId = crypto.createHash('sha256').update(this.o.runDir).digest().readUInt16BE(0) + 1000;
    const args = ['-c', this.paths.bootstrap, '--disable-hot-restart', '--base-id', String(baseId),
      '--log-format', '[%l][%n] %v', '-l', this.o.envoyLogLevel ?? 'info'];
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.startedAt = Date.now();
    this.st.state = 'starting';
    this.st.pid = child.pid ?? null;
    if (child.pid) fs.writeFileSync(this.paths.pidFile, `${child.pid}\n`);
    const log = this.o.logger.child({ envoyPid: child.pid });
    for (const s of [child.stdout!, child.stderr!]) {
      readline.createInterface({ input: s }).on('line', (line) => {
        const p = parseEnvoyLine(line);
        // Envoy's info lines are its start-up chatter; keep them at debug in berthd's log.
        const level = p.level === 'info' ? 'debug' : p.level;
        log[level]({ envoy: p.logger }, p.msg);
      });
    }
    child.on('error', (e) => log.error({ err: e }, 'Envoy failed to start'));
    child.on('exit', (code, signal) => {
      if (this.child !== child) return;
      this.child = null;
      this.st.pid = null;
      fs.rmSync(this.paths.pidFile, { force: true });
      if (this.stopping) {
        this.st.state = 'stopped';
        return;
      }
      // A run that lasted a while resets the backoff; a crash loop backs off up to the cap.
      if (Date.now() - this.startedAt > 60000) this.backoffMs = this.o.backoff?.initialMs ?? 250;
      const delay = this.backoffMs;
      this.backoffMs = Math.min(this.backoffMs * 2, this.o.backoff?.maxMs ?? 30000);
      this.st.state = 'restarting';
      this.st.restarts++;
      log.error({ code, signal, restartInMs: delay }, 'Envoy exited; restarting');
      this.timer = setTimeout(() => {
        this.timer = null;
        if (!this.stopping) this.spawn(bin);
      }, delay);
    });
    void this.waitReady(child);
  }

  /** 'running' once the admin socket answers /ready with LIVE. Polls for at most 60 s. */
  private async waitReady(child: ChildProcess): Promise<void> {
    const deadline = Date.now() + 60000;
    while (this.child === child && Date.now() < deadline) {
      if (await this.adminGet('/ready').then((b) => b.trim() === 'LIVE', () => false)) {
        if (this.child === child) this.st.state = 'running';
        return;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** GET on the admin unix socket. */
  adminGet(p: string, timeoutMs = 2000): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = http.get({ socketPath: this.paths.adminSocket, path: p, timeout: timeoutMs }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve(body));
      });
      req.on('timeout', () => req.destroy(new Error('admin request timed out')));
      req.on('error', reject);
    });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const child = this.child;
    if (!child) {
      if (this.st.state !== 'missing') this.st.state = 'stopped';
      return;
    }
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
    this.st.state = 'stopped';
  }
}
