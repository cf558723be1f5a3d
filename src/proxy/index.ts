/**
 * The per-node ingress proxy (seed 002): one Envoy for the host, configured over ADS from the
 * desired state, with ingress traffic steered into its transparent listeners by TPROXY or by a
 * tc program. See types.ts for the contract.
 */
import fs from 'node:fs';
import type { DesiredState, Service } from '../model/types';
import type { Logger } from '../util/log';
import type { EnvoyStatus, ProxyApi, ProxyOptions, RedirectMode } from './types';
import { AdsServer } from './ads';
import { EnvoySupervisor } from './envoy';
import { PortAssignments, listeningPorts } from './ports';
import { buildSnapshot, emptySnapshot, type HostCert } from './resources';
import { certFilesStamp, loadCerts } from './tls';
import { ingressMetrics } from './stats';
import { DEFAULT_REDIRECT_NAMES, cleanupRedirect, createRedirector, resolveMode, type RedirectEntry, type RedirectNames, type Redirector } from './redirect';
import { ProxyErrorCode } from './errors';
import { TypeUrl } from './protos';
import { skAssignTakesReuseport } from '../util/kernel';

export { ProxyError, ProxyErrorCode } from './errors';

/** An IPv6 stack with at least one address (listeners then also bind [::]). */
function hostHasIpv6(): boolean {
  try {
    return fs.readFileSync('/proc/net/if_inet6', 'utf8').trim().length > 0;
  } catch {
    return false;
  }
}

/**
 * Envoy's LDS NACK lists the listeners it could not add, e.g.
 * "Error adding/updating listener(s) berth_ingress_basic: cannot bind '0.0.0.0:15000': Address already in use".
 */
export function listenerFailures(error: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of error.matchAll(/berth_ingress_([a-z0-9-]+): ([^\n]*)/g)) out.set(m[1], m[2]);
  return out;
}

const DEFAULT_PIN_DIR = '/sys/fs/bpf/berth';
/** The least time between two tries to start a missing Envoy, ms (see Proxy.retryMissingEnvoy). */
export const ENVOY_RETRY_MS = 10000;

export class Proxy implements ProxyApi {
  private readonly log: Logger;
  private readonly envoy: EnvoySupervisor;
  private readonly ports: PortAssignments;
  private ads: AdsServer | null = null;
  private redirector: Redirector | null = null;
  private mode: RedirectMode = 'iptables';
  private ackedVersion: string | null = null;
  private lastNack: string | null = null;
  /** Listeners Envoy could not add, by ingress, from its last LDS NACK (cleared by an LDS ACK). */
  private listenerFailures = new Map<string, string>();
  /** The host has an IPv6 stack: listeners also take [::]:port. */
  private readonly ipv6 = hostHasIpv6();
  /** Linux < 6.5: Envoy's listeners without SO_REUSEPORT, for bpf_sk_assign (util/kernel.ts). */
  private readonly reusePort = skAssignTakesReuseport();
  /** The redirect entries last applied, to tell a repair from a change of ours. */
  private appliedEntries = '';
  private loggedErrors = '[]';
  /** Route stat prefixes of the current snapshot -> ingress and route name (metrics). */
  private routeStats = new Map<string, { ingress: string; route: string }>();
  /** Host names TLS ingresses need certificates for, and the stamp of their files. */
  private tlsHosts: string[] = [];
  private certStamp = '';
  private certTimer: NodeJS.Timeout | null = null;
  /** A start of a missing Envoy in flight (update() retries it), and when the last one began (ms). */
  private envoyRetry: Promise<void> | null = null;
  private envoyTriedAt = 0;
  /** Problems of the last update, for `berth status` (publish port taken, TLS host skipped, ...). */
  private lastErrors: { ingress: string; error: string; code?: string }[] = [];

  constructor(private readonly o: ProxyOptions) {
    this.log = o.logger;
    const access = o.logger.child({ part: 'access' });
    this.envoy = new EnvoySupervisor({
      envoyPath: o.envoyPath, runDir: o.runDir, logger: o.logger.child({ part: 'envoy' }),
      // One JSON line per request in berthd's log (part "access"); the fields are Envoy's (see
      // ACCESS_LOG_FORMAT), the message is the request line and status.
      onAccess: o.accessLog === false ? undefined : (e) => access.info({ access: e }, `${String(e.method)} ${String(e.host)}${String(e.path)} ${String(e.status)}`),
    });
    this.ports = new PortAssignments(o.stateDir, o.proxyPorts);
  }

  /**
   * Resolve the redirect mode, install the redirector and listen for Envoy's ADS stream; Envoy
   * itself is started (or adopted) in the background, so this resolves without waiting for
   * `envoy --version` or Envoy's start. Throws when the redirector or the ADS server cannot be
   * set up (the daemon reports it and keeps the socket LB).
   */
  async start(): Promise<void> {
    if (this.ads) {
      // Started before: only Envoy may need another try (it was missing).
      if (this.envoy.st.state === 'missing' || this.envoy.st.state === 'stopped') await this.envoy.start();
      return;
    }
    const { mode, reason } = await resolveMode(this.o.redirect);
    this.mode = mode;
    const names = { ...DEFAULT_REDIRECT_NAMES, ...this.o.redirectNames };
    const { redirector, removed } = await createRedirector(mode, { pinDir: this.o.bpfPinDir ?? DEFAULT_PIN_DIR, interfaces: this.o.redirectInterfaces ?? null }, names);
    this.redirector = redirector;
    this.log.info({ redirect: mode, reason, removedOtherMode: removed }, `ingress redirect mode: ${mode}`);

    fs.mkdirSync(this.o.runDir, { recursive: true });
    // Held until the first update(): an Envoy adopted from the previous berthd keeps serving its
    // config instead of being sent the empty start-up snapshot.
    const ads = new AdsServer(emptySnapshot(), this.log.child({ part: 'xds' }), { hold: true });
    ads.on('ack', () => {
      if (ads.isAcked()) this.ackedVersion = ads.snapshot.version;
    });
    ads.on('nack', (e: { typeUrl: string; error: string }) => {
      this.lastNack = `${e.typeUrl.replace(/^.*\./, '')}: ${e.error}`;
      if (e.typeUrl === TypeUrl.listener) this.listenerFailures = listenerFailures(e.error);
    });
    ads.on('ack', (e: { typeUrl: string }) => {
      if (e.typeUrl === TypeUrl.listener) this.listenerFailures.clear();
    });
    await ads.listen(this.envoy.paths.xdsSocket);
    this.ads = ads;
    // Envoy starts in the background: `envoy --version` and the spawn take ~50 ms on a host but
    // 30-70 s in an emulated guest (measured: the cluster guests' berthds waited 57-72 s here
    // before their first reconcile), and the socket LB must not wait for the L7 proxy. Envoy
    // connects to the ADS server, which already listens and serves it the current snapshot
    // (held until the first update, so an adopted Envoy keeps its config meanwhile). A stop
    // during this start spawns nothing (the supervisor checks after each await).
    this.startEnvoyInBackground();
    // Certificate rotation: a changed file triggers a reconcile (which reloads and re-pushes
    // the secret over SDS); the periodic reconcile would find it too, only later.
    this.certTimer = setInterval(() => {
      if (!this.tlsHosts.length) return;
      const stamp = certFilesStamp(this.tlsDir, this.tlsHosts);
      if (stamp !== this.certStamp) {
        this.certStamp = stamp;
        this.log.info({ hosts: this.tlsHosts }, 'TLS files changed; reloading');
        this.o.requestReconcile?.();
      }
    }, 1000);
    this.certTimer.unref();
  }

  private get tlsDir(): string {
    return this.o.tlsDir ?? '/etc/berth/tls';
  }

  async update(state: DesiredState): Promise<{ ingress: string; error: string }[]> {
    const errors: { ingress: string; error: string; code?: string }[] = [];
    const ingresses = state.services.filter((s): s is Service & { ingress: NonNullable<Service['ingress']> } => s.kind === 'ingress' && s.ingress !== null);
    if (ingresses.length) this.retryMissingEnvoy();

    // Listener ports (sticky). Ports listened on now are busy for new assignments; Envoy's own
    // listeners are among them, which is right: they are taken.
    const busy = listeningPorts();
    // A listener Envoy could not bind (its sticky port was taken while Envoy was down): report
    // it for that ingress and move the ingress to a free port; the others are not touched.
    for (const [name, why] of this.listenerFailures) {
      const port = this.ports.get(name);
      if (port === undefined || !/in use|cannot bind/i.test(why)) continue;
      errors.push({ ingress: name, code: ProxyErrorCode.PORT_TAKEN, error: `listener port ${port} is taken on this host (${why.trim()}); moving the ingress to another port` });
      this.ports.release(name);
      busy.add(port);
    }
    this.listenerFailures.clear();
    for (const f of this.ports.assign(ingresses.map((i) => i.name), busy)) errors.push({ ingress: f.ingress, error: f.error.message, code: f.error.code });
    for (const ing of ingresses) ing.ingress.proxyPort = this.ports.get(ing.name) ?? null;

    // Publish ports: refuse one that another process listens on (TPROXY would steal its
    // traffic) or that another ingress already has; that ingress keeps its VIP.
    const publishOwner = new Map<number, string>();
    const publishOk = new Map<string, boolean>();
    for (const ing of [...ingresses].sort((a, b) => a.name.localeCompare(b.name))) {
      const p = ing.ingress.publish;
      if (p === null) continue;
      const inRange = p >= this.o.proxyPorts.from && p <= this.o.proxyPorts.to;
      if (publishOwner.has(p)) {
        errors.push({ ingress: ing.name, code: ProxyErrorCode.PORT_CONFLICT, error: `publish port ${p} is already used by ingress ${publishOwner.get(p)}` });
      } else if (busy.has(p) || inRange) {
        errors.push({ ingress: ing.name, code: ProxyErrorCode.PORT_TAKEN, error: inRange ? `publish port ${p} lies in proxyPorts ${this.o.proxyPorts.from}-${this.o.proxyPorts.to}` : `publish port ${p} is already in use on this host` });
      } else {
        publishOwner.set(p, ing.name);
        publishOk.set(ing.name, true);
      }
    }

    // TLS material of every host a TLS ingress routes, read fresh on each update.
    const tlsHosts = [...new Set(ingresses.filter((i) => i.ingress.tls).flatMap((i) => i.routes.map((r) => r.host)).filter((h): h is string => h !== null))].sort();
    this.tlsHosts = tlsHosts;
    this.certStamp = certFilesStamp(this.tlsDir, tlsHosts);
    const certs: Map<string, HostCert> = tlsHosts.length ? loadCerts(this.tlsDir, tlsHosts) : new Map();
    const built = buildSnapshot(state, { ipv6: this.ipv6, reusePort: this.reusePort, certs, accessLog: this.o.accessLog === false ? null : this.envoy.paths.accessLog });
    this.routeStats = built.routeStats;
    errors.push(...built.errors);
    if (this.ads) {
      // The first update releases the start-up hold even when its state is empty (same version).
      if (this.ads.held || built.snapshot.version !== this.ads.snapshot.version) {
        this.ads.setSnapshot(built.snapshot);
        if (this.ads.isAcked()) this.ackedVersion = built.snapshot.version;
      }
    }

    // One entry per VIP port: `listen`, and `tlsListen` of a TLS ingress (the same listener takes
    // both; tls_inspector tells them apart). The publish port rides on the first.
    const entries: RedirectEntry[] = ingresses.filter((i) => i.ingress.proxyPort !== null).flatMap((i) => {
      const ports = [i.ingress.listen];
      if (i.ingress.tlsListen != null && i.ingress.tlsListen !== i.ingress.listen) ports.push(i.ingress.tlsListen);
      return ports.map((listen, n) => ({
        ingress: i.name,
        vip: i.vip,
        vip6: i.vip6,
        listen,
        publish: n === 0 && publishOk.get(i.name) ? i.ingress.publish : null,
        listenerPort: i.ingress.proxyPort!,
      }));
    });
    if (this.redirector) {
      try {
        const written = await this.redirector.apply(entries);
        // The same entries as last time, yet rules had to be rewritten: someone else removed or
        // changed them (a firewall reload flushing iptables, an admin's `iptables -F`).
        const entriesKey = JSON.stringify(entries);
        if (written.length && entriesKey === this.appliedEntries) {
          this.log.warn({ rewritten: written }, 'berth redirect rules were changed outside berth; repaired');
        }
        this.appliedEntries = entriesKey;
      } catch (e) {
        const msg = `redirect (${this.mode}): ${(e as Error).message}`;
        this.log.error({ err: e }, 'installing the ingress redirect failed');
        for (const en of entries) errors.push({ ingress: en.ingress, error: msg, code: ProxyErrorCode.REDIRECT });
      }
    }
    // Logged when they change, not on every periodic reconcile.
    const key = JSON.stringify(errors);
    if (key !== this.loggedErrors) {
      this.loggedErrors = key;
      for (const e of errors) this.log.warn({ ingress: e.ingress, code: e.code }, e.error);
    }
    this.lastErrors = errors;
    return errors.map(({ ingress, error }) => ({ ingress, error }));
  }

  status(): { envoy: EnvoyStatus; redirect: RedirectMode; ingressErrors: { ingress: string; error: string; code?: string }[] } {
    return {
      envoy: { ...this.envoy.st, ackedVersion: this.ackedVersion, lastNack: this.lastNack },
      redirect: this.mode,
      ingressErrors: this.lastErrors,
    };
  }

  /**
   * Envoy's per-ingress and per-route request counters and latency histograms, renamed into
   * berth's metric names (Prometheus text; empty when Envoy does not answer).
   */
  async metricsText(): Promise<string> {
    if (this.envoy.st.pid === null) return '';
    let text: string;
    try {
      text = await this.envoy.adminGet('/stats/prometheus?usedonly', 2000);
    } catch {
      return '';
    }
    return ingressMetrics(text, this.routeStats);
  }

  /** xDS counters (tests, metrics): responses pushed, ACKs/NACKs received, open streams. */
  xdsStats(): { pushes: number; acks: number; nacks: number; streams: number } {
    return { ...(this.ads?.stats ?? { pushes: 0, acks: 0, nacks: 0 }), streams: this.ads?.streamCount ?? 0 };
  }

  /** The current snapshot's version per resource type (tests and `berth status` detail). */
  xdsVersions(): Record<string, string | null> {
    const out: Record<string, string | null> = {};
    for (const [k, t] of Object.entries(TypeUrl)) out[k] = this.ads?.snapshot.types.get(t)?.version ?? null;
    return out;
  }

  /**
   * Stop the xDS server; Envoy too, unless `keepEnvoy` (a restart or upgrade of berthd: Envoy
   * keeps serving its last config and the next berthd adopts it).
   */
  /**
   * Envoy missing (not installed yet, or `envoy --version` failed or timed out): start it again,
   * in the background and at most every ENVOY_RETRY_MS, so that installing Envoy (or a slow first
   * exec) needs no berthd restart. Once it runs it connects to the ADS server, which serves it the
   * current snapshot.
   */
  private retryMissingEnvoy(): void {
    if (!this.ads || this.envoyRetry || this.envoy.st.state !== 'missing' || Date.now() - this.envoyTriedAt < ENVOY_RETRY_MS) return;
    this.startEnvoyInBackground();
  }

  /** Start (or adopt) Envoy without waiting for it; `envoyRetry` holds the start in flight. */
  private startEnvoyInBackground(): void {
    this.envoyTriedAt = Date.now();
    this.envoyRetry = this.envoy.start()
      .catch((e: Error) => this.log.error({ err: e }, 'starting Envoy failed'))
      .finally(() => { this.envoyRetry = null; });
  }

  async stop(opts: { keepEnvoy?: boolean } = {}): Promise<void> {
    if (this.certTimer) clearInterval(this.certTimer);
    this.certTimer = null;
    if (opts.keepEnvoy) {
      // A start still in flight sees the supervisor detached after `envoy --version` and spawns
      // (or adopts) nothing: the running Envoy stays for the next berthd either way.
      this.envoy.detach();
    } else {
      // Let a start in flight finish first (it may adopt the previous berthd's Envoy), so that
      // the Envoy this berthd is responsible for is the one stopped, not left behind.
      await this.envoyRetry;
      await this.envoy.stop();
    }
    await this.ads?.close();
    this.ads = null;
  }

  /** `berth cleanup`: remove both modes' rules/programs and the policy routing. */
  static async cleanupRedirect(o: { logger: Logger; bpfPinDir?: string; redirectNames?: Partial<RedirectNames> }): Promise<string[]> {
    const removed = await cleanupRedirect(o.bpfPinDir ?? DEFAULT_PIN_DIR, { ...DEFAULT_REDIRECT_NAMES, ...o.redirectNames });
    o.logger.info({ removed }, 'ingress redirect removed');
    return removed;
  }
}
