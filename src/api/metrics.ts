/**
 * Prometheus metrics (prom-client, on a registry of berth's own rather than the global one so
 * tests and the daemon never share state). Gauges read live values at scrape time from the
 * daemon through the MetricsSource callbacks; counters are bumped by the daemon as things happen.
 */
import client from 'prom-client';
import type { ServiceCounters } from '../datapath/types';
import type { DnsMetricsSink } from '../dns/server';
import type { ClusterView } from '../cluster';

export interface MetricsSource {
  services(): { service: number; ingress: number };
  backends(): number;
  labelErrors(): number;
  dockerReconnects(): number;
  envoyRestarts(): number;
  ready(): boolean;
  /** Cluster mode status, null on a single host (the cluster gauges then stay absent). */
  cluster?(): ClusterView | null;
  /** Per service name, from the BPF counters (may throw if the datapath is not open). */
  serviceCounters(): Map<string, ServiceCounters>;
  /** More Prometheus text appended at scrape time (additive: Envoy's ingress stats, proxy/stats.ts). */
  extraText?(): Promise<string>;
}

export class Metrics {
  readonly registry = new client.Registry();
  readonly reconcileDuration: client.Histogram<string>;
  readonly reconciles: client.Counter<'result'>;
  readonly mapOperations: client.Counter<'op'>;
  readonly mapErrors: client.Counter<string>;
  /** What the DNS server (src/dns/server.ts) reports. */
  readonly dns: DnsMetricsSink;
  readonly driftRepaired: client.Counter<'kind'>;
  readonly eventToMaps: client.Histogram<string>;

  constructor(private readonly src: MetricsSource) {
    const registers = [this.registry];
    client.collectDefaultMetrics({ register: this.registry, prefix: 'berthd_' });
    new client.Gauge({
      name: 'berth_up', help: '1 once berthd is ready (Docker listed, programs attached, maps reconciled)', registers,
      collect() { this.set(src.ready() ? 1 : 0); },
    });
    new client.Gauge({
      name: 'berth_services', help: 'Services and ingresses in the desired state', labelNames: ['kind'], registers,
      collect() { const s = src.services(); this.set({ kind: 'service' }, s.service); this.set({ kind: 'ingress' }, s.ingress); },
    });
    new client.Gauge({ name: 'berth_backends', help: 'Usable backends over all services', registers, collect() { this.set(src.backends()); } });
    new client.Gauge({ name: 'berth_label_errors', help: 'Containers/labels currently skipped for bad labels', registers, collect() { this.set(src.labelErrors()); } });
    new client.Gauge({ name: 'berth_docker_reconnects', help: 'Reconnections to the Docker engine since start', registers, collect() { this.set(src.dockerReconnects()); } });
    new client.Gauge({ name: 'berth_envoy_restarts', help: 'Envoy restarts since start', registers, collect() { this.set(src.envoyRestarts()); } });
    // BPF counters are monotonic but live in the kernel (they survive berthd restarts), so they
    // are exposed as gauges set at scrape time; rate() over them works the same.
    // Both per-service gauges come from one read of the counters map, done when the first of
    // them is collected (prom-client collects metrics in registration order).
    const conns: client.Gauge<'service'> = new client.Gauge({
      name: 'berth_service_connections', help: 'Connections balanced to a backend, per service (BPF counter)', labelNames: ['service'], registers,
      collect: () => readCounters(),
    });
    const refused = new client.Gauge({ name: 'berth_service_no_backend', help: 'Connects refused for lack of a backend, per service (BPF counter)', labelNames: ['service'], registers });
    const readCounters = () => {
      conns.reset();
      refused.reset();
      let counters: Map<string, ServiceCounters>;
      try { counters = src.serviceCounters(); } catch { return; }
      for (const [service, c] of counters) {
        conns.set({ service }, c.connects);
        refused.set({ service }, c.noBackend);
      }
    };
    // Cluster (etcd) gauges: registered only in cluster mode (src.cluster given).
    const cl = () => src.cluster?.() ?? null;
    if (src.cluster) this.clusterGauges(cl, registers);
    this.reconcileDuration = new client.Histogram({
      name: 'berth_reconcile_duration_seconds', help: 'Time to compute and apply one reconcile',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5], registers,
    });
    this.reconciles = new client.Counter({ name: 'berth_reconciles_total', help: 'Reconciles by result: ok, error, or skipped (no full Docker list yet, so nothing to reconcile from)', labelNames: ['result'], registers });
    this.mapOperations = new client.Counter({ name: 'berth_map_operations_total', help: 'BPF map writes and deletes', labelNames: ['op'], registers });
    this.eventToMaps = new client.Histogram({
      name: 'berth_event_to_maps_seconds', help: 'From a Docker container event to its change applied (maps written, proxy updated)',
      buckets: [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers,
    });
    this.driftRepaired = new client.Counter({
      name: 'berth_drift_repaired_total',
      help: 'Drift a full resync found and repaired: container (Docker state the events missed), map_entry (kernel maps unlike berth\'s view), plan (writes still needed once the view was the kernel\'s)',
      labelNames: ['kind'], registers,
    });
    this.mapErrors = new client.Counter({ name: 'berth_map_errors_total', help: 'BPF map operations that failed (e.g. a full map)', registers });
    const dnsQueries = new client.Counter({ name: 'berth_dns_queries_total', help: 'DNS queries received, by transport', labelNames: ['transport'], registers });
    const dnsResponses = new client.Counter({ name: 'berth_dns_responses_total', help: 'DNS answers sent, by rcode', labelNames: ['rcode'], registers });
    const dnsDropped = new client.Counter({ name: 'berth_dns_dropped_total', help: 'DNS queries dropped unanswered, by reason', labelNames: ['reason'], registers });
    const dnsForwarded = new client.Counter({ name: 'berth_dns_forwarded_total', help: 'Queries outside the zone forwarded upstream, by result', labelNames: ['result'], registers });
    const dnsForwardSeconds = new client.Histogram({
      name: 'berth_dns_forward_duration_seconds', help: 'Time an upstream took to answer a forwarded query',
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2], registers,
    });
    this.dns = {
      query: (transport) => dnsQueries.inc({ transport }),
      response: (rcode) => dnsResponses.inc({ rcode }),
      dropped: (reason) => dnsDropped.inc({ reason }),
      forwarded: (result, seconds) => {
        dnsForwarded.inc({ result });
        if (result === 'answer') dnsForwardSeconds.observe(seconds);
      },
    };
  }

  async text(): Promise<string> {
    const own = await this.registry.metrics();
    const extra = await this.src.extraText?.().catch(() => '') ?? '';
    return extra ? `${own}${own.endsWith('\n') ? '' : '\n'}${extra}` : own;
  }

  private clusterGauges(cl: () => ClusterView | null, registers: client.Registry[]): void {
    new client.Gauge({
      name: 'berth_cluster_etcd_connected', help: '1 while berthd is connected to etcd (cluster mode only)', registers,
      collect() { const c = cl(); if (c) this.set(c.etcd === 'connected' ? 1 : 0); },
    });
    new client.Gauge({
      name: 'berth_cluster_nodes', help: 'Nodes with a live record in etcd, this one included', registers,
      collect() { const c = cl(); if (c) this.set(c.nodes.length); },
    });
    new client.Gauge({
      name: 'berth_cluster_revision', help: 'Last etcd revision this node has seen', registers,
      collect() { const c = cl(); if (c) this.set(Number(c.revision)); },
    });
    new client.Gauge({
      name: 'berth_cluster_remote_backends', help: 'Backends on other nodes merged into the desired state', registers,
      collect() { const c = cl(); if (c) this.set(c.remoteBackends); },
    });
    new client.Gauge({
      name: 'berth_cluster_subnet_overlaps', help: "Peers' container subnets overlapping this host's or another peer's (their backends are not used)", registers,
      collect() { const c = cl(); if (c) this.set(c.overlaps.length); },
    });
    new client.Gauge({
      name: 'berth_cluster_etcd_disconnects', help: 'Times the etcd connection was lost since start', registers,
      collect() { const c = cl(); if (c) this.set(c.disconnects); },
    });
    new client.Gauge({
      name: 'berth_cluster_watch_compactions', help: 'Full re-reads because the watch revision was compacted', registers,
      collect() { const c = cl(); if (c) this.set(c.compactions); },
    });
    new client.Gauge({
      name: 'berth_cluster_rejected_records', help: 'Records from peers rejected by the codecs', registers,
      collect() { const c = cl(); if (c) this.set(c.rejectedRecords); },
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
