/**
 * berthd's life cycle and its one reconcile loop.
 *
 * Level-triggered: every reconcile starts from the watcher's last FULL Docker list, rebuilds the
 * whole desired state (model/), hands it to the proxy (listener ports, xDS, redirect rules) and to
 * the datapath (which applies only the difference to the pinned maps). Docker events merely make
 * the watcher re-list; there is no incremental state here to drift. While Docker is unreachable
 * the watcher keeps its last snapshot and no reconcile withdraws anything.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from '../util/log';
import type { LoadedConfig } from './config';
import type { DesiredState, DockerSnapshot, Service } from '../model/types';
import type { DatapathApi, SyncResult } from '../datapath/types';
import type { ProxyApi } from '../proxy/types';
import { Datapath } from '../datapath';
import { Proxy } from '../proxy';
import { DockerWatcher } from '../docker/watcher';
import { buildDesiredState, VipStore } from '../model';
import { AdminApi } from '../api/server';
import { Metrics } from '../api/metrics';
import { Notifier } from './notify';
import { ServiceDns } from '../dns';

export const VERSION: string = (() => {
  try {
    return (JSON.parse(fs.readFileSync(path.join(__dirname, '../../../package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
})();

interface ReconcileRecord {
  at: string;
  durationMs: number;
  sync: SyncResult | null;
  proxyErrors: { ingress: string; error: string }[];
  error: string | null;
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

  private desired: DesiredState | null = null;
  private snapshot: DockerSnapshot | null = null;
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
  private lastStatusLine = '';
  readonly startedAt = new Date();

  constructor(private readonly cfg: LoadedConfig, private readonly log: Logger) {
    this.api = new AdminApi(log);
    this.metrics = new Metrics({
      services: () => ({
        service: this.desired?.services.filter((s) => s.kind === 'service').length ?? 0,
        ingress: this.desired?.services.filter((s) => s.kind === 'ingress').length ?? 0,
      }),
      backends: () => this.desired?.services.reduce((n, s) => n + (s.kind === 'service' ? s.backends.length : 0), 0) ?? 0,
      labelErrors: () => this.desired?.labelErrors.length ?? 0,
      dockerReconnects: () => this.watcher?.reconnects ?? 0,
      envoyRestarts: () => this.proxy?.status().envoy.restarts ?? 0,
      ready: () => this.ready,
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
      logger: this.log.child({ part: 'datapath' }),
    });
    this.datapath = datapath;
    const dp = datapath.status();
    this.log.info({ cgroupRoot: dp.cgroupRoot, cgroupIsHostRoot: dp.cgroupIsHostRoot, attached: dp.attached }, 'socket programs attached');
    if (!dp.cgroupIsHostRoot) {
      this.log.error({ cgroupRoot: dp.cgroupRoot }, 'the attach point is NOT the host root cgroup: only processes below it see VIPs');
    }

    await this.api.listenUnix(path.join(c.runDir, 'berth.sock'), {
      '/services': () => this.servicesView(),
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
    });
    this.proxy = proxy;
    // Started alongside the Docker list (its probes and Envoy's start take a few hundred ms);
    // the first reconcile waits for it.
    this.proxyStarted = proxy.start().catch((e: unknown) => {
      // The socket LB must keep working without the proxy: report and go on.
      this.log.error({ err: e }, 'the ingress proxy failed to start; socket load balancing continues without it');
    });

    this.notifier.status('starting: listing Docker');
    const watcher = new DockerWatcher({ dockerHost: c.dockerHost, logger: this.log.child({ part: 'docker' }), resyncMs: c.resyncInterval * 1000 });
    this.watcher = watcher;
    watcher.on('snapshot', (snap: DockerSnapshot) => {
      this.snapshot = snap;
      this.schedule();
    });
    watcher.on('connection', (state: string) => {
      this.log.info({ docker: state }, state === 'connected' ? 'Docker connected' : `Docker ${state}; keeping the current services until it is back`);
      this.updateStatusLine();
    });
    watcher.start();

    // Periodic reconcile even without Docker events: repairs what someone else removed (a
    // firewall reload flushing berth's iptables rules, a deleted map entry) within seconds.
    this.resyncTimer = setInterval(() => this.schedule(), this.c.reconcileInterval * 1000);
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

  private async reconcile(): Promise<void> {
    const snap = this.snapshot;
    // Never reconcile from "Docker unreachable": without a full list there is nothing to say.
    if (!snap || !this.datapath) {
      // Counted, so that "nothing withdrawn while Docker was never listed" can be checked across
      // several periods rather than assumed.
      this.metrics.reconciles.inc({ result: 'skipped' });
      return;
    }
    await this.proxyStarted;
    const t0 = process.hrtime.bigint();
    const endTimer = this.metrics.reconcileDuration.startTimer();
    const rec: ReconcileRecord = { at: new Date().toISOString(), durationMs: 0, sync: null, proxyErrors: [], error: null };
    try {
      const state = buildDesiredState(snap, { addresses: hostAddresses() }, {
        serviceCidr: this.c.serviceCidr,
        serviceCidr6: this.c.serviceCidr6,
        store: this.store,
        reserved: this.dns?.reserved,
      });
      this.store.save();
      for (const e of state.labelErrors) {
        if (!this.desired?.labelErrors.some((p) => p.container === e.container && p.label === e.label && p.error === e.error)) {
          this.log.warn({ container: e.container, label: e.label }, `skipping: container ${e.container}, label ${e.label}: ${e.error}`);
        }
      }
      if (this.proxy) {
        try {
          rec.proxyErrors = await this.proxy.update(state);
        } catch (e) {
          rec.proxyErrors = [{ ingress: '*', error: (e as Error).message }];
        }
        for (const pe of rec.proxyErrors) state.services.find((s) => s.name === pe.ingress && s.kind === 'ingress')?.errors.push(pe.error);
      }
      // The DNS VIP is one more datapath entry (not a model service: no labels, not listed).
      const dnsFront = this.dns ? [await this.dns.frontend(snap.networks)] : [];
      rec.sync = await this.datapath.sync([...state.services, ...dnsFront], { prune: true });
      // After the sync: a name resolves only once its VIP works.
      this.dns?.setServices(state.services);
      this.metrics.mapOperations.inc({ op: 'update' }, rec.sync.updates);
      this.metrics.mapOperations.inc({ op: 'delete' }, rec.sync.deletes);
      this.metrics.mapErrors.inc(rec.sync.errors.length);
      for (const se of rec.sync.errors) {
        this.log.error({ service: se.service }, `service ${se.service}: ${se.error}`);
        state.services.find((s) => s.name === se.service)?.errors.push(se.error);
      }
      this.desired = state;
      this.metrics.reconciles.inc({ result: 'ok' });
      // Not awaited: waiting for Envoy's ACK must not hold up the next reconcile.
      if (!this.ready && !this.becomingReady) {
        this.becomingReady = true;
        void this.becomeReady();
      }
    } catch (e) {
      rec.error = (e as Error).message;
      this.metrics.reconciles.inc({ result: 'error' });
      this.log.error({ err: e }, 'reconcile failed; retrying on the next change or resync');
    } finally {
      rec.durationMs = Number(process.hrtime.bigint() - t0) / 1e6;
      endTimer();
      this.last = rec;
      this.updateStatusLine();
    }
  }

  /** READY=1: Docker listed, programs attached, maps reconciled, Envoy configured (or reported missing). */
  private async becomeReady(): Promise<void> {
    const deadline = Date.now() + 15000;
    while (this.proxy && !this.stopping && Date.now() < deadline) {
      const env = this.proxy.status().envoy;
      const wantsConfig = this.desired?.services.some((s) => s.kind === 'ingress') ?? false;
      if (env.state === 'missing' || env.state === 'stopped' || !wantsConfig || env.ackedVersion) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    if (this.stopping) return;
    this.ready = true;
    this.notifier.ready();
    this.log.info('ready');
  }

  private updateStatusLine(): void {
    const d = this.desired;
    const parts = [
      `Docker ${this.watcher?.connection ?? 'not started'}`,
      d ? `${d.services.filter((s) => s.kind === 'service').length} services, ${d.services.filter((s) => s.kind === 'ingress').length} ingresses` : 'no Docker list yet',
      d && d.labelErrors.length ? `${d.labelErrors.length} label errors` : '',
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

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.notifier.stopping();
    this.log.info('stopping; the datapath stays in place (berth cleanup removes it)');
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    if (this.watchdogTimer) clearInterval(this.watchdogTimer);
    await this.running?.catch(() => undefined);
    await this.watcher?.stop();
    await this.proxyStarted;
    await this.proxy?.stop().catch((e: Error) => this.log.error({ err: e }, 'stopping the proxy failed'));
    await this.api.close();
    this.dns?.close();
    this.datapath?.close();
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
    for (const c of this.snapshot?.containers ?? []) if (c.labels['berth.service']) serviceOf.set(c.name, c.labels['berth.service']);
    return d.services.map((s: Service) => ({
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
        ...d.labelErrors.filter((e) => serviceOf.get(e.container) === s.name).map((e) => `container ${e.container}, label ${e.label}: ${e.error}`),
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
      labelErrors: this.desired?.labelErrors ?? [],
      dns: this.dns?.status() ?? null,
      lastReconcile: this.last,
      config: this.cfg.config,
      configSources: this.cfg.sources,
      configFile: this.cfg.configFile,
    };
  }
}
