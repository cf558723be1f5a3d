/**
 * The Docker watcher: level-triggered, like traefik's Docker provider. Events are only hints;
 * every snapshot comes from a full list (the containers' list summaries, which carry labels,
 * state, health, ports and addresses, and the networks), so nothing incremental can drift.
 * The order matters: subscribe to events FIRST, then list, so a change
 * that happens during the list is never lost (it triggers one more list).
 *
 * Docker being unreachable is a connection state, never "no containers": the last good snapshot
 * stays, `connection` goes to 'disconnected', and the watcher reconnects forever with capped
 * backoff, re-listing fully once it is back.
 */
import { EventEmitter } from 'node:events';
import { StringDecoder } from 'node:string_decoder';
import './no-ssh'; // before dockerode: no ssh2 (see no-ssh.ts)
import Dockerode from 'dockerode';
import type { Logger } from '../util/log';
import type { ContainerInfo, DockerSnapshot } from '../model/types';
import type { DockerConnection, DockerWatcherApi } from './types';
import { parseDockerHost } from './host';
import { summaryToContainerInfo, toNetworkInfo, type InspectLike, type NetworkLike, type SummaryLike } from './convert';
import { interpret, eventTimeMs, signalNumber, type DockerEvent } from './events';
import { Backoff } from './backoff';
import { sameContainer } from '../model/incremental';
import { phase } from '../util/phases';

const BERTH_PREFIX = 'berth.';
/** Shared copies of strings repeated across containers (network names and ids, label values). */
const interned = new Map<string, string>();
function intern(s: string): string {
  const x = interned.get(s);
  if (x !== undefined) return x;
  if (interned.size >= 100000) interned.clear(); // bounded: a cache, not a registry
  interned.set(s, s);
  return s;
}

const NO_LABELS: Record<string, string> = Object.freeze({}) as Record<string, string>;
const NO_PORTS: ContainerInfo['exposedPorts'] = Object.freeze([]) as unknown as ContainerInfo['exposedPorts'];
const isBerthLabel = (k: string): boolean => k.startsWith(BERTH_PREFIX);

/** The 'changes' event: containers fetched after their events (not emitted when nothing differs). */
export interface ContainerChanges {
  /** Their current state (from a list filtered by id). */
  upserts: ContainerInfo[];
  /** Ids Docker no longer lists. */
  removed: string[];
  /** When the events behind this fetch happened (ms since epoch, the engine's clock). */
  eventTimes: number[];
}

export interface DockerWatcherOptions {
  /** unix:///var/run/docker.sock, /path/to.sock, tcp://host:port (see host.ts). */
  dockerHost: string;
  logger: Logger;
  /** Full re-list this often even without events (default 30 s). */
  resyncMs?: number;
  /**
   * Keep only containers with a `berth.*` label, and of their labels only the `berth.*` ones
   * (berthd: what the model reads, nothing more; default false: everything, for tools and tests).
   */
  berthOnly?: boolean;
  /**
   * With berthOnly: keep containers without berth labels too, with no labels (berthd: they are
   * the clients of per-client-network lists, crossNetwork; the model ignores them).
   */
  clients?: boolean;
  /**
   * At most this many container ids per filtered fetch (default 64); more pending ids are
   * fetched in several calls, one after another. The ids travel in the URL (64 ids ≈ 5 KB):
   * 256 (≈ 20 KB) made a Node HTTP server answer 431 (its header limit is 16 KB), and proxies
   * in front of Docker's socket (nginx: 8 KB) would refuse them too.
   */
  maxFetchIds?: number;
  /** Parallel inspects during a list (default 8): enough to be quick, not a stampede on dockerd. */
  inspectConcurrency?: number;
  /** A Docker call that does not answer within this is a lost connection (default 30 s). */
  callTimeoutMs?: number;
  /** Reconnect backoff bounds (default 250 ms → 10 s). */
  backoffMinMs?: number;
  backoffMaxMs?: number;
}

type EventStream = NodeJS.ReadableStream & { destroy(err?: Error): void };

/** After a network connect/disconnect event, the named container is fetched again after these delays (ms). */
const NETWORK_REFETCH_MS = [100, 500, 2000];

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
  private readonly berthOnly: boolean;
  private readonly clients: boolean;
  private readonly maxFetchIds: number;
  private readonly inspectConcurrency: number;
  private readonly callTimeoutMs: number;
  private readonly backoff: Backoff;

  private state: DockerConnection = 'connecting';
  /** The containers as last listed or fetched (null before the first full list). */
  private containers: Map<string, ContainerInfo> | null = null;
  private networks: DockerSnapshot['networks'] = [];
  private takenAt = 0;
  /** The snapshot object handed out, until the next change (the getter builds it on demand). */
  private last: DockerSnapshot | null = null;
  private reconnectCount = 0;
  private everConnected = false;

  private started = false;
  private stopped = false;
  /** Delayed re-fetches after network connect/disconnect events (see onEvent). */
  private refetchTimers = new Set<NodeJS.Timeout>();
  private loop: Promise<void> | null = null;
  private stream: EventStream | null = null;
  private resyncTimer: NodeJS.Timeout | null = null;
  private wakeSleeper: (() => void) | null = null;

  /**
   * One Docker call at a time: what events ask for accumulates while it runs (container ids to
   * fetch, or a full list) and is fetched in one call after it, so bursts coalesce without a
   * fixed delay and a single event is fetched at once.
   */
  private drain: Promise<void> | null = null;
  /** Container id -> when its events happened (ms, the engine's clock), for event → maps latency. */
  private pendingIds = new Map<string, number[]>();
  private pendingFull = false;
  /** Per-event fetches made (list calls filtered by container id). */
  fetches = 0;

  /** Containers seen being stopped: id → event time (ms, the engine's clock). */
  private readonly stoppingSince = new Map<string, number>();
  /** Each container's configured StopSignal (from the last inspect), for kill-event decoding. */
  private readonly stopSignals = new Map<string, number>();
  /** Inspect calls made (only for stopping containers and unusual kill signals). */
  inspectCalls = 0;

  constructor(opts: DockerWatcherOptions) {
    super();
    this.docker = new Dockerode(parseDockerHost(opts.dockerHost));
    this.log = opts.logger;
    this.resyncMs = opts.resyncMs ?? 30000;
    this.berthOnly = opts.berthOnly ?? false;
    this.clients = opts.clients ?? false;
    this.maxFetchIds = opts.maxFetchIds ?? 64;
    this.inspectConcurrency = Math.max(1, opts.inspectConcurrency ?? 8);
    this.callTimeoutMs = opts.callTimeoutMs ?? 30000;
    this.backoff = new Backoff(opts.backoffMinMs ?? 250, opts.backoffMaxMs ?? 10000);
  }

  get connection(): DockerConnection {
    return this.state;
  }

  /** The containers as Docker last reported them (full list plus per-event fetches since). */
  get snapshot(): DockerSnapshot | null {
    if (!this.containers) return null;
    if (!this.last) this.last = { containers: [...this.containers.values()], networks: this.networks, takenAt: this.takenAt };
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
    for (const t of this.refetchTimers) clearTimeout(t);
    this.refetchTimers.clear();
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    this.resyncTimer = null;
    this.wakeSleeper?.();
    this.stream?.destroy();
    await this.loop?.catch(() => undefined);
    await this.drain?.catch(() => undefined);
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
    if (m.id && m.askStopSignal) void this.learnStopSignal(m.id, ev);
    if (m.id && m.stopping === 'mark' && !this.stoppingSince.has(m.id)) {
      this.stoppingSince.set(m.id, eventTimeMs(ev));
      this.log.debug({ id: m.id.slice(0, 12), action: ev.Action }, 'container stopping');
    } else if (m.id && m.stopping === 'clear') {
      this.stoppingSince.delete(m.id);
    } else if (m.id && m.stopping === 'forget') {
      this.stoppingSince.delete(m.id);
      this.stopSignals.delete(m.id);
    }
    if (!m.relist) return;
    const reason = `${ev.Type ?? 'container'} ${ev.Action ?? ev.status ?? ''}`;
    // A container's own event: fetch that container. A network event naming a container
    // (connect/disconnect): fetch it. A network created or removed changes the VIP rules: list.
    const id = m.id ?? ev.Actor?.Attributes?.container ?? null;
    const ok = id && /^[0-9a-zA-Z_.-]+$/.test(id) ? id : null;
    this.schedule(reason, ok, eventTimeMs(ev));
    // Docker emits a network connect/disconnect event before it checkpoints the container into
    // the view its list reads (moby's ConnectToNetwork/DisconnectFromNetwork log the event, then
    // CheckpointTo), so the fetch right after the event can still show the old networks — measured:
    // a connect never showed up until the next full resync. Fetch that container again a little
    // later, so its level-triggered state catches up with what the event announced.
    if (ok && ev.Type === 'network') {
      for (const ms of NETWORK_REFETCH_MS) {
        const timer = setTimeout(() => {
          this.refetchTimers.delete(timer);
          this.schedule(`${reason} (re-fetch)`, ok);
        }, ms);
        timer.unref();
        this.refetchTimers.add(timer);
      }
    }
  }

  /** Fetch this container (or, with null, list everything) as soon as no other call runs. */
  private schedule(reason: string, id: string | null = null, at = Date.now()): void {
    if (this.stopped) return;
    if (id === null) this.pendingFull = true;
    else {
      const times = this.pendingIds.get(id);
      if (times) {
        if (times.length < 64) times.push(at);
      } else {
        this.pendingIds.set(id, [at]);
      }
    }
    this.kick().catch((e: Error) => {
      // A failed call means the engine is gone or sick: end this session, reconnect and re-list.
      this.log.debug({ err: e.message, reason }, 'Docker fetch failed');
      this.stream?.destroy(e);
    });
  }

  /** Full list (never two calls at once; resolves once a list that began after this call ended). */
  private relist(): Promise<void> {
    this.pendingFull = true;
    return this.kick();
  }

  private kick(): Promise<void> {
    if (!this.drain) {
      this.drain = (async () => {
        // Let the events of this tick (one chunk of the stream) accumulate first.
        await new Promise<void>((r) => setImmediate(r));
        while (!this.stopped && (this.pendingFull || this.pendingIds.size)) {
          if (this.pendingFull) {
            this.pendingFull = false;
            // Containers whose events were waiting: the list brings their change, and it is not
            // one berth missed (see DockerSnapshot.pending).
            const pending = new Set(this.pendingIds.keys());
            this.pendingIds.clear();
            await this.list(pending);
          } else {
            // A backlog is fetched in chunks, never turned into a full list: a full list makes
            // berthd's full sync, O(host), which under churn at 10,000 services took longer than
            // the events took to arrive, so the backlog grew into the next full list (measured:
            // the churn bench's backlog kept growing, and each list counted the pending events
            // as "missed").
            const ids: string[] = [];
            const times: number[] = [];
            for (const [id, t] of this.pendingIds) {
              ids.push(id);
              for (const x of t) times.push(x);
              this.pendingIds.delete(id);
              if (ids.length >= this.maxFetchIds) break;
            }
            await this.fetch(ids, times);
          }
        }
      })().finally(() => {
        this.drain = null;
      });
    }
    return this.drain;
  }

  /**
   * Keep only what berth reads: berth-labelled containers with their berth labels, and (clients)
   * the others in the compact client form; repeated strings shared.
   */
  private convert(s: SummaryLike): ContainerInfo | null {
    if (this.berthOnly) {
      let berth = false;
      for (const k in s.Labels ?? {}) {
        if (k.startsWith(BERTH_PREFIX)) {
          berth = true;
          break;
        }
      }
      // A client (berthd's `clients`): only what berth reads of it — id and name (a
      // `container:<ref>` backend names it), state, network mode, and its networks with their
      // addresses (berth_netns; the netns a `container:` backend shares). No labels, no ports,
      // no health, no creation time: the model ignores it, and an event that changes only those
      // makes no change at all (sameContainer sees the same object).
      if (!berth) return this.clients ? summaryToContainerInfo(s, false, { bare: true, intern, noLabels: NO_LABELS, noPorts: NO_PORTS }) : null;
    }
    // Built compact in one pass (only berth's labels, shared strings, exact-length lists; the
    // watcher used to convert, then copy and filter).
    return summaryToContainerInfo(s, this.stoppingSince.has(s.Id), { intern, noLabels: NO_LABELS, noPorts: NO_PORTS, ...(this.berthOnly ? { keepLabel: isBerthLabel } : {}) });
  }

  /**
   * The level-triggered state of a few containers: the same list call as a full list, filtered
   * by id (so their state comes from Docker, not from the events' payload); a container the list
   * does not return is gone. Emits 'changes' with the containers that differ.
   */
  private async fetch(ids: string[], eventTimes: number[] = []): Promise<void> {
    if (!this.containers) return this.list();
    this.fetches++;
    const summaries = (await bounded(this.callTimeoutMs, 'list containers by id', (abortSignal) =>
      this.docker.listContainers({ all: true, filters: { id: ids }, abortSignal } as Dockerode.ContainerListOptions),
    )) as unknown as SummaryLike[];
    if (this.stopped) return;
    // The id filter matches prefixes: keep exact matches (or the one container a short id named).
    const byId = new Map<string, SummaryLike>();
    for (const s of summaries) byId.set(s.Id, s);
    // No clearMissedStops here: a mark set by this session's events is cleared by the start
    // event that ends it, and marks from before a reconnect were checked by the list that every
    // (re)connect begins with. Inspecting here also blocked the withdrawal itself: the inspect of
    // a container Docker is stopping waits for Docker's container lock, which its exit handling
    // holds (in the emulated cluster guests the kill event's change reached berthd ~20 s late).
    const upserts: ContainerInfo[] = [];
    const removed: string[] = [];
    for (const id of ids) {
      const s = byId.get(id) ?? (id.length < 64 ? summaries.find((x) => x.Id.startsWith(id)) : undefined);
      const fullId = s?.Id ?? id;
      const c = s ? this.convert(s) : null;
      if (c) {
        const old = this.containers.get(fullId);
        this.containers.set(fullId, c);
        if (!old || !sameContainer(old, c)) upserts.push(c);
      } else if (this.containers.delete(fullId)) {
        removed.push(fullId);
      }
      if (!s) {
        this.stoppingSince.delete(fullId);
        this.stopSignals.delete(fullId);
      }
    }
    if (!upserts.length && !removed.length) return;
    this.last = null;
    try {
      this.emit('changes', { upserts, removed, eventTimes } satisfies ContainerChanges);
    } catch (e) {
      this.log.error({ err: (e as Error).stack }, "a 'changes' listener threw");
    }
  }

  /** A start we missed (e.g. while disconnected) ends "stopping": only marked containers are inspected. */
  private async clearMissedStops(marked: string[]): Promise<void> {
    for (const c of await this.inspectAll(marked)) {
      const mark = this.stoppingSince.get(c.Id);
      const started = Date.parse(c.State?.StartedAt ?? '');
      if (mark !== undefined && Number.isFinite(started) && started > mark) this.stoppingSince.delete(c.Id);
    }
  }

  private async list(pending: Set<string> = new Set()): Promise<void> {
    const t0 = Date.now();
    // The list's summaries hold all the model reads, so a list is one call however many
    // containers there are (inspecting each made a cold start on 40,000 containers take 10 s).
    const summaries = (await bounded(this.callTimeoutMs, 'list containers', (abortSignal) =>
      this.docker.listContainers({ all: true, abortSignal }),
    )) as unknown as SummaryLike[];
    phase('Docker list received and parsed');
    const nets = (await bounded(this.callTimeoutMs, 'list networks', (abortSignal) =>
      this.docker.listNetworks({ abortSignal } as Dockerode.NetworkListOptions),
    )) as unknown as NetworkLike[];
    const listed = new Set(summaries.map((s) => s.Id));
    for (const id of [...this.stoppingSince.keys()]) if (!listed.has(id)) this.stoppingSince.delete(id);
    for (const id of [...this.stopSignals.keys()]) if (!listed.has(id)) this.stopSignals.delete(id);
    // A start we missed (e.g. while disconnected) ends "stopping": the run began after the mark.
    // Only the few marked containers are inspected, for their StartedAt, and only on the list
    // that begins a (re)connected session: while the stream is up, start events clear the marks
    // (and an inspect of a container being stopped waits for Docker's lock on it).
    if (this.state !== 'connected') await this.clearMissedStops([...this.stoppingSince.keys()]);
    if (this.stopped) return;

    // Oldest first: Docker lists newest first by exact creation time, and the model breaks ties
    // of the list's whole-second Created by this order. A container that did not change keeps
    // the object it had: a periodic list then leaves the kept state as it was (the model sees
    // the same objects, and the list's new ones die young) instead of replacing 40,000 objects
    // that the garbage collector had already moved to the old generation (measured at 10,000
    // services × 4: RSS rose from 236 to 471 MB over 3 idle full lists 10 s apart).
    const prev = this.containers;
    this.containers = null;
    this.last = null;
    const containers = new Map<string, ContainerInfo>();
    for (let i = summaries.length - 1; i >= 0; i--) {
      const c = this.convert(summaries[i]);
      if (!c) continue;
      const old = prev?.get(c.id);
      containers.set(c.id, old && sameContainer(old, c) ? old : c);
    }
    this.containers = containers;
    phase('Docker list converted');
    this.networks = nets.map(toNetworkInfo).sort((a, b) => a.name.localeCompare(b.name));
    this.takenAt = Date.now();
    // Events that arrived while the list ran are in it too (or in the fetch that follows).
    for (const id of this.pendingIds.keys()) pending.add(id);
    // Kept as `last` too, so that the snapshot getter returns this very object until it changes.
    const snap: DockerSnapshot = (this.last = { ...this.snapshot!, pending });
    // Listeners of the first snapshot after a (re)connect should already read 'connected'.
    if (this.stream) this.markConnected();
    this.log.debug({ containers: containers.size, networks: snap.networks.length, ms: Date.now() - t0 }, 'Docker snapshot');
    try {
      this.emit('snapshot', snap);
    } catch (e) {
      // A listener's bug must not look like Docker being unreachable.
      this.log.error({ err: (e as Error).stack }, "a 'snapshot' listener threw");
    }
  }

  /**
   * A kill event with a signal outside STOP_SIGNALS: inspect the container for its StopSignal
   * (remembered), and if that is the signal, mark it stopping as of the event and re-list.
   */
  private async learnStopSignal(id: string, ev: DockerEvent): Promise<void> {
    try {
      const [c] = await this.inspectAll([id]);
      if (!c || this.stopped) return;
      this.stopSignals.set(id, signalNumber(c.Config?.StopSignal) ?? 15);
      if (interpret(ev, (x) => this.stopSignals.get(x) ?? null).stopping === 'mark' && !this.stoppingSince.has(id)) {
        this.stoppingSince.set(id, eventTimeMs(ev));
        this.log.debug({ id: id.slice(0, 12), signal: ev.Actor?.Attributes?.signal }, 'container stopping (its own StopSignal)');
        this.schedule('kill with the container\'s StopSignal', id);
      }
    } catch (e) {
      this.log.debug({ err: (e as Error).message, id: id.slice(0, 12) }, 'inspect for the StopSignal failed');
    }
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
