/**
 * A fake Docker engine: an HTTP server on a unix socket of the caller's own that answers the
 * few endpoints berth's watcher uses (/events, /containers/json, /containers/<id>/json,
 * /networks, /version, /_ping), with answers and timing the caller controls. The watcher's
 * unit tests drive its loop logic with it; the benchmark points a real berthd at it to reconcile
 * tens of thousands of synthetic containers (no real engine runs that many on 2 cores).
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

export interface FakeContainer {
  Id: string;
  Name: string;
  Created: number;
  State: { Status: string; StartedAt: string; Health?: { Status: string } };
  Config: { Labels: Record<string, string>; StopSignal?: string; ExposedPorts?: Record<string, object> };
  NetworkSettings: { Networks: Record<string, { NetworkID: string; IPAddress: string; GlobalIPv6Address: string }> };
}

export interface FakeNetwork {
  Id: string;
  Name: string;
  IPAM: { Config: { Subnet: string; Gateway?: string }[] };
}

export class FakeEngine {
  readonly socket: string;
  readonly dir: string;
  containers = new Map<string, FakeContainer>();
  networks: FakeNetwork[] = [{ Id: 'n1', Name: 'bridge', IPAM: { Config: [{ Subnet: '172.17.0.0/16', Gateway: '172.17.0.1' }] } }];
  /** ids whose inspect answers 404 (removed between list and inspect). */
  inspect404 = new Set<string>();
  failInspect = false;
  /** /containers/json answers 500 (an engine in trouble). */
  failList = false;
  listDelayMs = 0;
  /** Paths requested, in order (only kept while recordRequests is on). */
  requests: string[] = [];
  recordRequests = true;
  lists = 0;
  /** Lists filtered by container id (the watcher's per-event fetches); also counted in lists. */
  idLists = 0;
  inspects = 0;
  listsInFlight = 0;
  maxListsInFlight = 0;
  private streams = new Set<http.ServerResponse>();
  private server: http.Server;

  /** An engine listening on <dir>/engine.sock (dir: a fresh temporary directory by default). */
  static async start(dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bt-fake-engine-'))): Promise<FakeEngine> {
    const e = new FakeEngine(dir);
    await new Promise<void>((resolve) => e.server.listen(e.socket, resolve));
    return e;
  }

  private constructor(dir: string) {
    this.dir = dir;
    this.socket = path.join(dir, 'engine.sock');
    this.server = http.createServer((req, res) => void this.handle(req, res));
  }

  get dockerHost(): string {
    return `unix://${this.socket}`;
  }

  /** Stop answering, drop every connection and remove the directory. */
  async close(): Promise<void> {
    for (const s of this.streams) s.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** Push one event to every subscriber. */
  event(ev: object): void {
    for (const s of this.streams) s.write(`${JSON.stringify(ev)}\n`);
  }

  get subscribers(): number {
    return this.streams.size;
  }

  /**
   * A running container on network n1. ip defaults to the next address of 172.17.0.0/16 (so
   * up to 65,000 containers get distinct ones).
   */
  add(id: string, name: string, extra: Partial<FakeContainer['Config']> = {}, startedAt = '2026-01-01T00:00:00.000000000Z', ip?: string): void {
    const n = this.containers.size + 2;
    this.containers.set(id, {
      Id: id, Name: `/${name}`, Created: Math.floor(Date.parse(startedAt) / 1000),
      State: { Status: 'running', StartedAt: startedAt }, Config: { Labels: {}, ...extra },
      NetworkSettings: { Networks: { bridge: { NetworkID: 'n1', IPAddress: ip ?? `172.17.${n >> 8}.${n & 255}`, GlobalIPv6Address: '' } } },
    });
  }

  /** /containers/json's summary of c, as Docker gives it (labels, state, networks included). */
  private summary(c: FakeContainer): object {
    const health = c.State.Health?.Status;
    return {
      Id: c.Id, Names: [c.Name], Created: c.Created, Labels: c.Config.Labels, State: c.State.Status,
      Status: c.State.Status === 'running' ? `Up 5 minutes${health ? ` (${health === 'starting' ? 'health: starting' : health})` : ''}` : 'Exited (0) 1 minute ago',
      Ports: Object.keys(c.Config.ExposedPorts ?? {}).map((k) => ({ PrivatePort: Number(k.split('/')[0]), Type: k.split('/')[1] ?? 'tcp' })),
      NetworkSettings: c.NetworkSettings,
    };
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const p = url.pathname.replace(/^\/v[\d.]+/, '');
    if (this.recordRequests) this.requests.push(p);
    const json = (code: number, body: unknown): void => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (p === '/_ping') return json(200, 'OK');
    if (p === '/version') return json(200, { Version: '99.0.0-fake', ApiVersion: '1.45' });
    if (p === '/events') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.flushHeaders();
      this.streams.add(res);
      res.on('close', () => this.streams.delete(res));
      return;
    }
    if (p === '/containers/json') {
      this.lists++;
      this.listsInFlight++;
      this.maxListsInFlight = Math.max(this.maxListsInFlight, this.listsInFlight);
      if (this.listDelayMs) await new Promise((r) => setTimeout(r, this.listDelayMs));
      this.listsInFlight--;
      if (this.failList) return json(500, { message: 'engine trouble' });
      // Docker's `filters={"id":[...]}` matches id prefixes.
      const ids = (JSON.parse(url.searchParams.get('filters') ?? '{}') as { id?: string[] }).id;
      if (ids) this.idLists++;
      // (Exact ids are looked up, not scanned: the bench fetches one of 40,000 per event.)
      const exact = ids?.map((id) => this.containers.get(id));
      const found = ids && exact!.every((c) => c !== undefined) ? exact as FakeContainer[] : null;
      const all = found ?? [...this.containers.values()];
      return json(200, (ids && !found ? all.filter((c) => ids.some((id) => c.Id.startsWith(id))) : all).map((c) => this.summary(c)));
    }
    const m = /^\/containers\/([^/]+)\/json$/.exec(p);
    if (m) {
      this.inspects++;
      if (this.failInspect) return json(500, { message: 'engine trouble' });
      const c = this.containers.get(m[1]);
      if (!c || this.inspect404.has(m[1])) return json(404, { message: `No such container: ${m[1]}` });
      return json(200, c);
    }
    if (p === '/networks') return json(200, this.networks);
    json(404, { message: 'not faked' });
  }
}
