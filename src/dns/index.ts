/**
 * dns/: names for services. berthd owns one ServiceDns; each reconcile asks it for the DNS VIP's
 * datapath entry (frontend(), before datapath.sync) and then hands it the applied services
 * (setServices() after a full sync, update() with the changed names after an incremental one;
 * always after the maps, so that a name never resolves before its VIP works).
 *
 *   vips.ts      the DNS VIPs, the host address its backend is, the datapath entry
 *   zone.ts      desired state -> records; lookups (pure)
 *   upstreams.ts which resolvers names outside the zone go to (pure + file reads)
 *   forward.ts   forwarding over UDP/TCP with timeouts and a bound
 *   server.ts    the sockets and the protocol logic
 *   setup.ts     `berth dns setup`: systemd-resolved drop-in and Docker's daemon.json
 */
import os from 'node:os';
import type { Logger } from '../util/log';
import type { NetworkInfo, Service } from '../model/types';
import { dnsFrontendService, dnsVips, hostBackendAddress, type DnsVips } from './vips';
import { LiveZone } from './zone';
import { Forwarder } from './forward';
import { readUpstreams, type Upstream, type UpstreamChoice } from './upstreams';
import { DnsServer, type DnsMetricsSink } from './server';

export { DNS_SERVICE_NAME, dnsVips, hostBackendAddress, dnsFrontendService } from './vips';
export type { DnsVips } from './vips';

export interface ServiceDnsOptions {
  domain: string;
  serviceCidr: string;
  serviceCidr6: string;
  dnsVip: string;
  dnsVip6: string;
  port: number;
  /** Config dnsUpstreams. */
  upstreams: string;
  logger: Logger;
  metrics?: DnsMetricsSink;
  /** Overrides for tests: where resolv.conf files are read. */
  resolvFiles?: { etc: string; resolved: string };
}

export interface DnsStatus {
  domain: string;
  vip: string;
  vip6: string | null;
  port: number;
  /** Addresses berthd's DNS socket is bound to. */
  listen: string[];
  /** The host address the DNS VIP's datapath entry points at. */
  backend: string | null;
  upstreams: Upstream[];
  upstreamSource: string;
  /** Names served (A/AAAA owners), for `berth status`. */
  names: number;
  errors: string[];
}

export class ServiceDns {
  readonly vips: DnsVips;
  private readonly forwarder = new Forwarder();
  private readonly server: DnsServer;
  private serial = 0;
  /** The zone served (null before the first setServices: names in the zone get SERVFAIL). */
  private live: LiveZone | null = null;
  /** Name -> how many of its service and ingress are in the zone (status' `names`). */
  private readonly entities = new Map<string, number>();
  private names = 0;
  private backend: string | null = null;
  private choice: UpstreamChoice = { upstreams: [], source: 'none', skipped: [] };
  private listenErrors: string[] = [];
  private lastUpstreamsKey = '';

  constructor(private readonly o: ServiceDnsOptions) {
    this.vips = dnsVips({ serviceCidr: o.serviceCidr, serviceCidr6: o.serviceCidr6, dnsVip: o.dnsVip, dnsVip6: o.dnsVip6 });
    this.server = new DnsServer({ port: o.port, domain: o.domain, forwarder: this.forwarder, metrics: o.metrics, logger: o.logger });
  }

  /** The addresses no service may take (BuildOptions.reserved). */
  get reserved(): string[] {
    return [this.vips.vip, ...(this.vips.vip6 ? [this.vips.vip6] : [])];
  }

  /**
   * Makes the DNS socket listen where the VIP's backend will be (loopback and the Docker gateway
   * of `networks`), refreshes the upstreams, and returns the DNS VIP's entry for datapath.sync().
   * A bind failure is reported in status().errors and the log; the rest keeps working.
   */
  async frontend(networks: NetworkInfo[]): Promise<Service> {
    const backend = hostBackendAddress(networks);
    const want = [...new Set(['127.0.0.1', backend])];
    const errs = await this.server.listen(want);
    const text = errs.map((e) => `DNS socket ${e.address}:${this.o.port}: ${e.error}`);
    if (text.join() !== this.listenErrors.join()) for (const t of text) this.o.logger.error(t);
    this.listenErrors = text;
    if (backend !== this.backend) this.o.logger.info({ backend, port: this.o.port, vip: this.vips.vip }, 'DNS VIP served by berthd');
    this.backend = backend;
    this.refreshUpstreams();
    return dnsFrontendService(this.vips, backend, this.o.port);
  }

  /**
   * Before the first Docker list: binds the DNS socket where the previous berthd's map entry most
   * likely points (loopback and docker0's address, if that interface exists), so that a restart
   * or a Docker outage does not stop forwarding; names in the zone get SERVFAIL until the first
   * zone. The first reconcile's frontend() corrects the addresses.
   */
  async listenEarly(interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]> = os.networkInterfaces()): Promise<void> {
    const docker0 = (interfaces.docker0 ?? []).filter((a) => a.family === 'IPv4').map((a) => a.address);
    const nets: NetworkInfo[] = docker0.length ? [{ id: 'docker0', name: 'bridge', subnets: [], gateways: docker0 }] : [];
    await this.frontend(nets);
  }

  /** Re-reads the host's resolvers (cheap: two small files), logging when the choice changes. */
  refreshUpstreams(): void {
    const self = this.server.addresses.map((ip) => ({ ip, port: this.o.port }));
    this.choice = readUpstreams(this.o.upstreams, [this.o.serviceCidr, this.o.serviceCidr6], self, this.o.resolvFiles);
    this.forwarder.setUpstreams(this.choice.upstreams);
    const key = JSON.stringify(this.choice);
    if (key !== this.lastUpstreamsKey) {
      this.lastUpstreamsKey = key;
      const level = this.choice.upstreams.length ? 'info' : 'warn';
      this.o.logger[level]({ upstreams: this.choice.upstreams, source: this.choice.source, skipped: this.choice.skipped },
        this.choice.upstreams.length ? 'DNS forwards names outside the zone to these resolvers' : 'DNS has no upstream resolver: names outside the zone get SERVFAIL');
    }
  }

  /**
   * The zone from now on: exactly these services and ingresses (the desired state a full sync
   * applied). O(services); names whose records did not change are left alone, and the SOA serial
   * moves only when something changed.
   */
  setServices(services: Service[]): void {
    const byName = new Map<string, { service?: Service; ingress?: Service }>();
    for (const s of services) {
      const e = byName.get(s.name) ?? {};
      e[s.kind] = s;
      byName.set(s.name, e);
    }
    for (const name of this.entities.keys()) if (!byName.has(name)) byName.set(name, {});
    this.apply(byName);
  }

  /**
   * The zone from now on differs only in `names` (an incremental sync's changed and removed
   * services and ingresses): each one's records are rebuilt from `get` (the desired state, as
   * applied to the datapath), the rest of the zone is untouched. O(names).
   */
  update(names: Iterable<string>, get: (kind: Service['kind'], name: string) => Service | undefined): void {
    const byName = new Map<string, { service?: Service; ingress?: Service }>();
    for (const name of names) byName.set(name, { service: get('service', name), ingress: get('ingress', name) });
    this.apply(byName);
  }

  private apply(byName: Map<string, { service?: Service; ingress?: Service }>): void {
    let live = this.live;
    const first = !live;
    if (!live) live = this.live = new LiveZone(this.o.domain, this.serial + 1, this.vips);
    let changed = first;
    for (const [name, e] of byName) {
      const n = (e.service ? 1 : 0) + (e.ingress ? 1 : 0);
      this.names += n - (this.entities.get(name) ?? 0);
      if (n) this.entities.set(name, n); else this.entities.delete(name);
      if (!first && live.update(name, e.service, e.ingress, this.serial + 1)) changed = true;
    }
    if (first) live.fill(byName, this.serial + 1);
    if (changed) this.serial++;
    if (first) this.server.setZone(live.zone);
  }

  status(): DnsStatus {
    return {
      domain: this.o.domain, vip: this.vips.vip, vip6: this.vips.vip6, port: this.o.port,
      listen: this.server.addresses, backend: this.backend,
      upstreams: this.choice.upstreams, upstreamSource: this.choice.source, names: this.names,
      errors: [...this.listenErrors, ...this.choice.skipped.map((s) => `upstream ${s.ip}:${s.port} skipped: ${s.why}`)],
    };
  }

  close(): void {
    this.server.close();
  }
}
