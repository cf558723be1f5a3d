/**
 * berthd's life cycle and its one reconcile loop.
 *
 * Level-triggered, incremental where it pays and whole where it guards (DESIGN lessons 7, 13):
 *  - a Docker event makes the watcher fetch that container's state (a list filtered by id); the
 *    incremental model re-derives only its service, and the datapath writes only that service's
 *    entries, planned against berth's in-memory view of the maps;
 *  - every full list (start, each Docker reconnect, every resyncInterval) brings the model to
 *    exactly that list and runs a full datapath sync: dump the maps, compare with the view,
 *    repair, and report any drift (log line + berth_drift_repaired_total{kind}).
 * While Docker is unreachable the model keeps the last state and no reconcile withdraws anything.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from '../util/log';
import type { LoadedConfig } from './config';
import type { ContainerInfo, DesiredState, DockerSnapshot, LabelError, Service } from '../model/types';
import type { DatapathApi, SyncResult } from '../datapath/types';
import type { ProxyApi } from '../proxy/types';
import { Datapath } from '../datapath';
import { Proxy } from '../proxy';
import { DockerWatcher, type ContainerChanges } from '../docker/watcher';
import { VipStore } from '../model';
import { storeKey } from '../model/vipstore';
import { serviceOrder } from '../model/desired';
import { IncrementalModel, type ModelDelta } from '../model/incremental';
import { AdminApi } from '../api/server';
import { Metrics } from '../api/metrics';
import { Notifier } from './notify';
import { ServiceDns } from '../dns';
import { applyCrossnet, crossnetHow, type CrossnetStatus } from '../datapath/crossnet';
import { clientNetworks, networkNumbers } from '../datapath/netlists';
import type { Cluster } from '../cluster';
import { syncPeerRoutes } from '../cluster/routes';
import { syncPeerAccepts, type PeerAcceptStatus } from '../cluster/firewall';
import { routeMetric } from '../datapath/routes';
import { collectGarbage, reduceHeap, reduceHeapFully, trimCHeap } from '../util/gc';
import { QuietCollector } from '../util/quiet-collector';
import { phase, done as phasesDone, heapSpaces } from '../util/phases';
import { packageRoot } from '../util/root';

export const VERSION: string = (() => {
  try {
    return (JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
})();

/** A backend with something to say (Backend.reason), as `berth status --json` lists it. */
interface BackendWarning {
  service: string;
  container: string;
  reachable: boolean;
  reason: string | null | undefined;
}

/** The warnings of one service's backends (empty when none has a reason). */
function warningsOf(s: Service): BackendWarning[] {
  const out: BackendWarning[] = [];
  for (const b of s.backends) if (b.reason) out.push({ service: s.name, container: b.container, reachable: b.reachable !== false, reason: b.reason });
  return out;
}

interface ReconcileRecord {
  at: string;
  durationMs: number;
  sync: SyncResult | null;
  proxyErrors: { ingress: string; error: string }[];
  error: string | null;
}

/**
 * What the cluster asks of the host's routes and BERTH_PEERS, as one comparable string: the
 * host-rules lane runs them again between repair passes only when this changed.
 */
function peerRulesKey(cl: Cluster): string {
  return JSON.stringify([cl.routes(), cl.accepts()]);
}

/** Every address configured on the host, to keep VIPs from shadowing one of them. */
export function hostAddresses(): string[] {
  return Object.values(os.networkInterfaces())
    .flat()
    .filter((a): a is os.NetworkInterfaceInfo => !!a)
    .map((a) => a.address.replace(/%.*$/, ''));
}

export class Daemon {
  private datapath: DatapathApi | null = null;
  private proxy: ProxyApi | null = null;
  /** berth's DNS server and the DNS VIP (null when dnsPort is off). */
  private dns: ServiceDns | null = null;
  private watcher: DockerWatcher | null = null;
  private readonly api: AdminApi;
  readonly metrics: Metrics;
  private readonly notifier = new Notifier();
  private store!: VipStore;
  /** Cluster mode (etcdEndpoints set); null on a single host. */
  private cluster: Cluster | null = null;
  /**
   * Cluster mode: the last merge of the local model with the peers' backends (cluster/merge.ts),
   * in the model's order and by storeKey; what the datapath, proxy, DNS and the API see. Null on
   * a single host (then the model's own services are the desired state).
   */
  private merged: { list: Service[]; byKey: Map<string, Service> } | null = null;
  /** etcd reported a change (remote backends, nodes, VIP assignments) since the last reconcile. */
  private clusterPending = false;
  /** The cluster VIP assignments the model last placed with (JSON). */
  private clusterVipsKey = '';

  private model: IncrementalModel | null = null;
  /** Set by the first reconcile from a full list (before it, nothing is known). */
  private desired: DesiredState | null = null;
  /** A full list arrived since the last full sync. */
  private fullPending = false;
  private haveList = false;
  /** Names of services/ingresses changed since the last reconcile. */
  private dirtyNames = new Set<string>();
  /** The proxy wants a pass (rule repair tick). */
  private proxyPending = false;
  /** Datapath and proxy errors per service name (the model's own are in Service.errors). */
  private runErrors = new Map<string, string[]>();
  private loggedLabelErrors = new Set<string>();
  /** Docker's networks from the last full list (the DNS VIP's backend address depends on them). */
  private networks: DockerSnapshot['networks'] = [];
  /** Times of the Docker events whose changes the next reconcile applies. */
  private eventTimes: number[] = [];
  /** Event → maps latency (ms) of the most recent events (a ring), and how many were applied. */
  private readonly eventLatency = { applied: 0, recentMs: [] as number[] };
  private last: ReconcileRecord | null = null;
  private ready = false;
  private becomingReady = false;
  private proxyStarted: Promise<void> = Promise.resolve();
  private stopping = false;
  /** When the reconcile now running began (0: none running); the watchdog checks it. */
  private reconcileSince = 0;
  private running: Promise<void> | null = null;
  private dirty = false;
  private resyncTimer: NodeJS.Timeout | null = null;
  private watchdogTimer: NodeJS.Timeout | null = null;
  /**
   * A memory-reducing collection 1 s after the last event-driven reconcile, when RSS grew by
   * 32 MB or more since the last collection (util/quiet-collector.ts: why, and what it measured).
   */
  private readonly quietGc = new QuietCollector({
    quietMs: 1000,
    minGrowthBytes: 32 * 1048576,
    rss: () => process.memoryUsage.rss(),
    collect: () => {
      const rssBefore = process.memoryUsage.rss();
      const gcMs = reduceHeap() ?? collectGarbage();
      trimCHeap();
      this.log.debug({ gcMs: gcMs === null ? null : Math.round(gcMs), rssMbBefore: Math.round(rssBefore / 1048576), rssMbAfter: Math.round(process.memoryUsage.rss() / 1048576) }, 'garbage collected after the events paused');
    },
  });
  private lastStatusLine = '';
  /** What the last crossNetwork apply found and did (null before the first). */
  private crossnet: CrossnetStatus | null = null;
  /** Cluster mode: BERTH_PEERS as last applied (null before the first pass). */
  private peerAccept: PeerAcceptStatus[] | null = null;
  /** The host-rules lane (kickHostRules): the run in flight, another wanted, crossNetwork wanted. */
  private rulesRunning: Promise<void> | null = null;
  private rulesCrossNetwork = false;
  /** Cluster mode: the peer routes and accepts wanted by a request (see kickHostRules). */
  private rulesPeers = false;
  /** peerRulesKey() of the last run that applied the peer routes and accepts (null before the first); a failed run is retried by the next repair pass, not by a key change. */
  private peerRulesKey: string | null = null;
  /** Requests made, requests covered by finished runs, and who waits for which. */
  private rulesGen = 0;
  private rulesDoneGen = 0;
  private rulesWaiters: { gen: number; resolve: () => void }[] = [];
  /**
   * Every container Docker lists (labelled or not; the watcher keeps them with no labels): the
   * clients of per-client-network lists (berth_netns) and the targets of `container:` modes.
   */
  private allContainers = new Map<string, ContainerInfo>();
  /** Containers that came, went or changed since berth_netns was last written (by id). */
  private clientIds = new Set<string>();
  /** Client containers whose netns was not found yet: retried with the next reconcile. */
  private clientRetry = new Set<string>();
  /** Writing berth_netns failed: the next reconcile writes every client (syncClients). */
  private clientsFull = false;
  /** Whether client lookups matter (docker mode, or a backend on several networks); from the last full pass. */
  private clientsNeeded = false;
  /** The network numbers the maps were last fully synced with (a change needs a full sync). */
  private netKey = '';
  /**
   * `berth status` backendWarnings per service with any (by storeKey), kept by the reconcile
   * that changes them: /status answers without walking every backend of every service (at
   * 10,000 services that walk cost 6 ms per request on the one event loop, delaying events).
   */
  private warnings = new Map<string, { name: string; kind: Service['kind']; list: BackendWarning[] }>();
  readonly startedAt = new Date();

  constructor(private readonly cfg: LoadedConfig, private readonly log: Logger) {
    this.api = new AdminApi(log);
    this.metrics = new Metrics({
      services: () => ({
        service: this.desired ? this.counts().service : 0,
        ingress: this.desired ? this.counts().ingress : 0,
      }),
      backends: () => (this.desired ? this.services() : []).reduce((n, s) => n + (s.kind === 'service' ? s.backends.filter((b) => b.reachable !== false).length : 0), 0) ?? 0,
      labelErrors: () => this.labelErrors().length,
      dockerReconnects: () => this.watcher?.reconnects ?? 0,
      envoyRestarts: () => this.proxy?.status().envoy.restarts ?? 0,
      ready: () => this.ready,
      extraText: () => this.proxy?.metricsText?.() ?? Promise.resolve(''),
      // Cluster gauges exist only in cluster mode.
      ...(cfg.config.etcdEndpoints.length > 0 ? { cluster: () => this.cluster?.status() ?? null } : {}),
      serviceCounters: () => {
        if (!this.datapath) throw new Error('datapath not open');
        return this.datapath.counters();
      },
    });
  }

  private get c() {
    return this.cfg.config;
  }

  async start(): Promise<void> {
    const c = this.c;
    phase('modules loaded');
    this.notifier.status('starting: opening the datapath');
    fs.mkdirSync(c.runDir, { recursive: true, mode: 0o700 });
    fs.mkdirSync(c.stateDir, { recursive: true, mode: 0o700 });
    this.store = VipStore.load(path.join(c.stateDir, 'vips.json'));

    // The datapath first: it adopts whatever a previous berthd left pinned, so VIPs keep working
    // while the rest comes up. Failing to attach is fatal (exit non-zero, systemd retries).
    const datapath = await Datapath.open({
      pinDir: c.bpfPinDir,
      cgroupRoot: c.cgroupRoot,
      hostProc: c.hostProc,
      runDir: c.runDir,
      serviceCidr: c.serviceCidr,
      serviceCidr6: c.serviceCidr6,
      crossNetwork: c.crossNetwork,
      logger: this.log.child({ part: 'datapath' }),
    });
    this.datapath = datapath;
    phase('datapath opened');
    const dp = datapath.status();
    this.log.info({ cgroupRoot: dp.cgroupRoot, cgroupIsHostRoot: dp.cgroupIsHostRoot, attached: dp.attached }, 'socket programs attached');
    if (!dp.cgroupIsHostRoot) {
      this.log.error({ cgroupRoot: dp.cgroupRoot }, 'the attach point is NOT the host root cgroup: only processes below it see VIPs');
    }

    await this.api.listenUnix(path.join(c.runDir, 'berth.sock'), {
      '/services': () => this.settled().then(() => this.servicesView()),
      '/status': () => this.statusView(),
      '/healthz': () => ({ ok: true, ready: this.ready }),
    }, this.metrics);
    if (c.metricsAddress) await this.api.listenMetrics(c.metricsAddress, this.metrics);

    if (c.dnsPort !== null) {
      this.dns = new ServiceDns({
        domain: c.dnsDomain, serviceCidr: c.serviceCidr, serviceCidr6: c.serviceCidr6, dnsVip: c.dnsVip, dnsVip6: c.dnsVip6,
        port: c.dnsPort, upstreams: c.dnsUpstreams, logger: this.log.child({ part: 'dns' }), metrics: this.metrics.dns,
      });
      // Serving (forwarding at least) before Docker is listed shortens a restart's DNS outage.
      await this.dns.listenEarly();
    }

    this.notifier.status('starting: Envoy and the redirect');
    const proxy = new Proxy({
      envoyPath: c.envoyPath,
      runDir: c.runDir,
      stateDir: c.stateDir,
      proxyPorts: c.proxyPorts,
      redirect: c.redirect,
      serviceCidr: c.serviceCidr,
      serviceCidr6: c.serviceCidr6,
      bpfPinDir: c.bpfPinDir,
      logger: this.log.child({ part: 'proxy' }),
      tlsDir: c.tlsDir,
      accessLog: c.accessLog,
      requestReconcile: () => this.schedule(),
    });
    this.proxy = proxy;
    // Started alongside the Docker list (its probes and Envoy's start take a few hundred ms);
    // the first reconcile waits for it.
    this.proxyStarted = proxy.start().then(() => phase('proxy started')).catch((e: unknown) => {
      // The socket LB must keep working without the proxy: report and go on.
      this.log.error({ err: e }, 'the ingress proxy failed to start; socket load balancing continues without it');
    });

    if (c.etcdEndpoints.length > 0) {
      this.notifier.status('starting: etcd');
      // Loaded only in cluster mode: a single host never pays for the etcd client and its protos.
      const { Cluster: ClusterImpl } = await import('../cluster');
      const cluster = new ClusterImpl({
        endpoints: c.etcdEndpoints, caFile: c.etcdCaFile, certFile: c.etcdCertFile, keyFile: c.etcdKeyFile,
        prefix: c.etcdPrefix, leaseTtl: c.etcdLeaseTtl, nodeName: c.nodeName, nodeAddress: c.nodeAddress,
        serviceCidr: c.serviceCidr, serviceCidr6: c.serviceCidr6, berthVersion: VERSION,
        logger: this.log.child({ part: 'cluster' }),
      });
      this.cluster = cluster;
      // Remote changes are one more input to the same loop; start() does not wait for etcd.
      cluster.on('change', () => {
        this.clusterPending = true;
        this.schedule();
      });
      await cluster.start();
    }

    this.notifier.status('starting: listing Docker');
    const watcher = new DockerWatcher({ dockerHost: c.dockerHost, logger: this.log.child({ part: 'docker' }), resyncMs: c.resyncInterval * 1000, berthOnly: true, clients: true });
    this.watcher = watcher;
    this.model = new IncrementalModel({
      serviceCidr: c.serviceCidr, serviceCidr6: c.serviceCidr6, store: this.store, reserved: this.dns?.reserved,
      containers: () => [...this.allContainers.values()],
    }, { addresses: hostAddresses() });
    watcher.on('snapshot', (snap: DockerSnapshot) => {
      this.networks = snap.networks;
      this.allContainers = new Map(snap.containers.map((c) => [c.id, c]));
      const d = this.model!.resync(snap, { addresses: hostAddresses() });
      phase('model built');
      if (this.haveList && d.containersChanged) {
        // Only counted between full lists: a missed event, or Docker's state changed while unreachable.
        this.metrics.driftRepaired.inc({ kind: 'container' }, d.containersChanged);
        this.log.info({ containers: d.containersChanged }, 'full Docker list: containers differed from the last known state (missed events)');
      }
      this.haveList = true;
      this.note(d);
      this.fullPending = true;
      this.schedule();
    });
    watcher.on('changes', (ch: ContainerChanges) => {
      if (!this.haveList) return; // the first full list brings them
      for (const c of ch.upserts) {
        this.allContainers.set(c.id, c);
        this.clientIds.add(c.id);
      }
      for (const id of ch.removed) {
        this.allContainers.delete(id);
        this.clientIds.add(id);
      }
      this.note(this.model!.apply(ch.upserts, ch.removed));
      for (const t of ch.eventTimes) this.eventTimes.push(t);
      this.schedule();
    });
    watcher.on('connection', (state: string) => {
      this.log.info({ docker: state }, state === 'connected' ? 'Docker connected' : `Docker ${state}; keeping the current services until it is back`);
      this.updateStatusLine();
    });
    watcher.start();
    phase('watching Docker');

    // Periodic reconcile even without Docker events (reconcileInterval): the proxy's pass repairs
    // what someone else removed (a firewall reload flushing berth's iptables rules) within
    // seconds. The maps are verified by the full sync of every full Docker list (resyncInterval).
    this.resyncTimer = setInterval(() => {
      this.proxyPending = true;
      this.schedule();
    }, this.c.reconcileInterval * 1000);
    this.resyncTimer.unref();
    this.startWatchdog();
  }

  /** Coalesce: at most one reconcile running and one more queued. */
  schedule(): void {
    if (this.stopping) return;
    this.dirty = true;
    if (this.running) return;
    this.running = (async () => {
      while (this.dirty && !this.stopping) {
        this.dirty = false;
        this.reconcileSince = Date.now();
        await this.reconcile();
        this.reconcileSince = 0;
      }
    })().finally(() => {
      this.running = null;
      this.reconcileSince = 0;
    });
  }

  /** Remember what a model change touched, for the next reconcile. */
  private note(d: ModelDelta): void {
    for (const x of d.changed) this.dirtyNames.add(x.name);
    for (const x of d.removed) this.dirtyNames.add(x.name);
    if (d.labelErrors) this.logLabelErrors();
    if (d.placed) this.proxyPending = true;
  }

  private logLabelErrors(): void {
    const now = new Set<string>();
    for (const e of this.model!.labelErrors()) {
      const k = `${e.container}\u0000${e.label}\u0000${e.error}`;
      now.add(k);
      if (!this.loggedLabelErrors.has(k)) this.log.warn({ container: e.container, label: e.label }, `skipping: container ${e.container}, label ${e.label}: ${e.error}`);
    }
    this.loggedLabelErrors = now;
  }

  private async reconcile(): Promise<void> {
    const model = this.model;
    // Never reconcile from "Docker unreachable": without a full list there is nothing to say.
    if (!model || !this.haveList || !this.datapath) {
      // Counted, so that "nothing withdrawn while Docker was never listed" can be checked across
      // several periods rather than assumed.
      this.metrics.reconciles.inc({ result: 'skipped' });
      return;
    }
    await this.proxyStarted;
    phase('first reconcile began');
    // Per-client-network lists (datapath/netlists.ts) are numbered by Docker network: new numbers
    // may change every service's lists, which only a full sync rewrites.
    const numbers = networkNumbers(this.networks);
    const netKey = JSON.stringify([...numbers]);
    const nets = { mode: this.c.crossNetwork, numbers };
    const full = this.fullPending || netKey !== this.netKey;
    const names = this.dirtyNames;
    const clientIds = this.clientIds;
    this.clientIds = new Set();
    const clusterPass = this.clusterPending;
    if (!full && names.size === 0 && !this.proxyPending && clientIds.size === 0 && !clusterPass) return;
    // (Retries alone do not make a reconcile: they ride on the next one, at least every reconcileInterval.)
    for (const id of this.clientRetry) clientIds.add(id);
    this.clientRetry.clear();
    const periodic = this.proxyPending;
    this.fullPending = false;
    this.clusterPending = false;
    this.dirtyNames = new Set();
    const eventTimes = this.eventTimes;
    this.eventTimes = [];
    const t0 = process.hrtime.bigint();
    const endTimer = this.metrics.reconcileDuration.startTimer();
    const rec: ReconcileRecord = { at: new Date().toISOString(), durationMs: 0, sync: null, proxyErrors: [], error: null };
    try {
      // Host addresses are VIP rules too (cheap to read; a change re-places VIPs).
      if (full || this.proxyPending) {
        this.note(model.apply([], [], { host: { addresses: hostAddresses() } }));
        for (const n of this.dirtyNames) names.add(n);
        this.dirtyNames.clear();
      }
      const cl = this.cluster;
      if (cl) this.mergeCluster(cl, model, names);
      this.store.save();
      const changed: Service[] = [];
      const removed: string[] = [];
      for (const name of names) {
        const mine = [this.service('service', name), this.service('ingress', name)].filter((x): x is Service => !!x);
        if (mine.length) changed.push(...mine); else removed.push(name);
      }
      // The proxy reads ingresses and the services they route to: a pass when one of those
      // changed (or the periodic rule repair, or a full list).
      const routed = new Set(model.ingresses().flatMap((x) => x.routes.map((r) => r.service)));
      const proxyNeeded = full || this.proxyPending || changed.some((x) => x.kind === 'ingress' || routed.has(x.name)) || removed.some((n) => routed.has(n));
      this.proxyPending = false;
      const state: DesiredState = { services: proxyNeeded || full ? this.services() : [], labelErrors: [] };
      if (this.proxy && proxyNeeded) {
        try {
          rec.proxyErrors = await this.proxy.update(state);
          phase('proxy (Envoy) resources built');
        } catch (e) {
          rec.proxyErrors = [{ ingress: '*', error: (e as Error).message }];
        }
        for (const name of [...this.runErrors.keys()]) if (this.runErrors.get(name)!.some((x) => x.startsWith('proxy: '))) this.runErrors.delete(name);
        for (const pe of rec.proxyErrors) this.addRunError(pe.ingress, `proxy: ${pe.error}`);
      }
      if (full) {
        // The DNS VIP is one more datapath entry (not a model service: no labels, not listed).
        const dnsFront = this.dns ? [await this.dns.frontend(this.networks)] : [];
        // Per-client-network lists (datapath/netlists.ts): which backend address, or whether any,
        // a client on each Docker network gets. (The DNS entry's backend is the host: no networks,
        // so every client keeps it.)
        // This pass's own changes (a full list that found missed events, a cluster update) are
        // written first, as between full passes: the full sync's writes after that are only what
        // berth's updates missed or failed to write, which is what its drift count reports. (With
        // renumbered networks every list changes, so those writes are not drift.)
        const netsChanged = netKey !== this.netKey;
        const own = !netsChanged && (changed.length || removed.length) ? await this.datapath.update(changed, removed, { nets }) : null;
        rec.sync = await this.datapath.sync([...state.services, ...dnsFront], { prune: true, nets });
        if (own) rec.sync = { ...rec.sync, updates: own.updates + rec.sync.updates, deletes: own.deletes + rec.sync.deletes };
        phase('full map sync done');
        this.netKey = netKey;
        this.runErrors = new Map([...this.runErrors].filter(([, v]) => v.some((x) => x.startsWith('proxy: '))).map(([k, v]) => [k, v.filter((x) => x.startsWith('proxy: '))]));
        const drift = rec.sync.drift;
        if (drift) {
          if (drift.serviceEntries + drift.backends > 0) {
            this.metrics.driftRepaired.inc({ kind: 'map_entry' }, drift.serviceEntries + drift.backends);
            this.log.warn({ serviceEntries: drift.serviceEntries, backends: drift.backends }, 'full sync: the maps differed from berth\'s view (changed by someone else); repaired');
          }
          if (drift.plan > 0 && !netsChanged) {
            this.metrics.driftRepaired.inc({ kind: 'plan' }, drift.plan);
            this.log.warn({ writes: drift.plan }, 'full sync: the maps needed writes to reach the desired state (a missed or failed update); repaired');
          }
        }
      } else if (changed.length || removed.length) {
        rec.sync = await this.datapath.update(changed, removed, { nets });
        for (const name of names) {
          const kept = (this.runErrors.get(name) ?? []).filter((x) => x.startsWith('proxy: '));
          if (kept.length) this.runErrors.set(name, kept); else this.runErrors.delete(name);
        }
      }
      // After the maps: a name resolves only once its VIP works. A full sync sets the zone from
      // every service; an incremental one rebuilds only the changed names' records.
      if (this.dns && full) {
        this.dns.setServices(this.services());
        phase('DNS zone built');
      }
      else if (this.dns && (changed.length || removed.length)) this.dns.update(names, (kind, name) => this.service(kind, name));
      if (rec.sync) {
        this.metrics.mapOperations.inc({ op: 'update' }, rec.sync.updates);
        this.metrics.mapOperations.inc({ op: 'delete' }, rec.sync.deletes);
        this.metrics.mapErrors.inc(rec.sync.errors.length);
        for (const se of rec.sync.errors) {
          this.log.error({ service: se.service }, `service ${se.service}: ${se.error}`);
          this.addRunError(se.service, se.error);
        }
      }
      // Client lookups matter only where per-network lists can exist: always in docker mode, in
      // allow only for backends on several networks. Otherwise berth_netns is kept empty and no
      // container's netns is resolved (a cold start with 40,000 containers pays nothing). Between
      // full passes a changed service can only turn the need on.
      const multi = (s: Service) => s.backends.some((b) => (b.networks?.length ?? 0) > 1);
      const wasNeeded = this.clientsNeeded;
      if (full) this.clientsNeeded = this.c.crossNetwork === 'docker' || model.services().some(multi);
      else if (changed.some(multi)) this.clientsNeeded = true;
      // A full pass (or the need turning on or off) writes every client against a dump of
      // berth_netns and repairs what differs; between full passes only the containers that
      // changed are written, against berth's view of the map (no walk of the host's containers).
      const dp = this.datapath;
      try {
        let unresolved: string[] = [];
        const all = full || this.clientsFull || this.clientsNeeded !== wasNeeded || (clientIds.size > 0 && !dp.updateClients);
        this.clientsFull = false;
        if (all) {
          const r = dp.syncClients?.(this.clientsNeeded ? clientNetworks([...this.allContainers.values()], numbers) : []);
          unresolved = r?.unresolved ?? [];
          if (r?.drift) {
            this.metrics.driftRepaired.inc({ kind: 'map_entry' }, r.drift);
            this.log.warn({ entries: r.drift }, 'full sync: berth_netns differed from berth\'s view (changed by someone else); repaired');
          }
        } else if (this.clientsNeeded && clientIds.size) {
          const want = [...clientIds].map((id) => {
            const c = this.allContainers.get(id);
            return { id, nets: (c && clientNetworks([c], numbers)[0]?.nets) || null };
          });
          unresolved = dp.updateClients!(want).unresolved;
        }
        for (const id of unresolved) this.clientRetry.add(id);
        if (unresolved.length) this.log.debug({ containers: unresolved.length }, 'client network namespaces not found yet (list 0 until the next reconcile)');
      } catch (e) {
        // Retried whole (every client, against a dump) by the next reconcile.
        this.clientsFull = true;
        this.log.error({ err: e }, 'writing the client networks failed');
      }
      // DOCKER-USER rules: on full passes and the periodic repair pass; on a service change only
      // where the rules list backends (open-ports). Reading the chains spawns six iptables
      // processes, which on the event path cost more than everything else an event does. These
      // and the cluster's routes and accept rules run in the host-rules lane (kickHostRules),
      // beside the next reconciles rather than in front of them; the first pass waits for them,
      // so READY=1 still means the rules are in place.
      const servicesInRules = crossnetHow(this.c.crossNetwork, this.datapath.status().flows?.matchPin ?? null) === 'open-ports';
      const rules = this.kickHostRules(full || periodic || (servicesInRules && (changed.length || removed.length) > 0), full || periodic);
      if (!this.ready && !this.becomingReady) await rules;
      phase('crossNetwork rules applied');
      this.desired = state;
      this.updateWarnings(full, names);
      this.metrics.reconciles.inc({ result: 'ok' });
      const now = Date.now();
      for (const t of eventTimes) {
        const ms = Math.max(0, now - t);
        this.metrics.eventToMaps.observe(ms / 1000);
        this.eventLatency.applied++;
        this.eventLatency.recentMs.push(ms);
      }
      if (this.eventLatency.recentMs.length > 4096) this.eventLatency.recentMs.splice(0, this.eventLatency.recentMs.length - 4096);
      // Not awaited: waiting for Envoy's ACK must not hold up the next reconcile.
      if (!this.ready && !this.becomingReady) {
        this.becomingReady = true;
        // The start-up's garbage (the list, the model build, every planned write) is collected
        // once, here, so an idle berthd does not keep it resident (util/gc.ts; measured there).
        // A memory-reducing collection (util/gc.ts reduceHeap: also gives back the young
        // generation's 27 MB of empty semi-space at 10,000 × 4); gc() with compaction where the
        // addon cannot ask V8 for one.
        // Twice when the first left the old space fragmented (util/gc.ts reduceHeapFully).
        const rssBefore = process.memoryUsage.rss();
        const reduced = reduceHeapFully();
        const gcMs = reduced?.ms ?? collectGarbage({ compact: true });
        // Then what the collection freed in the C heap goes back to the kernel (~27 MB at
        // 10,000 × 4: util/gc.ts trimCHeap).
        const trimMs = trimCHeap();
        if (gcMs !== null) this.log.info({ gcMs: Math.round(gcMs), collections: reduced?.rounds ?? 1, trimMs: trimMs === null ? null : Math.round(trimMs), rssMbBefore: Math.round(rssBefore / 1048576), rssMbAfter: Math.round(process.memoryUsage.rss() / 1048576) }, 'start-up garbage collected');
        this.quietGc.collected();
        phase('start-up garbage collected');
        void this.becomeReady();
      } else if (full && this.ready) {
        // The same after every later full pass (each periodic full list, every resyncInterval):
        // the list's JSON, the map dump and the full plan outlive the young generation, and V8
        // let the old one grow between its own collections (profile-berthd.js at 10,000 × 4 with
        // full lists 10 s apart: RSS 236 → 462 MB within 32 s; with this, back to ~260 MB after
        // each list). Costs one full collection (~0.2 s at that size) per full pass.
        const rssBefore = process.memoryUsage.rss();
        const gcMs = reduceHeap() ?? collectGarbage();
        trimCHeap();
        if (gcMs !== null) this.log.debug({ gcMs: Math.round(gcMs), rssMbBefore: Math.round(rssBefore / 1048576), rssMbAfter: Math.round(process.memoryUsage.rss() / 1048576) }, 'full-list garbage collected');
        this.quietGc.collected();
      } else if (this.ready && eventTimes.length > 0) {
        // Docker events were applied: once they pause, hand back what they grew (if they did).
        this.quietGc.touched();
      }
    } catch (e) {
      rec.error = (e as Error).message;
      // Retry from a full sync: the view or the proxy may be behind.
      this.fullPending = true;
      this.metrics.reconciles.inc({ result: 'error' });
      this.log.error({ err: e }, 'reconcile failed; retrying on the next change or resync');
    } finally {
      rec.durationMs = Number(process.hrtime.bigint() - t0) / 1e6;
      // Debug: what each pass did and how far behind its oldest Docker event it ran (ms).
      this.log.debug({
        ms: Math.round(rec.durationMs), full, services: names.size, clients: clientIds.size, cluster: clusterPass, periodic,
        ...(eventTimes.length ? { events: eventTimes.length, behindMs: Date.now() - eventTimes.reduce((a, b) => Math.min(a, b)) } : {}),
      }, 'reconciled');
      endTimer();
      this.last = rec;
      this.updateStatusLine();
    }
  }

  /**
   * The host-rules lane: what a reconcile asks of iptables and the routing table (crossNetwork's
   * DOCKER-USER rules when `crossNetwork` is true; in cluster mode, every time, the routes to the
   * peers' container subnets and the BERTH_PEERS accept rules). Each of these spawns processes
   * (six iptables for crossNetwork alone): ~10-50 ms on a host, and seconds to a minute in the
   * emulated cluster guests, where the reconcile loop ran them in every pass and Docker events
   * waited 50-210 s behind them (test/vm/cluster.test.ts, 2026-12-01). Here they run serialized
   * among themselves (at most one run and one queued; a queued run reads the state current when
   * it starts) but beside the reconcile loop, which keeps the maps and Envoy current meanwhile.
   * Resolves when a run that started after this request is done (or berthd stops); never
   * rejects (failures are logged and retried by the next run, as before).
   *
   * `crossNetwork`: check crossNetwork's rules. `repair`: a full or periodic pass, which checks
   * the cluster's routes and accept rules against the kernel whatever changed. Between those
   * the cluster's part runs only when the routes or accepts wanted differ from the last ones
   * applied (they follow the peers' node records, not their backends): in the
   * cluster VM test every reconcile ran it, six processes a time, and the lane kept a TCG
   * guest's CPU busy for 40-70 s around each Docker event (2026-12-01 06:18 run).
   */
  private kickHostRules(crossNetwork: boolean, repair = false): Promise<void> {
    if (crossNetwork) this.rulesCrossNetwork = true;
    if (this.cluster && (repair || peerRulesKey(this.cluster) !== this.peerRulesKey)) this.rulesPeers = true;
    if (!this.rulesPeers && !this.rulesCrossNetwork) return Promise.resolve();
    const gen = ++this.rulesGen;
    const done = new Promise<void>((resolve) => this.rulesWaiters.push({ gen, resolve }));
    if (!this.rulesRunning) {
      this.rulesRunning = (async () => {
        while (this.rulesDoneGen < this.rulesGen && !this.stopping) {
          const upTo = this.rulesGen;
          const cross = this.rulesCrossNetwork;
          const peers = this.rulesPeers;
          this.rulesCrossNetwork = false;
          this.rulesPeers = false;
          const t0 = Date.now();
          if (cross && this.model) await this.applyCrossNetwork(this.model.services());
          if (peers && this.cluster) {
            // A failure is not retried per event: the next repair pass (every reconcileInterval)
            // retries it, as it repairs what someone else changed.
            this.peerRulesKey = peerRulesKey(this.cluster);
            await this.applyPeerRules(this.cluster);
          }
          this.log.debug({ ms: Date.now() - t0, crossNetwork: cross, cluster: peers }, 'host rules checked');
          this.rulesDoneGen = upTo;
          this.rulesWaiters = this.rulesWaiters.filter((w) => (w.gen <= upTo ? (w.resolve(), false) : true));
        }
      })().finally(() => {
        this.rulesRunning = null;
        // Stopping: nobody waits for runs that will not happen.
        for (const w of this.rulesWaiters) w.resolve();
        this.rulesWaiters = [];
      });
    }
    return done;
  }

  /**
   * Cluster mode: routes to the peers' container subnets and the BERTH_PEERS accept rules. A
   * failure is logged; the next repair pass (every reconcileInterval) retries it.
   */
  private async applyPeerRules(cl: Cluster): Promise<void> {
    try {
      const r = await syncPeerRoutes(cl.routes(), routeMetric(this.c.bpfPinDir));
      for (const a of r.added) this.log.info(`route to peer containers added: ${a}`);
      for (const a of r.removed) this.log.info(`route to peer containers removed: ${a}`);
      for (const e of r.errors) this.log.error(e);
    } catch (e) {
      this.log.error({ err: e }, 'cannot list or change the routes to peers; retrying within reconcileInterval');
    }
    // Peers' flows to local backends through Docker's FORWARD drop (cluster/firewall.ts).
    // Checked on every repair pass (read-only when unchanged): repairs a dockerd restart too.
    try {
      const was = this.peerAccept;
      this.peerAccept = await syncPeerAccepts(cl.accepts());
      for (const f of this.peerAccept) {
        const old = was?.find((x) => x.family === f.family);
        if (f.error && f.error !== old?.error) this.log.error({ family: f.family }, `cannot let peers' flows reach local backends (${f.error}); retrying within reconcileInterval`);
        else if (f.changed && !f.error) this.log.info({ family: f.family, rules: f.rules }, `peers' flows to local containers: ${f.rules} accept rule(s) in BERTH_PEERS`);
      }
    } catch (e) {
      this.log.error({ err: e }, 'cannot apply the accept rules for peers; retrying within reconcileInterval');
    }
  }

  /**
   * crossNetwork: berth's rules in Docker's DOCKER-USER chain (datapath/crossnet.ts), checked
   * on every reconcile (every 5 s at least), so a dockerd restart, a new network or a firewall
   * reload is repaired within seconds. A failure is reported, never fatal: VIPs within one
   * network keep working.
   */
  private async applyCrossNetwork(services: Service[]): Promise<void> {
    const matchPin = this.datapath?.status().flows?.matchPin ?? null;
    const how = crossnetHow(this.c.crossNetwork, matchPin);
    try {
      const st = await applyCrossnet(how, this.c.crossNetwork, { matchPin, services, force: this.crossnet === null });
      const was = this.crossnet;
      this.crossnet = st;
      if (st.error && st.error !== was?.error) this.log.error({ error: st.error }, 'crossNetwork: installing the rules in DOCKER-USER failed; containers on other networks cannot reach VIPs');
      // (docker mode has no jump by design: nothing to repair, nothing to say every pass.)
      const repaired = how !== 'docker' && was && st.families.some((f, i) => f.dockerUser && (!was.families[i]?.jumpFirst || !was.families[i]?.chainOk));
      if (repaired) this.log.info({ how }, 'crossNetwork rules (re)installed in DOCKER-USER');
    } catch (e) {
      this.log.error({ err: e }, 'crossNetwork: applying the rules failed');
    }
  }

  /**
   * Cluster mode, once per reconcile after the local model step: the cluster's VIP assignments
   * and the peers' backends are one more input. A changed assignment set re-runs the model's
   * placement (IncrementalModel.setClusterVips); then the local services are published and merged
   * with the remote ones, and every service whose merged result differs from the last merge
   * (its remote backend set, a remote-only service appearing or going, a claim conflict) is added
   * to `names`, the dirty set the incremental path re-applies. A full sync applies the same
   * merged list, so both paths give the same maps. O(services) per reconcile (the merge and the
   * comparison); on a single host this never runs.
   */
  private mergeCluster(cl: Cluster, model: IncrementalModel, names: Set<string>): void {
    const inputs = cl.modelInputs(this.store);
    const key = JSON.stringify(inputs.reserved);
    if (key !== this.clusterVipsKey) {
      this.clusterVipsKey = key;
      this.note(model.setClusterVips(inputs.store, inputs.reserved));
      for (const n of this.dirtyNames) names.add(n);
      this.dirtyNames.clear();
    }
    const local = model.state();
    cl.persistLocal(this.store, local);
    const m = cl.merge(local, { containers: model.containers(), networks: this.networks });
    const byKey = new Map(m.services.map((s) => [storeKey(s.kind, s.name), s] as const));
    const before = this.merged?.byKey ?? new Map<string, Service>();
    for (const [k, s] of byKey) {
      const old = before.get(k);
      if (!old || JSON.stringify(old) !== JSON.stringify(s)) names.add(s.name);
    }
    for (const [k, s] of before) if (!byKey.has(k)) names.add(s.name);
    this.merged = { list: m.services, byKey };
  }

  /** Recompute backendWarnings: of every service after a full pass, else of the `names` that changed. */
  private updateWarnings(full: boolean, names: Set<string>): void {
    const put = (s: Service | undefined, key: string): void => {
      const list = s ? warningsOf(s) : [];
      if (s && list.length) this.warnings.set(key, { name: s.name, kind: s.kind, list }); else this.warnings.delete(key);
    };
    if (full) {
      this.warnings.clear();
      for (const s of this.services()) put(s, storeKey(s.kind, s.name));
      return;
    }
    for (const name of names) {
      for (const kind of ['service', 'ingress'] as const) put(this.service(kind, name), storeKey(kind, name));
    }
  }

  /** The desired services: the model's, or in cluster mode the last merge with the peers'. */
  private services(): Service[] {
    return this.merged?.list ?? this.model?.services() ?? [];
  }

  private service(kind: Service['kind'], name: string): Service | undefined {
    return this.merged ? this.merged.byKey.get(storeKey(kind, name)) : this.model?.get(kind, name);
  }

  private counts(): { service: number; ingress: number } {
    if (!this.merged) return this.model?.counts() ?? { service: 0, ingress: 0 };
    const ingress = this.merged.list.filter((s) => s.kind === 'ingress').length;
    return { service: this.merged.list.length - ingress, ingress };
  }

  private addRunError(name: string, error: string): void {
    const list = this.runErrors.get(name) ?? [];
    if (!list.includes(error)) list.push(error);
    this.runErrors.set(name, list);
  }

  private labelErrors(): LabelError[] {
    return this.desired && this.model ? this.model.labelErrors() : [];
  }

  /** READY=1: Docker listed, programs attached, maps reconciled, Envoy configured (or reported missing). */
  private async becomeReady(): Promise<void> {
    const deadline = Date.now() + 15000;
    while (this.proxy && !this.stopping && Date.now() < deadline) {
      const env = this.proxy.status().envoy;
      const wantsConfig = (this.model?.ingresses().length ?? 0) > 0;
      if (env.state === 'missing' || env.state === 'stopped' || !wantsConfig || env.ackedVersion) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    if (this.stopping) return;
    this.ready = true;
    phase('ready');
    this.notifier.ready();
    // Wall and CPU ms since the process started, per start-up phase (util/phases.ts).
    this.log.info({ phases: phasesDone(), heap: heapSpaces() }, 'start-up phases');
    this.log.info('ready');
  }

  private updateStatusLine(): void {
    const d = this.desired;
    const parts = [
      `Docker ${this.watcher?.connection ?? 'not started'}`,
      d ? `${this.counts().service} services, ${this.counts().ingress} ingresses` : 'no Docker list yet',
      d && this.loggedLabelErrors.size ? `${this.loggedLabelErrors.size} label errors` : '',
      this.proxy ? `Envoy ${this.proxy.status().envoy.state}, redirect ${this.proxy.status().redirect}` : '',
    ].filter(Boolean);
    const line = parts.join('; ');
    if (line !== this.lastStatusLine) {
      this.lastStatusLine = line;
      this.notifier.status(line);
    }
  }

  /**
   * Watchdog pings come from a timer on the event loop, so a blocked loop stops them; and a ping
   * is skipped while a reconcile has been running longer than the watchdog interval (a Docker,
   * iptables or map call that never returns), so a wedged reconcile gets berthd restarted too.
   */
  private startWatchdog(): void {
    const usec = Number(process.env.WATCHDOG_USEC ?? 0);
    const pid = process.env.WATCHDOG_PID ? Number(process.env.WATCHDOG_PID) : process.pid;
    if (!usec || pid !== process.pid) return;
    const limitMs = usec / 1000;
    const everyMs = Math.max(100, Math.floor(limitMs / 2));
    let warned = false;
    this.watchdogTimer = setInterval(() => {
      const stuckMs = this.reconcileSince ? Date.now() - this.reconcileSince : 0;
      if (stuckMs > limitMs) {
        if (!warned) this.log.error({ stuckMs }, 'a reconcile has not finished within the watchdog interval; no more watchdog pings (systemd restarts berthd)');
        warned = true;
        return;
      }
      warned = false;
      this.notifier.watchdog();
    }, everyMs);
    this.log.info({ everyMs }, 'systemd watchdog enabled');
  }

  /**
   * Stop. `keepEnvoy`: a restart or upgrade of berthd, Envoy keeps serving ingress traffic and
   * the next berthd adopts it (README "Restarts").
   */
  async stop(opts: { keepEnvoy?: boolean } = {}): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.notifier.stopping();
    this.log.info('stopping; the datapath stays in place (berth cleanup removes it)');
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    if (this.watchdogTimer) clearInterval(this.watchdogTimer);
    this.quietGc.stop();
    await this.running?.catch(() => undefined);
    await this.rulesRunning?.catch(() => undefined);
    await this.watcher?.stop();
    await this.cluster?.stop().catch((e: Error) => this.log.error({ err: e }, 'stopping the etcd client failed'));
    await this.proxyStarted;
    await this.proxy?.stop({ keepEnvoy: opts.keepEnvoy }).catch((e: Error) => this.log.error({ err: e }, 'stopping the proxy failed'));
    await this.api.close();
    this.dns?.close();
    this.datapath?.close();
  }

  /**
   * Resolves once no reconcile is running (bounded to 2 s, under a client's timeout): the model
   * takes a change at event time, its maps a moment later, and `berth services` must not show a
   * change that is not in the maps yet (a client that sees a backend gone may rely on the VIP no
   * longer using it). /status does not wait: it must answer during a long first reconcile.
   */
  private async settled(): Promise<void> {
    const deadline = Date.now() + 2000;
    while (this.running && Date.now() < deadline) await Promise.race([this.running, new Promise((r) => setTimeout(r, 100))]);
  }

  // ----- views for the admin API (SPEC: berth services --json / berth status --json) -----

  servicesView(): unknown[] {
    const d = this.desired;
    if (!d) return [];
    let counters = new Map<string, { connects: number; noBackend: number }>();
    try {
      counters = this.datapath?.counters() ?? counters;
    } catch { /* counters are best effort */ }
    const serviceOf = new Map<string, string>();
    const labelErrors = this.labelErrors();
    const errored = new Set(labelErrors.map((e) => e.container));
    for (const c of this.model?.containers() ?? []) if (errored.has(c.name) && c.labels['berth.service']) serviceOf.set(c.name, c.labels['berth.service']);
    return this.services().map((s: Service) => ({
      name: s.name,
      kind: s.kind,
      vip: s.vip,
      vip6: s.vip6,
      ports: s.ports,
      backends: s.backends,
      routes: s.kind === 'ingress' ? s.routes : [],
      ...(s.ingress ? { listenerPort: s.ingress.proxyPort, listen: s.ingress.listen, publish: s.ingress.publish } : {}),
      connections: counters.get(s.name) ?? { connects: 0, noBackend: 0 },
      errors: [
        ...s.errors,
        ...(this.runErrors.get(s.name) ?? []).filter((x) => s.kind === 'ingress' || !x.startsWith('proxy: ')).map((x) => x.replace(/^proxy: /, '')),
        ...labelErrors.filter((e) => serviceOf.get(e.container) === s.name).map((e) => `container ${e.container}, label ${e.label}: ${e.error}`),
      ],
    }));
  }

  statusView(): Record<string, unknown> {
    const dp = this.datapath?.status();
    const px = this.proxy?.status();
    return {
      version: VERSION,
      pid: process.pid,
      startedAt: this.startedAt.toISOString(),
      ready: this.ready,
      docker: this.watcher?.connection ?? 'disconnected',
      dockerReconnects: this.watcher?.reconnects ?? 0,
      cgroupRoot: dp?.cgroupRoot ?? null,
      cgroupIsHostRoot: dp?.cgroupIsHostRoot ?? false,
      attached: dp?.attached ?? [],
      maps: dp?.counts ?? null,
      redirect: px?.redirect ?? null,
      envoy: px?.envoy ?? { state: 'stopped', pid: null },
      ingressErrors: px?.ingressErrors ?? [],
      labelErrors: this.labelErrors(),
      dns: this.dns?.status() ?? null,
      crossNetwork: {
        mode: this.c.crossNetwork,
        how: this.crossnet?.how ?? null,
        flows: dp?.flows ?? null,
        chains: this.crossnet?.families ?? [],
        error: this.crossnet?.error ?? null,
      },
      // In services() order: by name, a service before the ingress of the same name.
      backendWarnings: this.desired ? [...this.warnings.values()].sort((a, b) => serviceOrder(a, b)).flatMap((x) => x.list) : [],
      cluster: this.cluster ? { ...this.cluster.status(), peerAccept: this.peerAccept ?? [] } : null,
      lastReconcile: this.last,
      // Docker event → its change in the maps (and the proxy), ms: count, and the latest ones.
      events: { applied: this.eventLatency.applied, recentMs: this.eventLatency.recentMs.slice() },
      config: this.cfg.config,
      configSources: this.cfg.sources,
      configFile: this.cfg.configFile,
    };
  }
}
