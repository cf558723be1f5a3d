/**
 * The admin API: HTTP+JSON on a unix socket (mode 0600, so only root talks to berthd), and
 * optionally /metrics on a TCP address. Handlers are plain functions returning JSON-able data;
 * the daemon owns the state, this module only serves it.
 */
import fs from 'node:fs';
import http from 'node:http';
import type { Logger } from '../util/log';

export type Handler = () => unknown | Promise<unknown>;

export interface ApiRoutes {
  [path: string]: Handler;
}

export interface MetricsEndpoint {
  text(): Promise<string>;
  contentType: string;
}

function makeServer(routes: ApiRoutes, metrics: MetricsEndpoint | null, log: Logger): http.Server {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://berth');
    const done = (status: number, body: string, type = 'application/json') => {
      res.writeHead(status, { 'content-type': type });
      res.end(body);
    };
    if (req.method !== 'GET') return done(405, JSON.stringify({ error: 'only GET is served' }));
    if (url.pathname === '/metrics' && metrics) {
      metrics.text().then((t) => done(200, t, metrics.contentType), (e: Error) => done(500, `# error: ${e.message}\n`, 'text/plain'));
      return;
    }
    const handler = routes[url.pathname];
    if (!handler) return done(404, JSON.stringify({ error: `no such endpoint ${url.pathname}`, endpoints: Object.keys(routes) }));
    Promise.resolve()
      .then(handler)
      .then(
        (data) => done(200, JSON.stringify(data, null, 2) + '\n'),
        (e: Error) => {
          log.error({ err: e, path: url.pathname }, 'admin API handler failed');
          done(500, JSON.stringify({ error: e.message }));
        },
      );
  });
  // A client may close its sending side right after the request (`printf 'GET ...' | socat -
  // UNIX-CONNECT:...`, `nc -N`). Node's HTTP server then ends the connection at once by default,
  // and a handler still waiting (/services waits up to 2 s for a running reconcile) answered
  // into a closed socket: the client got nothing. Found in the VM cluster test, where the busiest
  // guest's /services came back empty three runs in a row. Half-open: the answer is still sent.
  // (httpAllowHalfOpen is Node's own switch for this, on every http.Server since 0.x; not typed.)
  (server as http.Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  return server;
}

function listen(server: http.Server, arg: string | { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const cb = () => { server.off('error', reject); resolve(); };
    if (typeof arg === 'string') server.listen(arg, cb);
    else server.listen(arg.port, arg.host, cb);
  });
}

export class AdminApi {
  private servers: http.Server[] = [];
  constructor(private readonly log: Logger) {}

  /** Serve routes (+ /metrics) on the unix socket; a stale socket from a killed berthd is replaced. */
  async listenUnix(path: string, routes: ApiRoutes, metrics: MetricsEndpoint): Promise<void> {
    fs.rmSync(path, { force: true });
    const server = makeServer(routes, metrics, this.log);
    // Create the socket under a 0077 umask so there is no window where it is world-connectable.
    const old = process.umask(0o077);
    try {
      await listen(server, path);
    } finally {
      process.umask(old);
    }
    fs.chmodSync(path, 0o600);
    this.servers.push(server);
  }

  /** /metrics only, on host:port (metricsAddress). */
  async listenMetrics(address: string, metrics: MetricsEndpoint): Promise<void> {
    const m = /^(?:\[(.+)\]|([^:]+)):(\d+)$/.exec(address);
    if (!m) throw new Error(`bad metrics address ${address}`);
    const server = makeServer({}, metrics, this.log);
    await listen(server, { host: m[1] ?? m[2], port: Number(m[3]) });
    this.servers.push(server);
  }

  async close(): Promise<void> {
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => { s.close(() => r()); s.closeAllConnections(); })));
    this.servers = [];
  }
}

/**
 * Client side, for the CLI and tests: GET a path over the unix socket, parsed as JSON.
 * `timeoutMs` bounds the silence on the socket (default CLI_TIMEOUT_MS). Rejects on a status
 * >= 400, a timeout or a connection error, naming the path.
 */
export function getJson<T = unknown>(socketPath: string, path: string, timeoutMs = CLI_TIMEOUT_MS): Promise<T> {
  return getText(socketPath, path, timeoutMs).then((t) => JSON.parse(t) as T);
}

/**
 * How long the CLI waits for berthd's answer, ms. /services waits up to 2 s for a running
 * reconcile and then builds its view; on a loaded host (measured: a starved emulated guest of the
 * cluster test) 5 s was not always enough, and a CLI that gives up is worse than one that waits.
 */
export const CLI_TIMEOUT_MS = 15000;

/** getJson's text form (same bounds and errors). */
export function getText(socketPath: string, path: string, timeoutMs = CLI_TIMEOUT_MS): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        if ((res.statusCode ?? 500) >= 400) reject(new Error(`berthd answered ${res.statusCode} for ${path}: ${body.trim()}`));
        else resolve(body);
      });
    });
    req.on('timeout', () => req.destroy(new Error(`berthd did not answer ${path} within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}
