/**
 * The Docker watcher: level-triggered, like traefik's Docker provider. Events are only hints;
 * every snapshot comes from a full list (containers with inspect detail, networks), so nothing
 * incremental can drift. The order matters: subscribe to events FIRST, then list, so a change
 * that happens during the list is never lost (it triggers one more list).
 *
 * Docker being unreachable is a connection state, never "no containers": the last good snapshot
 * stays, `connection` goes to 'disconnected', and the watcher reconnects forever with capped
 * backoff, re-listing fully once it is back.
 */
import { EventEmitter } from 'node:events';
import { StringDecoder } from 'node:string_decoder';
import Dockerode from 'dockerode';
import type { Logger } from '../util/log';
import type { ContainerInfo, DockerSnapshot } from '../model/types';
import type { DockerConnection, DockerWatcherApi } from './types';
import { parseDockerHost } from './host';
import { summarySignature, toContainerInfo, toNetworkInfo, type InspectLike, type NetworkLike, type SummaryLike } from './convert';
import { interpret, eventTimeMs, signalNumber, type DockerEvent } from './events';
import { Backoff } from './backoff';

export interface DockerWatcherOptions {
  /** unix:///var/run/docker.sock, /path/to.sock, tcp://host:port (see host.ts). */
  dockerHost: string;
  logger: Logger;
  /** Full re-list this often even without events (default 30 s). */
  resyncMs?: number;
  /** Coalesce bursts of events (e.g. `docker compose up`) into one list (default 20 ms). */
  debounceMs?: number;
  /** Parallel inspects during a list (default 8): enough to be quick, not a stampede on dockerd. */
  inspectConcurrency?: number;
  /** A Docker call that does not answer within this is a lost connection (default 30 s). */
  callTimeoutMs?: number;
  /** Reconnect backoff bounds (default 250 ms → 10 s). */
  backoffMinMs?: number;
  backoffMaxMs?: number;
}

type EventStream = NodeJS.ReadableStream & { destroy(err?: Error): void };

/**
 * One Docker call bounded in time. The request itself is aborted (dockerode's abortSignal), so a
 * hung engine does not leave a socket per attempt behind; for the event stream the timer only
 * covers getting the response headers, after which the stream lives until it ends.
 */
async function bounded<T>(ms: number, what: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(new Error(`${what}: Docker did not answer within ${ms} ms`)), ms);
  try {
    return await fn(ctl.signal);
  } catch (e) {
    throw ctl.signal.aborted ? (ctl.signal.reason as Error) : e;
  } finally {
    clearTimeout(timer);
  }
}

function statusCode(e: unknown): number | undefined {
  return (e as { statusCode?: number } | null)?.statusCode;
}

export class DockerWatcher extends EventEmitter implements DockerWatcherApi {
  private readonly docker: Dockerode;
  private readonly log: Logger;
  private readonly resyncMs: number;
  private readonly debounceMs: number;
  private readonly inspectConcurrency: number;
  private readonly callTimeoutMs: number;
  private readonly backoff: Backoff;

  private state: DockerConnection = 'connecting';
  private last: DockerSnapshot | null = null;
  private reconnectCount = 0;
  private everConnected = false;

  private started = false;
  private stopped = false;
  private loop: Promise<void> | null = null;
  private stream: EventStream | null = null;
  private debounceTimer: NodeJS.Timeout | null = null;
  private resyncTimer: NodeJS.Timeout | null = null;
  private wakeSleeper: (() => void) | null = null;

  /** At most one list runs; at most one more is queued behind it (bursts coalesce into it). */
  private running: Promise<void> | null = null;
  private queued: Promise<void> | null = null;

  /** Containers seen being stopped: id → event time (ms, the engine's clock). */
  private readonly stoppingSince = new Map<string, number>();
  /** Each container's configured StopSignal (from the last inspect), for kill-event decoding. */
  private readonly stopSignals = new Map<string, number>();
  /**
   * The last inspect of each container with the signature of the list summary it went with.
   * Every reconcile still starts from a full list (level-triggered), but a container whose
   * summary is unchanged and that no event named since is not inspected again: one event on a
   * host of 40,000 containers costs one list and a few inspects, not 40,000. Emptied on every
   * (re)connect, since events may have been missed while away.
   */
  private readonly inspected = new Map<string, { sig: string; c: InspectLike }>();
  /** Inspect calls made (for metrics and the benchmark). */
  inspectCalls = 0;

  constructor(opts: DockerWatcherOptions) {
    super();
    this.docker = new Dockerode(parseDockerHost(opts.dockerHost));
    this.log = opts.logger;
    this.resyncMs = opts.resyncMs ?? 30000;
    this.debounceMs = opts.debounceMs ?? 20;
    this.inspectConcurrency = Math.max(1, opts.inspectConcurrency ?? 8);
    this.callTimeoutMs = opts.callTimeoutMs ?? 30000;
    this.backoff = new Backoff(opts.backoffMinMs ?? 250, opts.backoffMaxMs ?? 10000);
  }

  get connection(): DockerConnection {
    return this.state;
  }

  get snapshot(): DockerSnapshot | null {
    return this.last;
  }

  /** Successful re-connections after a lost connection (the first connect is not counted). */
  get reconnects(): number {
    return this.reconnectCount;
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.loop = this.run();
    this.resyncTimer = setInterval(() => {
      if (this.state === 'connected') this.schedule('resync');
    }, this.resyncMs);
    this.resyncTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    this.resyncTimer = this.debounceTimer = null;
    this.wakeSleeper?.();
    this.stream?.destroy();
    await this.loop?.catch(() => undefined);
    await this.running?.catch(() => undefined);
    await this.queued?.catch(() => undefined);
  }

  // ---- connection loop -------------------------------------------------------------------------

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.session();
        if (!this.stopped) this.log.warn('Docker event stream ended; reconnecting');
      } catch (e) {
        if (!this.stopped) {
          // Every failed attempt at debug; the transition to 'disconnected' below is the warn line.
          this.log.debug({ err: (e as Error).message }, 'Docker connection attempt failed');
          if (this.state !== 'disconnected') this.log.warn({ err: (e as Error).message }, 'Docker unreachable; keeping the last snapshot');
        }
      }
      if (this.stopped) break;
      this.setConnection('disconnected');
      await this.sleep(this.backoff.next());
    }
  }

  /** One connection: subscribe, list, then live on events until the stream ends or a list fails. */
  private async session(): Promise<void> {
    const stream = (await bounded(this.callTimeoutMs, 'subscribe to events', (abortSignal) =>
      this.docker.getEvents({ filters: { type: ['container', 'network'] }, abortSignal } as Dockerode.GetEventsOptions),
    )) as unknown as EventStream;
    if (this.stopped) {
      stream.destroy();
      return;
    }
    this.stream = stream;
    this.inspected.clear();
    const ended = new Promise<void>((resolve, reject) => {
      stream.once('end', () => resolve());
      stream.once('close', () => resolve());
      stream.once('error', (e: Error) => reject(e));
    });
    ended.catch(() => undefined); // awaited below; not an unhandled rejection if the list fails first
    let buf = '';
    const utf8 = new StringDecoder('utf8'); // a chunk may end inside a multi-byte character
    stream.on('data', (chunk: Buffer | string) => {
      buf += typeof chunk === 'string' ? chunk : utf8.write(chunk);
      // The engine writes one JSON object per line; a chunk may hold several or half of one.
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line) this.onEventLine(line);
      }
    });
    try {
      await this.relist();
      if (this.stopped) return;
      this.markConnected();
      await ended;
    } finally {
      this.stream = null;
      stream.destroy();
    }
  }

  /** Subscribed and listed: the engine is back (counted as a reconnect unless it is the first time). */
  private markConnected(): void {
    if (this.state === 'connected') return;
    this.backoff.reset();
    if (this.everConnected) this.reconnectCount++;
    this.everConnected = true;
    this.setConnection('connected');
  }

  private setConnection(s: DockerConnection): void {
    if (this.state === s) return;
    this.state = s;
    if (s === 'connected') this.log.info({ reconnects: this.reconnectCount }, 'Docker connected');
    else this.log.warn({ reconnects: this.reconnectCount }, `Docker ${s}`);
    this.emit('connection', s);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wakeSleeper = done;
    }).then(() => {
      this.wakeSleeper = null;
    });
  }

  // ---- events ----------------------------------------------------------------------------------

  private onEventLine(line: string): void {
    let ev: DockerEvent;
    try {
      ev = JSON.parse(line) as DockerEvent;
    } catch {
      this.log.debug({ line: line.slice(0, 200) }, 'unparsable Docker event line ignored');
      return;
    }
    const m = interpret(ev, (id) => this.stopSignals.get(id) ?? null);
    if (m.id) this.inspected.delete(m.id);
    if (m.id && m.stopping === 'mark' && !this.stoppingSince.has(m.id)) {
      this.stoppingSince.set(m.id, eventTimeMs(ev));
      this.log.debug({ id: m.id.slice(0, 12), action: ev.Action }, 'container stopping');
    } else if (m.id && m.stopping === 'clear') {
      this.stoppingSince.delete(m.id);
    } else if (m.id && m.stopping === 'forget') {
      this.stoppingSince.delete(m.id);
      this.stopSignals.delete(m.id);
    }
    if (m.relist) this.schedule(`${ev.Type ?? 'container'} ${ev.Action ?? ev.status ?? ''}`);
  }

  /** Debounced re-list: a burst of events within debounceMs becomes one list. */
  private schedule(reason: string): void {
    if (this.stopped || this.debounceTimer) return;
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = null;
      this.relist().catch((e: Error) => {
        // A failed list means the engine is gone or sick: end this session, reconnect and re-list.
        this.log.debug({ err: e.message, reason }, 're-list failed');
        this.stream?.destroy(e);
      });
    }, this.debounceMs);
  }

  // ---- listing ---------------------------------------------------------------------------------

  /** Never two lists at once; a request during a list queues exactly one more after it. */
  private relist(): Promise<void> {
    if (!this.running) {
      this.running = this.list().finally(() => {
        this.running = null;
      });
      return this.running;
    }
    if (!this.queued) {
      this.queued = this.running
        .catch(() => undefined)
        .then(() => {
          this.queued = null;
          return this.relist();
        });
    }
    return this.queued;
  }

  private async list(): Promise<void> {
    const t0 = Date.now();
    const summaries = (await bounded(this.callTimeoutMs, 'list containers', (abortSignal) =>
      this.docker.listContainers({ all: true, abortSignal }),
    )) as unknown as SummaryLike[];
    const inspected = await this.inspectChanged(summaries);
    const nets = (await bounded(this.callTimeoutMs, 'list networks', (abortSignal) =>
      this.docker.listNetworks({ abortSignal } as Dockerode.NetworkListOptions),
    )) as unknown as NetworkLike[];
    if (this.stopped) return;

    const containers: ContainerInfo[] = [];
    const seen = new Set<string>();
    for (const c of inspected) {
      seen.add(c.Id);
      const sig = signalNumber(c.Config?.StopSignal);
      if (sig !== null) this.stopSignals.set(c.Id, sig);
      else this.stopSignals.delete(c.Id);
      const mark = this.stoppingSince.get(c.Id);
      // A start we missed (e.g. while disconnected) ends "stopping": the run began after the mark.
      const started = Date.parse(c.State?.StartedAt ?? '');
      if (mark !== undefined && Number.isFinite(started) && started > mark) this.stoppingSince.delete(c.Id);
      containers.push(toContainerInfo(c, this.stoppingSince.has(c.Id)));
    }
    for (const id of [...this.stoppingSince.keys()]) if (!seen.has(id)) this.stoppingSince.delete(id);
    for (const id of [...this.stopSignals.keys()]) if (!seen.has(id)) this.stopSignals.delete(id);

    containers.sort((a, b) => a.id.localeCompare(b.id));
    const snap: DockerSnapshot = {
      containers,
      networks: nets.map(toNetworkInfo).sort((a, b) => a.name.localeCompare(b.name)),
      takenAt: Date.now(),
    };
    this.last = snap;
    // Listeners of the first snapshot after a (re)connect should already read 'connected'.
    if (this.stream) this.markConnected();
    this.log.debug({ containers: containers.length, networks: snap.networks.length, ms: Date.now() - t0 }, 'Docker snapshot');
    try {
      this.emit('snapshot', snap);
    } catch (e) {
      // A listener's bug must not look like Docker being unreachable.
      this.log.error({ err: (e as Error).stack }, "a 'snapshot' listener threw");
    }
  }

  /**
   * The inspect of every listed container: reused from the cache where its summary signature
   * is unchanged, fetched (bounded concurrency) where it is new or changed. A container removed
   * since the list (404) is left out.
   */
  private async inspectChanged(summaries: SummaryLike[]): Promise<InspectLike[]> {
    const sigs = summaries.map((s) => summarySignature(s));
    const stale = summaries.filter((s, i) => this.inspected.get(s.Id)?.sig !== sigs[i]).map((s) => s.Id);
    const staleSet = new Set(stale);
    const fresh = new Map((await this.inspectAll(stale)).map((c) => [c.Id, c]));
    const listed = new Set(summaries.map((s) => s.Id));
    for (const id of [...this.inspected.keys()]) if (!listed.has(id)) this.inspected.delete(id);
    const out: InspectLike[] = [];
    summaries.forEach((s, i) => {
      const c = fresh.get(s.Id);
      if (c) this.inspected.set(s.Id, { sig: sigs[i], c });
      else if (staleSet.has(s.Id)) this.inspected.delete(s.Id); // gone (404) between list and inspect
      const entry = this.inspected.get(s.Id);
      if (entry) out.push(entry.c);
    });
    return out;
  }

  /** Inspect with bounded concurrency; a container removed since the list (404) is skipped. */
  private async inspectAll(ids: string[]): Promise<InspectLike[]> {
    const out: (InspectLike | null)[] = new Array<InspectLike | null>(ids.length).fill(null);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < ids.length && !this.stopped) {
        const i = next++;
        try {
          this.inspectCalls++;
          out[i] = (await bounded(this.callTimeoutMs, 'inspect', (abortSignal) =>
            this.docker.getContainer(ids[i]).inspect({ abortSignal } as Dockerode.ContainerInspectOptions),
          )) as unknown as InspectLike;
        } catch (e) {
          if (statusCode(e) === 404) continue;
          throw e;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.inspectConcurrency, ids.length) }, worker));
    return out.filter((c): c is InspectLike => c !== null);
  }
}
