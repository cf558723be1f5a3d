/**
 * Pure: DesiredState -> one consistent, versioned xDS snapshot (no I/O). The shape follows the
 * per-node proxy of seed 002: per ingress a Listener (http_connection_manager + router, RDS), a
 * RouteConfiguration, one EDS Cluster per routed (service, port) and its ClusterLoadAssignment.
 *
 * Like go-control-plane's snapshot, a snapshot is immutable once built, carries a version per
 * resource type (a hash of the encoded resources, so an unchanged type is never re-pushed) and is
 * checked for consistency before it is handed to the ADS server.
 */
import crypto from 'node:crypto';
import type { DesiredState, Route, Service } from '../model/types';
import { ProxyError, ProxyErrorCode } from './errors';
import { HCM_TYPE, ROUTER_TYPE, PUSH_ORDER, TypeUrl, fromAny, toAny, type AnyMessage } from './protos';

export interface NamedResource {
  name: string;
  resource: AnyMessage;
}

export interface Snapshot {
  /** Version of the whole snapshot: a hash of the per-type versions. */
  readonly version: string;
  /** Per type: version (content hash) and resources by name. */
  readonly types: ReadonlyMap<TypeUrl, { version: string; resources: ReadonlyMap<string, NamedResource> }>;
}

export interface BuildResult {
  snapshot: Snapshot;
  /** Per-ingress problems (e.g. a route to an unknown service); the rest of the ingress is served. */
  errors: { ingress: string; error: string; code: string }[];
}

export function listenerName(ingress: string): string {
  return `berth_ingress_${ingress}`;
}

export function routeConfigName(ingress: string): string {
  return `berth_ingress_${ingress}`;
}

/** Service names are DNS labels (no '_'), so this name is unambiguous. */
export function clusterName(service: string, port: number): string {
  return `berth_svc_${service}_${port}`;
}

const ADS_SOURCE = { ads: {}, resource_api_version: 'V3' };

/** A route with the service it resolves to. */
interface Resolved {
  route: Route;
  cluster: string;
}

/**
 * Routes sorted the way Envoy must see them (first match wins): longest prefix first; at equal
 * length host-specific before any-host; then by service and path for a stable order.
 */
export function orderRoutes<T extends { host: string | null; path: string; service: string }>(routes: T[]): T[] {
  return [...routes].sort((a, b) =>
    b.path.length - a.path.length
    || Number(b.host !== null) - Number(a.host !== null)
    || a.path.localeCompare(b.path)
    || a.service.localeCompare(b.service));
}

function virtualHosts(ingress: string, routes: Resolved[]): object[] {
  const anyHost = routes.filter((r) => r.route.host === null);
  const hosts = [...new Set(routes.map((r) => r.route.host).filter((h): h is string => h !== null))].sort();
  const toEnvoy = (rs: Resolved[]) => orderRoutes(rs.map((r) => ({ ...r.route, cluster: r.cluster }))).map((r) => ({
    name: `${r.host ?? '*'}${r.path}`,
    match: { prefix: r.path },
    route: { cluster: r.cluster },
  }));
  // Envoy picks exactly one virtual host per request and never falls through to another, so a
  // host's virtual host also carries the any-host routes (SPEC: a route without host = any host).
  const vhosts = hosts.map((h) => ({
    name: `${ingress}_${h}`,
    domains: [h],
    routes: toEnvoy([...routes.filter((r) => r.route.host === h), ...anyHost]),
  }));
  vhosts.push({ name: `${ingress}_default`, domains: ['*'], routes: toEnvoy(anyHost) });
  return vhosts;
}

export interface BuildOptions {
  /** Also listen on [::]:port (IPv6-only socket) for IPv6 ingress VIPs and publish ports. */
  ipv6: boolean;
}

function listener(ingress: string, port: number, o: BuildOptions): object {
  const hcm = {
    stat_prefix: `ingress_${ingress}`,
    rds: { config_source: ADS_SOURCE, route_config_name: routeConfigName(ingress) },
    http_filters: [{ name: 'envoy.filters.http.router', typed_config: toAny(ROUTER_TYPE, {}) }],
    // Clients send "Host: name:port"; match virtual hosts on the name alone.
    strip_any_host_port: true,
  };
  return {
    name: listenerName(ingress),
    address: { socket_address: { address: '0.0.0.0', port_value: port } },
    // A second, IPv6-only socket rather than one dual-stack socket: TPROXY and sk_assign hand
    // each family to the socket of that family.
    ...(o.ipv6 ? { additional_addresses: [{ address: { socket_address: { address: '::', port_value: port, ipv4_compat: false } } }] } : {}),
    // IP_TRANSPARENT: accepts connections TPROXY / bpf_sk_assign hand over although their
    // destination is the ingress VIP or a host address, not this socket's own address.
    transparent: { value: true },
    filter_chains: [{ filters: [{ name: 'envoy.filters.network.http_connection_manager', typed_config: toAny(HCM_TYPE, hcm) }] }],
  };
}

function cluster(name: string): object {
  return {
    name,
    type: 'EDS',
    eds_cluster_config: { eds_config: ADS_SOURCE, service_name: name },
    connect_timeout: { seconds: 2 },
    lb_policy: 'ROUND_ROBIN',
  };
}

function loadAssignment(name: string, svc: Service, targetPort: number): object {
  const addrs = svc.backends.map((b) => b.ip ?? b.ip6).filter((a): a is string => a !== null);
  return {
    cluster_name: name,
    endpoints: [{
      lb_endpoints: addrs.map((a) => ({ endpoint: { address: { socket_address: { address: a, port_value: targetPort } } } })),
    }],
  };
}

function versionOf(resources: Map<string, NamedResource>): string {
  const h = crypto.createHash('sha256');
  for (const name of [...resources.keys()].sort()) {
    const r = resources.get(name)!;
    h.update(name).update('\0').update(r.resource.value).update('\0');
  }
  return h.digest('hex').slice(0, 16);
}

/**
 * Build the snapshot. Ingresses without a listener port yet are left out (nothing can reach them);
 * a route whose target service/port does not exist is skipped and reported for its ingress.
 */
export function buildSnapshot(state: DesiredState, opts: BuildOptions = { ipv6: false }): BuildResult {
  const errors: BuildResult['errors'] = [];
  const services = new Map(state.services.filter((s) => s.kind === 'service').map((s) => [s.name, s]));
  const listeners = new Map<string, NamedResource>();
  const routeConfigs = new Map<string, NamedResource>();
  const clusters = new Map<string, NamedResource>();
  const endpoints = new Map<string, NamedResource>();

  for (const ing of state.services) {
    if (ing.kind !== 'ingress' || !ing.ingress || ing.ingress.proxyPort === null) continue;
    const resolved: Resolved[] = [];
    for (const r of ing.routes) {
      const svc = services.get(r.service);
      const sp = svc?.ports.find((p) => p.port === r.port && p.protocol === 'tcp');
      if (!svc || !sp) {
        errors.push({
          ingress: ing.name,
          code: ProxyErrorCode.ROUTE_TARGET,
          error: `route ${r.host ?? '*'}${r.path}: ${svc ? `service ${r.service} has no tcp port ${r.port}` : `no service ${r.service}`}`,
        });
        continue;
      }
      const cn = clusterName(svc.name, sp.port);
      resolved.push({ route: r, cluster: cn });
      if (!clusters.has(cn)) {
        clusters.set(cn, { name: cn, resource: toAny('envoy.config.cluster.v3.Cluster', cluster(cn)) });
        endpoints.set(cn, { name: cn, resource: toAny('envoy.config.endpoint.v3.ClusterLoadAssignment', loadAssignment(cn, svc, sp.targetPort)) });
      }
    }
    const ln = listenerName(ing.name);
    listeners.set(ln, { name: ln, resource: toAny('envoy.config.listener.v3.Listener', listener(ing.name, ing.ingress.proxyPort, opts)) });
    const rn = routeConfigName(ing.name);
    routeConfigs.set(rn, {
      name: rn,
      resource: toAny('envoy.config.route.v3.RouteConfiguration', { name: rn, virtual_hosts: virtualHosts(ing.name, resolved) }),
    });
  }

  const byType = new Map<TypeUrl, Map<string, NamedResource>>([
    [TypeUrl.cluster, clusters], [TypeUrl.endpoint, endpoints], [TypeUrl.listener, listeners], [TypeUrl.route, routeConfigs],
  ]);
  const types = new Map(PUSH_ORDER.map((t) => [t, { version: versionOf(byType.get(t)!), resources: byType.get(t)! as ReadonlyMap<string, NamedResource> }]));
  const version = crypto.createHash('sha256').update([...types.values()].map((t) => t.version).join(',')).digest('hex').slice(0, 16);
  const snapshot: Snapshot = { version, types };
  const problems = checkConsistency(snapshot);
  if (problems.length) throw new ProxyError(ProxyErrorCode.SNAPSHOT_INCONSISTENT, `inconsistent xDS snapshot: ${problems.join('; ')}`);
  return { snapshot, errors };
}

/**
 * The names a resource refers to, by the type that must hold them. Decoded from the encoded Any
 * itself, so the check covers what Envoy will actually receive.
 */
/* eslint-disable @typescript-eslint/no-explicit-any -- walking decoded protobuf objects */
export function references(typeUrl: TypeUrl, r: NamedResource): { type: TypeUrl; name: string }[] {
  const msg = fromAny(r.resource) as any;
  switch (typeUrl) {
    case TypeUrl.listener:
      return (msg.filter_chains ?? []).flatMap((fc: any) => (fc.filters ?? []))
        .filter((f: any) => f.typed_config?.type_url === `type.googleapis.com/${HCM_TYPE}`)
        .map((f: any) => fromAny(f.typed_config) as any)
        .filter((h: any) => h.rds)
        .map((h: any) => ({ type: TypeUrl.route, name: h.rds.route_config_name as string }));
    case TypeUrl.route:
      return (msg.virtual_hosts ?? []).flatMap((vh: any) => (vh.routes ?? []))
        .filter((rt: any) => rt.route?.cluster)
        .map((rt: any) => ({ type: TypeUrl.cluster, name: rt.route.cluster as string }));
    case TypeUrl.cluster:
      return msg.type === 'EDS' ? [{ type: TypeUrl.endpoint, name: (msg.eds_cluster_config?.service_name || msg.name) as string }] : [];
    default:
      return [];
  }
}

/** Every referenced route configuration, cluster and load assignment exists (go-control-plane's Consistent()). */
export function checkConsistency(s: Snapshot): string[] {
  const problems: string[] = [];
  for (const [type, { resources }] of s.types) {
    for (const r of resources.values()) {
      for (const ref of references(type, r)) {
        if (!s.types.get(ref.type)?.resources.has(ref.name)) problems.push(`${r.name} refers to missing ${ref.type.replace(/^.*\./, '')} ${ref.name}`);
      }
    }
  }
  return problems;
}

/** An empty snapshot (what Envoy gets before the first desired state). */
export function emptySnapshot(): Snapshot {
  return buildSnapshot({ services: [], labelErrors: [] }).snapshot;
}
