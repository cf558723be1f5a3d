/**
 * berth's Envoy: bootstrap under the run dir (ADS over a unix socket, admin on a 0600 unix socket,
 * never a TCP port), supervised by berthd but not tied to its life (it outlives a berthd restart
 * or crash and is adopted by the next one), its log lines folded into berthd's pino log,
 * restarted with capped exponential backoff when it dies.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import crypto from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from '../util/log';
import { run } from '../util/exec';
import type { EnvoyStatus } from './types';
import { FileFollower } from './follow';

export const XDS_CLUSTER = 'berth_xds';

export interface EnvoyPaths {
  bootstrap: string;
  xdsSocket: string;
  adminSocket: string;
  /** JSON {pid, startTime, bootstrap}: the identity of the Envoy berth runs (see EnvoyIdentity). */
  pidFile: string;
  /** Envoy's own log (stdout/stderr); berthd follows it into its log. */
  logFile: string;
  /** JSON access log lines (one per request); berthd follows it into its log. */
  accessLog: string;
}

export function envoyPaths(runDir: string): EnvoyPaths {
  return {
    bootstrap: path.join(runDir, 'envoy.json'),
    xdsSocket: path.join(runDir, 'xds.sock'),
    adminSocket: path.join(runDir, 'envoy-admin.sock'),
    pidFile: path.join(runDir, 'envoy.pid'),
    logFile: path.join(runDir, 'envoy.log'),
    accessLog: path.join(runDir, 'access.log'),
  };
}

/**
 * What makes a process "berth's Envoy": its pid, its start time (field 22 of /proc/<pid>/stat, in
 * clock ticks since boot: a recycled pid has another one) and the hash of the bootstrap it was
 * started with (an Envoy from an older bootstrap must be replaced, not adopted).
 */
export interface EnvoyIdentity {
  pid: number;
  startTime: string;
  bootstrap: string;
}

/** Start time of a process (clock ticks since boot), or null if there is no such process. */
export function processStartTime(pid: number, proc = '/proc'): string | null {
  try {
    const stat = fs.readFileSync(`${proc}/${pid}/stat`, 'utf8');
    // comm (field 2) may contain spaces and ')': the fields after the last ')' are fixed.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); field 22 is rest[19]. A zombie is as good as gone.
    return rest[0] === 'Z' ? null : (rest[19] ?? null);
  } catch {
    return null;
  }
}

/** The identity recorded in the pid file (a bare pid from an older berth counts, without start time). */
export function readIdentity(pidFile: string): EnvoyIdentity | null {
  let text: string;
  try {
    text = fs.readFileSync(pidFile, 'utf8').trim();
  } catch {
    return null;
  }
  if (/^\d+$/.test(text)) return { pid: Number(text), startTime: '', bootstrap: '' };
  try {
    const j = JSON.parse(text) as Partial<EnvoyIdentity>;
    if (Number.isInteger(j.pid) && (j.pid as number) > 1) return { pid: j.pid as number, startTime: String(j.startTime ?? ''), bootstrap: String(j.bootstrap ?? '') };
  } catch { /* not ours */ }
  return null;
}

/**
 * Is the process of this identity alive and really berth's Envoy of this run dir? Its command line
 * must name this run dir's bootstrap, and its start time must be the recorded one (so a recycled
 * pid is never signalled or adopted).
 */
export function isOurEnvoy(id: EnvoyIdentity, bootstrapPath: string, proc = '/proc'): boolean {
  const start = processStartTime(id.pid, proc);
  if (start === null || (id.startTime !== '' && start !== id.startTime)) return false;
  try {
    return fs.readFileSync(`${proc}/${id.pid}/cmdline`, 'utf8').split('\0').includes(bootstrapPath);
  } catch {
    return false;
  }
}

/**
 * Stop berth's Envoy of this run dir (`berth cleanup`, the unit's stop): SIGTERM, SIGKILL after
 * `graceMs`, if the pid file names a process that really is it. Removes the pid file. Returns the
 * pid stopped, or null.
 */
export async function stopEnvoyByPidFile(runDir: string, graceMs = 5000): Promise<number | null> {
  const p = envoyPaths(runDir);
  const id = readIdentity(p.pidFile);
  let stopped: number | null = null;
  if (id && isOurEnvoy(id, p.bootstrap)) {
    try {
      process.kill(id.pid, 'SIGTERM');
      stopped = id.pid;
      const deadline = Date.now() + graceMs;
      while (processStartTime(id.pid) !== null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      if (processStartTime(id.pid) !== null) process.kill(id.pid, 'SIGKILL');
    } catch { /* gone meanwhile */ }
  }
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
        // Reconnect fast when berthd restarts (Envoy's default backoff grows to 30 s): the new
        // berthd's xDS server is back within seconds, and Envoy serves its last config meanwhile.
        grpc_services: [{ envoy_grpc: { cluster_name: XDS_CLUSTER, retry_policy: { retry_back_off: { base_interval: '0.1s', max_interval: '1s' } } } }],
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

/**
 * How long `envoy --version` may take, ms. A warm host answers in ~50 ms; the first exec of the
 * ~150 MB binary from a cold page cache on a slow disk, or under full emulation (the TCG guests of
 * test/vm, where three berthds start at once), took over 20 s, and a timeout reads as "Envoy does
 * not run" until the next try (Proxy.update retries a missing Envoy).
 */
export const ENVOY_VERSION_TIMEOUT_MS = 60000;

/** `envoy --version` -> "1.40.0", or null if the binary does not run (or not within ENVOY_VERSION_TIMEOUT_MS). */
export async function envoyVersion(bin: string): Promise<string | null> {
  const r = await run(bin, ['--version'], { timeoutMs: ENVOY_VERSION_TIMEOUT_MS });
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
  /** Called with each JSON access log line Envoy writes (parsed), if given. */
  onAccess?: (entry: Record<string, unknown>) => void;
}

/**
 * Runs berth's Envoy so that it outlives berthd: started detached (its own session, output to
 * files in the run dir, never a pipe to berthd), recorded in the pid file with its identity, and
 * adopted by the next berthd when that identity checks out and its bootstrap is unchanged. An
 * Envoy that dies is restarted with capped exponential backoff, whether this berthd started it or
 * adopted it (adopted ones are not our children: their exit is noticed by polling /proc).
 */
export class EnvoySupervisor {
  private child: ChildProcess | null = null;
  private pid: number | null = null;
  private pidStart = '';
  private timer: NodeJS.Timeout | null = null;
  private watch: NodeJS.Timeout | null = null;
  private stopping = false;
  private backoffMs: number;
  private startedAt = 0;
  private bin = '';
  private bootstrapHash = '';
  /** The last "missing" message logged (a retry that fails the same way logs nothing). */
  private missingMsg = '';
  private logTail: FileFollower | null = null;
  private accessTail: FileFollower | null = null;
  readonly paths: EnvoyPaths;
  readonly st: Pick<EnvoyStatus, 'state' | 'pid' | 'version' | 'restarts'> & { adopted: boolean } = { state: 'stopped', pid: null, version: null, restarts: 0, adopted: false };

  constructor(private readonly o: SupervisorOptions) {
    this.paths = envoyPaths(o.runDir);
    this.backoffMs = o.backoff?.initialMs ?? 250;
  }

  /**
   * Find Envoy and make sure it runs: adopt the running one if it is ours and was started from the
   * same bootstrap, else start one. A missing binary is not an error for berthd: the state says
   * 'missing' and the next start() tries again (Proxy.update calls it at most every
   * ENVOY_RETRY_MS while ingresses are wanted).
   */
  async start(): Promise<void> {
    this.stopping = false;
    const bin = resolveBinary(this.o.envoyPath);
    // `berth status` during the version probe (seconds in an emulated guest): starting, not stopped.
    if (bin && this.st.state !== 'missing') this.st.state = 'starting';
    const version = bin ? await envoyVersion(bin) : null;
    if (!bin || !version) {
      this.st.state = 'missing';
      this.st.pid = null;
      const msg = bin ? `Envoy at ${bin} does not run (envoy --version failed); ingresses are not served` : `Envoy not found (envoyPath ${this.o.envoyPath}); ingresses are not served`;
      // Retries (Proxy.update) log the same message once, not on every pass.
      if (msg !== this.missingMsg) this.o.logger.error({ envoyPath: this.o.envoyPath }, msg);
      this.missingMsg = msg;
      return;
    }
    if (this.missingMsg) this.o.logger.info({ bin, version }, 'Envoy found; ingresses will be served');
    this.missingMsg = '';
    if (this.stopping) return; // stop() came while `envoy --version` ran
    this.bin = bin;
    this.st.version = version;
    fs.mkdirSync(this.o.runDir, { recursive: true });
    const node = `berth-${os.hostname()}`;
    const text = JSON.stringify(bootstrap(node, this.paths), null, 2);
    this.bootstrapHash = crypto.createHash('sha256').update(text).update(bin).digest('hex').slice(0, 16);
    this.follow();
    const prev = readIdentity(this.paths.pidFile);
    if (prev && isOurEnvoy(prev, this.paths.bootstrap)) {
      if (prev.bootstrap === this.bootstrapHash && prev.startTime !== '') {
        this.adopt(prev);
        return;
      }
      // Started by another berth version with another bootstrap (or binary): it cannot be
      // reconfigured over xDS into this one, so it is replaced (ingress VIPs pause meanwhile).
      this.o.logger.warn({ pid: prev.pid }, 'the running Envoy was started with another bootstrap or binary; replacing it');
      await stopEnvoyByPidFile(this.o.runDir);
    } else if (prev) {
      fs.rmSync(this.paths.pidFile, { force: true });
    }
    if (this.stopping) { // stop() came while the previous Envoy was being stopped
      this.quiesce();
      return;
    }
    fs.writeFileSync(this.paths.bootstrap, text, { mode: 0o600 });
    this.o.logger.info({ bin, version }, 'starting Envoy');
    this.spawn();
  }

  private follow(): void {
    if (!this.logTail) {
      const log = this.o.logger;
      this.logTail = new FileFollower(this.paths.logFile, (line) => {
        const p = parseEnvoyLine(line);
        // Envoy's info lines are its start-up chatter; keep them at debug in berthd's log.
        log[p.level === 'info' ? 'debug' : p.level]({ envoy: p.logger, envoyPid: this.pid }, p.msg);
      }, { fromEnd: true, maxBytes: 4 << 20 });
      this.logTail.start();
    }
    if (!this.accessTail && this.o.onAccess) {
      const cb = this.o.onAccess;
      this.accessTail = new FileFollower(this.paths.accessLog, (line) => {
        try {
          cb(JSON.parse(line) as Record<string, unknown>);
        } catch { /* a cut line */ }
      }, { fromEnd: true, maxBytes: 16 << 20, everyMs: 250 });
      this.accessTail.start();
    }
  }

  private adopt(id: EnvoyIdentity): void {
    this.pid = id.pid;
    this.pidStart = id.startTime;
    this.child = null;
    this.st.pid = id.pid;
    this.st.adopted = true;
    this.st.state = 'starting';
    this.startedAt = Date.now();
    this.o.logger.info({ pid: id.pid }, 'adopted the running Envoy (it kept serving while berthd was away)');
    this.watchPid();
    void this.waitReady(id.pid);
  }

  private spawn(): void {
    // --base-id: derived from the run dir so two berthds (tests, scratch installs) never share
    // Envoy's shared-memory domain; hot restart is disabled anyway (berth restarts Envoy whole).
    const baseId = crypto.createHash('sha256').update(this.o.runDir).digest().readUInt16BE(0) + 1000;
    const args = ['-c', this.paths.bootstrap, '--disable-hot-restart', '--base-id', String(baseId),
      '--log-format', '[%l][%n] %v', '-l', this.o.envoyLogLevel ?? 'info'];
    const out = fs.openSync(this.paths.logFile, 'a', 0o600);
    // detached: its own session and process group, so a signal to berthd's group (Ctrl-C, a
    // supervisor killing the group) does not reach it, and it outlives berthd.
    const child = spawn(this.bin, args, { stdio: ['ignore', out, out], detached: true });
    fs.closeSync(out);
    child.unref();
    this.child = child;
    this.pid = child.pid ?? null;
    this.startedAt = Date.now();
    this.st.state = 'starting';
    this.st.adopted = false;
    this.st.pid = this.pid;
    if (this.pid) {
      this.pidStart = processStartTime(this.pid) ?? '';
      const id: EnvoyIdentity = { pid: this.pid, startTime: this.pidStart, bootstrap: this.bootstrapHash };
      const tmp = `${this.paths.pidFile}.tmp`;
      fs.writeFileSync(tmp, JSON.stringify(id) + '\n');
      fs.renameSync(tmp, this.paths.pidFile);
    }
    child.on('error', (e) => this.o.logger.error({ err: e }, 'Envoy failed to start'));
    child.on('exit', (code, signal) => {
      if (this.child === child) this.exited(code, signal);
    });
    if (this.pid) void this.waitReady(this.pid);
  }

  /** Adopted Envoy: not our child, so its death is seen by polling its /proc entry. */
  private watchPid(): void {
    if (this.watch) clearInterval(this.watch);
    this.watch = setInterval(() => {
      if (this.pid === null || this.child) return;
      if (processStartTime(this.pid) !== this.pidStart) this.exited(null, null);
    }, 250);
    this.watch.unref();
  }

  private exited(code: number | null, signal: NodeJS.Signals | null): void {
    const pid = this.pid;
    this.child = null;
    this.pid = null;
    this.st.pid = null;
    if (this.watch) clearInterval(this.watch);
    this.watch = null;
    fs.rmSync(this.paths.pidFile, { force: true });
    this.logTail?.poll();
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
    this.o.logger.error({ envoyPid: pid, code, signal, restartInMs: delay }, 'Envoy exited; restarting');
    this.timer = setTimeout(() => {
      this.timer = null;
      if (!this.stopping) this.spawn();
    }, delay);
  }

  /** 'running' once the admin socket answers /ready with LIVE. Polls for at most 60 s. */
  private async waitReady(pid: number): Promise<void> {
    const deadline = Date.now() + 60000;
    while (this.pid === pid && Date.now() < deadline) {
      if (await this.adminGet('/ready').then((b) => b.trim() === 'LIVE', () => false)) {
        if (this.pid === pid) this.st.state = 'running';
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

  private quiesce(): void {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.watch) clearInterval(this.watch);
    this.watch = null;
    this.logTail?.stop();
    this.accessTail?.stop();
    this.logTail = null;
    this.accessTail = null;
  }

  /**
   * Leave Envoy running for the next berthd (a restart or upgrade of berthd): stop supervising
   * and following it; it keeps its last configuration while no xDS server answers.
   */
  detach(): void {
    this.quiesce();
    if (this.pid !== null) this.o.logger.info({ pid: this.pid }, 'leaving Envoy running for the next berthd');
    this.child = null;
  }

  /** Stop Envoy (SIGTERM, SIGKILL after 5 s), whether started or adopted by this berthd. */
  async stop(): Promise<void> {
    this.quiesce();
    const pid = this.pid;
    if (pid === null) {
      if (this.st.state !== 'missing') this.st.state = 'stopped';
      return;
    }
    const gone = () => processStartTime(pid) !== this.pidStart;
    try {
      process.kill(pid, 'SIGTERM');
    } catch { /* already gone */ }
    const deadline = Date.now() + 5000;
    while (!gone() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    if (!gone()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch { /* gone */ }
      for (let i = 0; i < 40 && !gone(); i++) await new Promise((r) => setTimeout(r, 25));
    }
    this.child = null;
    this.pid = null;
    this.st.pid = null;
    fs.rmSync(this.paths.pidFile, { force: true });
    this.st.state = 'stopped';
  }
}
