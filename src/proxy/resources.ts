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
import {
  DOWNSTREAM_TLS_TYPE, FILE_ACCESS_LOG_TYPE, HCM_TYPE, HTTP_PROTOCOL_OPTIONS_TYPE, PUSH_ORDER, ROUTER_TYPE, TLS_INSPECTOR_TYPE, TypeUrl, fromAny, toAny, type AnyMessage,
} from './protos';

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
  /**
   * Per route stat prefix (`berth_r_<hash>`, what Envoy's `vhost.*.route.<prefix>.*` stats carry):
   * the ingress and the route as users name it (`host/path`, `*` for any host). For metrics.
   */
  routeStats: Map<string, { ingress: string; route: string }>;
}

export function listenerName(ingress: string): string {
  return `berth_ingress_${ingress}`;
}

export function routeConfigName(ingress: string): string {
  return `berth_ingress_${ingress}`;
}

/** The route configuration of a TLS ingress's plain-HTTP side when it redirects to HTTPS. */
export function plainRouteConfigName(ingress: string): string {
  return `berth_ingress_${ingress}_plain`;
}

/** Service names are DNS labels (no '_'), so this name is unambiguous. */
export function clusterName(service: string, port: number, protocol: 'http' | 'h2c' = 'http'): string {
  return protocol === 'h2c' ? `berth_svc_${service}_${port}_h2c` : `berth_svc_${service}_${port}`;
}

/** SDS secret holding the certificate and key of one host name. */
export function secretName(host: string): string {
  return `berth_tls_${host}`;
}

/** Stable stat prefix of a route (Envoy stat names must not carry '/' or '.' of paths and hosts). */
export function routeStatPrefix(ingress: string, host: string | null, path: string): string {
  return `berth_r_${crypto.createHash('sha256').update(`${ingress}\0${host ?? '*'}\0${path}`).digest('hex').slice(0, 12)}`;
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

function duration(ms: number): { seconds: number; nanos: number } {
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}

/** RE2 syntax: escape everything that is not a plain path character. */
function re2Escape(s: string): string {
  return s.replace(/[^A-Za-z0-9/_~-]/g, (c) => `\\${c}`);
}

/** The Envoy Route of one berth route: match, target, and its per-route options. */
export function envoyRoute(ingress: string, r: Route, cluster: string): object {
  const action: Record<string, unknown> = { cluster };
  if (r.stripPrefix && r.path !== '/') {
    // prefix_rewrite '/' would turn /api/x into //x; a regex on the prefix and its '/' does not.
    const prefix = r.path.replace(/\/+$/, '');
    action.regex_rewrite = { pattern: { regex: `^${re2Escape(prefix)}/?` }, substitution: '/' };
  }
  if (r.timeoutMs !== undefined && r.timeoutMs !== null) action.timeout = duration(r.timeoutMs);
  if (r.retries) {
    action.retry_policy = { retry_on: '5xx,connect-failure,reset,refused-stream', num_retries: { value: r.retries } };
  }
  return {
    name: `${r.host ?? '*'}${r.path}`,
    match: { prefix: r.path },
    route: action,
    stat_prefix: routeStatPrefix(ingress, r.host, r.path),
  };
}

/**
 * The virtual hosts of an ingress. `redirect`: hosts whose plain-HTTP requests get a redirect to
 * HTTPS on `httpsPort` instead of their routes (the plain side of a TLS ingress with
 * redirectHttps; only hosts whose certificate is served).
 */
function virtualHosts(ingress: string, routes: Resolved[], redirect?: { hosts: Set<string>; httpsPort: number }): object[] {
  const anyHost = routes.filter((r) => r.route.host === null);
  const hosts = [...new Set(routes.map((r) => r.route.host).filter((h): h is string => h !== null))].sort();
  const toEnvoy = (rs: Resolved[]) => orderRoutes(rs.map((r) => ({ ...r.route, cluster: r.cluster }))).map((r) => envoyRoute(ingress, r, r.cluster));
  const redirectRoutes = (port: number) => [{
    name: 'https-redirect',
    match: { prefix: '/' },
    redirect: { https_redirect: true, ...(port !== 443 ? { port_redirect: port } : {}) },
  }];
  // Envoy picks exactly one virtual host per request and never falls through to another, so a
  // host's virtual host also carries the any-host routes (SPEC: a route without host = any host).
  const vhosts = hosts.map((h) => ({
    name: `${ingress}_${h}`,
    domains: [h],
    routes: redirect?.hosts.has(h) ? redirectRoutes(redirect.httpsPort) : toEnvoy([...routes.filter((r) => r.route.host === h), ...anyHost]),
  }));
  vhosts.push({ name: `${ingress}_default`, domains: ['*'], routes: toEnvoy(anyHost) });
  return vhosts;
}

/** A host's certificate chain and key (PEM), or why it cannot be served. */
export type HostCert = { cert: string; key: string } | { error: string };

export interface BuildOptions {
  /** Also listen on [::]:port (IPv6-only socket) for IPv6 ingress VIPs and publish ports. */
  ipv6: boolean;
  /** TLS material by host name (tls.ts loads it from tlsDir); a host absent here has no cert. */
  certs?: ReadonlyMap<string, HostCert>;
  /** File Envoy appends JSON access log lines to, or null for none. */
  accessLog?: string | null;
  /**
   * Whether the ingress listeners may use SO_REUSEPORT (Envoy's default: one socket per worker).
   * false on kernels before 6.5, where bpf_sk_assign refuses reuseport sockets
   * (src/util/kernel.ts skAssignTakesReuseport): one shared socket per listener. Default true.
   */
  reusePort?: boolean;
}

/**
 * One JSON object per request (Envoy's format operators). Field names follow common log
 * shippers' habits; `route` is berth's `host/path` route name.
 */
export const ACCESS_LOG_FORMAT: Record<string, string> = {
  time: '%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%',
  client: '%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%',
  method: '%REQ(:METHOD)%',
  host: '%REQ(:AUTHORITY)%',
  path: '%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%',
  protocol: '%PROTOCOL%',
  status: '%RESPONSE_CODE%',
  flags: '%RESPONSE_FLAGS%',
  bytes_in: '%BYTES_RECEIVED%',
  bytes_out: '%BYTES_SENT%',
  duration_ms: '%DURATION%',
  upstream: '%UPSTREAM_HOST%',
  route: '%ROUTE_NAME%',
  tls: '%DOWNSTREAM_TLS_VERSION%',
  sni: '%REQUESTED_SERVER_NAME%',
  user_agent: '%REQ(USER-AGENT)%',
  request_id: '%REQ(X-REQUEST-ID)%',
};

function hcm(ingress: string, routeConfig: string, o: BuildOptions): object {
  const format = { ...ACCESS_LOG_FORMAT, ingress }; // a literal: the ingress this listener serves
  return {
    stat_prefix: `ingress_${ingress}`,
    // codec_type AUTO (the default): HTTP/1.x, and HTTP/2 by ALPN on TLS or by the h2c
    // connection preface (prior knowledge) on plain connections.
    rds: { config_source: ADS_SOURCE, route_config_name: routeConfig },
    http_filters: [{ name: 'envoy.filters.http.router', typed_config: toAny(ROUTER_TYPE, {}) }],
    // Clients send "Host: name:port"; match virtual hosts on the name alone.
    strip_any_host_port: true,
    // WebSocket handshakes (Upgrade: websocket) are forwarded on every route; without this Envoy
    // answers them 403 (issue 10).
    upgrade_configs: [{ upgrade_type: 'websocket' }],
    // HTTP/1.0 clients (ab, old probes) are answered instead of refused with 426.
    http_protocol_options: { accept_http_10: true },
    // The downstream address is the real client (the listener is transparent): append it to
    // X-Forwarded-For and set X-Forwarded-Proto from the connection, not from client headers.
    use_remote_address: { value: true },
    ...(o.accessLog ? {
      access_log: [{
        name: 'envoy.access_loggers.file',
        // json_format is a google.protobuf.Struct; protobufjs bundles struct.proto with camelCase names.
        typed_config: toAny(FILE_ACCESS_LOG_TYPE, {
          path: o.accessLog,
          log_format: { json_format: { fields: Object.fromEntries(Object.entries(format).map(([k, v]) => [k, { stringValue: v }])) } },
        }),
      }],
    } : {}),
  };
}

const HCM_FILTER = 'envoy.filters.network.http_connection_manager';

/**
 * The listener of one ingress. A TLS ingress gets one filter chain per host whose certificate is
 * served (matched by SNI, the certificate comes over SDS) and one plain chain for everything that
 * is not TLS (tls_inspector tells them apart), so the VIP's listen and tlsListen ports and the
 * publish port can all reach this one listener.
 */
function listener(ing: Service & { ingress: NonNullable<Service['ingress']> }, tlsHosts: string[], o: BuildOptions): object {
  const name = ing.name;
  const port = ing.ingress.proxyPort!;
  const tls = !!ing.ingress.tls;
  const plainRoutes = tls && ing.ingress.redirectHttps && tlsHosts.length ? plainRouteConfigName(name) : routeConfigName(name);
  const chains: object[] = tlsHosts.map((h) => ({
    name: `tls_${h}`,
    filter_chain_match: { server_names: [h], transport_protocol: 'tls' },
    transport_socket: {
      name: 'envoy.transport_sockets.tls',
      typed_config: toAny(DOWNSTREAM_TLS_TYPE, {
        common_tls_context: {
          tls_certificate_sds_secret_configs: [{ name: secretName(h), sds_config: ADS_SOURCE }],
          alpn_protocols: ['h2', 'http/1.1'],
        },
      }),
    },
    filters: [{ name: HCM_FILTER, typed_config: toAny(HCM_TYPE, hcm(name, routeConfigName(name), o)) }],
  }));
  chains.push({
    name: 'plain',
    // A TLS handshake for a host without a served certificate matches no chain and is closed,
    // rather than being parsed as HTTP by the plain chain.
    ...(tls ? { filter_chain_match: { transport_protocol: 'raw_buffer' } } : {}),
    filters: [{ name: HCM_FILTER, typed_config: toAny(HCM_TYPE, hcm(name, plainRoutes, o)) }],
  });
  return {
    name: listenerName(name),
    address: { socket_address: { address: '0.0.0.0', port_value: port } },
    // A second, IPv6-only socket rather than one dual-stack socket: TPROXY and sk_assign hand
    // each family to the socket of that family.
    ...(o.ipv6 ? { additional_addresses: [{ address: { socket_address: { address: '::', port_value: port, ipv4_compat: false } } }] } : {}),
    // IP_TRANSPARENT: accepts connections TPROXY / bpf_sk_assign hand over although their
    // destination is the ingress VIP or a host address, not this socket's own address.
    transparent: { value: true },
    // Linux < 6.5: bpf_sk_assign cannot hand a packet to a reuseport socket (redirect: ebpf). Set
    // whatever the redirect mode, so that a switch between modes never changes a bound socket.
    ...(o.reusePort === false ? { enable_reuse_port: { value: false } } : {}),
    ...(tls ? { listener_filters: [{ name: 'envoy.filters.listener.tls_inspector', typed_config: toAny(TLS_INSPECTOR_TYPE, {}) }] } : {}),
    filter_chains: chains,
  };
}

function cluster(name: string, protocol: 'http' | 'h2c'): object {
  return {
    name,
    type: 'EDS',
    eds_cluster_config: { eds_config: ADS_SOURCE, service_name: name },
    connect_timeout: { seconds: 2 },
    lb_policy: 'ROUND_ROBIN',
    // h2c: HTTP/2 with prior knowledge to the backend (gRPC servers speak nothing else).
    ...(protocol === 'h2c' ? {
      typed_extension_protocol_options: {
        'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': toAny(HTTP_PROTOCOL_OPTIONS_TYPE, { explicit_http_config: { http2_protocol_options: {} } }),
      },
    } : {}),
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
 * a route whose target service/port does not exist is skipped and reported for its ingress; a
 * TLS host without a usable certificate loses its TLS chain (reported), the rest is served.
 * Deterministic: the same state and certificates give the same versions (a restarted berthd
 * serves the running Envoy exactly the config it has).
 */
export function buildSnapshot(state: DesiredState, opts: BuildOptions = { ipv6: false }): BuildResult {
  const errors: BuildResult['errors'] = [];
  const routeStats: BuildResult['routeStats'] = new Map();
  const services = new Map(state.services.filter((s) => s.kind === 'service').map((s) => [s.name, s]));
  const listeners = new Map<string, NamedResource>();
  const routeConfigs = new Map<string, NamedResource>();
  const clusters = new Map<string, NamedResource>();
  const endpoints = new Map<string, NamedResource>();
  const secrets = new Map<string, NamedResource>();

  for (const ing of state.services) {
    if (ing.kind !== 'ingress' || !ing.ingress || ing.ingress.proxyPort === null) continue;
    const spec = ing.ingress;
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
      const protocol = r.protocol ?? 'http';
      const cn = clusterName(svc.name, sp.port, protocol);
      resolved.push({ route: r, cluster: cn });
      routeStats.set(routeStatPrefix(ing.name, r.host, r.path), { ingress: ing.name, route: `${r.host ?? '*'}${r.path}` });
      if (!clusters.has(cn)) {
        clusters.set(cn, { name: cn, resource: toAny('envoy.config.cluster.v3.Cluster', cluster(cn, protocol)) });
        endpoints.set(cn, { name: cn, resource: toAny('envoy.config.endpoint.v3.ClusterLoadAssignment', loadAssignment(cn, svc, sp.targetPort)) });
      }
    }

    // TLS: a chain per host of the ingress's routes that has a good certificate.
    const tlsHosts: string[] = [];
    if (spec.tls) {
      const hosts = [...new Set(resolved.map((r) => r.route.host).filter((h): h is string => h !== null))].sort();
      if (!hosts.length) {
        errors.push({ ingress: ing.name, code: ProxyErrorCode.TLS_CERT, error: 'tls=true but no route names a host: TLS is served by SNI per host (berth.http.<ingress>.host)' });
      }
      for (const h of hosts) {
        const c = opts.certs?.get(h);
        if (!c || 'error' in c) {
          errors.push({ ingress: ing.name, code: ProxyErrorCode.TLS_CERT, error: `TLS for host ${h} is not served: ${c ? c.error : 'no certificate loaded'}` });
          continue;
        }
        tlsHosts.push(h);
        const sn = secretName(h);
        if (!secrets.has(sn)) {
          secrets.set(sn, {
            name: sn,
            resource: toAny('envoy.extensions.transport_sockets.tls.v3.Secret', {
              name: sn,
              tls_certificate: { certificate_chain: { inline_string: c.cert }, private_key: { inline_string: c.key } },
            }),
          });
        }
      }
    }

    const ln = listenerName(ing.name);
    listeners.set(ln, { name: ln, resource: toAny('envoy.config.listener.v3.Listener', listener(ing as Service & { ingress: NonNullable<Service['ingress']> }, tlsHosts, opts)) });
    const rn = routeConfigName(ing.name);
    routeConfigs.set(rn, {
      name: rn,
      resource: toAny('envoy.config.route.v3.RouteConfiguration', { name: rn, virtual_hosts: virtualHosts(ing.name, resolved) }),
    });
    if (spec.tls && spec.redirectHttps && tlsHosts.length) {
      const pn = plainRouteConfigName(ing.name);
      const redirect = { hosts: new Set(tlsHosts), httpsPort: spec.tlsListen ?? 443 };
      routeConfigs.set(pn, {
        name: pn,
        resource: toAny('envoy.config.route.v3.RouteConfiguration', { name: pn, virtual_hosts: virtualHosts(ing.name, resolved, redirect) }),
      });
    }
  }

  const byType = new Map<TypeUrl, Map<string, NamedResource>>([
    [TypeUrl.cluster, clusters], [TypeUrl.endpoint, endpoints], [TypeUrl.secret, secrets], [TypeUrl.listener, listeners], [TypeUrl.route, routeConfigs],
  ]);
  const types = new Map(PUSH_ORDER.map((t) => [t, { version: versionOf(byType.get(t)!), resources: byType.get(t)! as ReadonlyMap<string, NamedResource> }]));
  const version = crypto.createHash('sha256').update([...types.values()].map((t) => t.version).join(',')).digest('hex').slice(0, 16);
  const snapshot: Snapshot = { version, types };
  const problems = checkConsistency(snapshot);
  if (problems.length) throw new ProxyError(ProxyErrorCode.SNAPSHOT_INCONSISTENT, `inconsistent xDS snapshot: ${problems.join('; ')}`);
  return { snapshot, errors, routeStats };
}

/**
 * The names a resource refers to, by the type that must hold them. Decoded from the encoded Any
 * itself, so the check covers what Envoy will actually receive.
 */
/* eslint-disable @typescript-eslint/no-explicit-any -- walking decoded protobuf objects */
export function references(typeUrl: TypeUrl, r: NamedResource): { type: TypeUrl; name: string }[] {
  const msg = fromAny(r.resource) as any;
  switch (typeUrl) {
    case TypeUrl.listener: {
      const chains = msg.filter_chains ?? [];
      const routes = chains.flatMap((fc: any) => (fc.filters ?? []))
        .filter((f: any) => f.typed_config?.type_url === `type.googleapis.com/${HCM_TYPE}`)
        .map((f: any) => fromAny(f.typed_config) as any)
        .filter((h: any) => h.rds)
        .map((h: any) => ({ type: TypeUrl.route, name: h.rds.route_config_name as string }));
      const secrets = chains.map((fc: any) => fc.transport_socket?.typed_config)
        .filter((tc: any) => tc?.type_url === `type.googleapis.com/${DOWNSTREAM_TLS_TYPE}`)
        .flatMap((tc: any) => ((fromAny(tc) as any).common_tls_context?.tls_certificate_sds_secret_configs ?? []))
        .map((sc: any) => ({ type: TypeUrl.secret, name: sc.name as string }));
      return [...routes, ...secrets];
    }
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
