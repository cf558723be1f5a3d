/**
 * Issue 10's resource builder features, one by one, decoded from what Envoy would receive:
 * HCM protocol settings, h2c clusters, strip-prefix, timeout, retries, route stats, TLS filter
 * chains per host over SDS, the redirect route configuration, skipped TLS hosts, determinism.
 */
import test from 'ava';
import { buildSnapshot, clusterName, envoyRoute, listenerName, plainRouteConfigName, routeConfigName, routeStatPrefix, secretName, type HostCert, type Snapshot } from '../../../src/proxy/resources';
import { TypeUrl, fromAny } from '../../../src/proxy/protos';
import { ProxyErrorCode } from '../../../src/proxy/errors';
import type { DesiredState, Route } from '../../../src/model/types';
import { bookinfo, ingress, route, service } from './fixtures';

/* eslint-disable @typescript-eslint/no-explicit-any -- decoded protobuf objects */
function decoded(s: Snapshot, type: TypeUrl, name: string): any {
  const r = s.types.get(type)!.resources.get(name);
  if (!r) throw new Error(`no ${type} ${name}`);
  return fromAny(r.resource);
}

function hcmOf(chain: any): any {
  return fromAny(chain.filters[0].typed_config);
}

test('every HCM: WebSocket upgrades, HTTP/1.0, real client address in X-Forwarded-For, AUTO codec (h2c and h2 by ALPN)', (t) => {
  const { snapshot } = buildSnapshot(bookinfo(), { ipv6: false, accessLog: '/run/berth/access.log' });
  const hcm = hcmOf(decoded(snapshot, TypeUrl.listener, listenerName('basic')).filter_chains[0]);
  t.deepEqual(hcm.upgrade_configs, [{ upgrade_type: 'websocket' }]);
  t.deepEqual(hcm.http_protocol_options, { accept_http_10: true });
  t.deepEqual(hcm.use_remote_address, { value: true });
  t.is(hcm.codec_type, undefined, 'AUTO (the default): HTTP/1.x, h2c prior knowledge, h2 by ALPN');
  const al = hcm.access_log[0];
  t.is(al.name, 'envoy.access_loggers.file');
  const file = fromAny(al.typed_config) as any;
  t.is(file.path, '/run/berth/access.log');
  const fmt = file.log_format.json_format.fields;
  t.is(fmt.ingress.stringValue, 'basic', 'the ingress is a literal per listener');
  t.is(fmt.status.stringValue, '%RESPONSE_CODE%');
  t.is(fmt.client.stringValue, '%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%');
});

test('no access log when it is off', (t) => {
  const { snapshot } = buildSnapshot(bookinfo(), { ipv6: false, accessLog: null });
  t.is(hcmOf(decoded(snapshot, TypeUrl.listener, listenerName('basic')).filter_chains[0]).access_log, undefined);
});

test('protocol=h2c: its own cluster with HTTP/2 to the backend; http routes to the same service keep HTTP/1.1', (t) => {
  const st = bookinfo();
  st.services[0].routes.push({ ...route('/grpc', 'details'), protocol: 'h2c' });
  const { snapshot, errors } = buildSnapshot(st);
  t.deepEqual(errors, []);
  const h2 = decoded(snapshot, TypeUrl.cluster, clusterName('details', 9080, 'h2c'));
  t.is(h2.name, 'berth_svc_details_9080_h2c');
  const opts = fromAny(h2.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions']) as any;
  t.deepEqual(opts.explicit_http_config, { http2_protocol_options: {} });
  t.is(decoded(snapshot, TypeUrl.cluster, clusterName('details', 9080)).typed_extension_protocol_options, undefined);
  const ep = decoded(snapshot, TypeUrl.endpoint, clusterName('details', 9080, 'h2c'));
  t.is(ep.endpoints[0].lb_endpoints.length, 2, 'same backends');
});

// [route options, what the Envoy route action must carry]
const ROUTE_CASES: [string, Partial<Route>, object][] = [
  ['defaults', {}, { cluster: 'c' }],
  ['strip /api', { path: '/api', stripPrefix: true }, { cluster: 'c', regex_rewrite: { pattern: { regex: '^/api/?' }, substitution: '/' } }],
  ['strip /api/ (trailing slash)', { path: '/api/', stripPrefix: true }, { cluster: 'c', regex_rewrite: { pattern: { regex: '^/api/?' }, substitution: '/' } }],
  ['strip escapes regex characters', { path: '/v1.0+x', stripPrefix: true }, { cluster: 'c', regex_rewrite: { pattern: { regex: '^/v1\\.0\\+x/?' }, substitution: '/' } }],
  ['strip of / is a no-op', { path: '/', stripPrefix: true }, { cluster: 'c' }],
  ['timeout 1.5s', { timeoutMs: 1500 }, { cluster: 'c', timeout: { seconds: 1, nanos: 500000000 } }],
  ['timeout 0 = none', { timeoutMs: 0 }, { cluster: 'c', timeout: { seconds: 0, nanos: 0 } }],
  ['retries 2', { retries: 2 }, { cluster: 'c', retry_policy: { retry_on: '5xx,connect-failure,reset,refused-stream', num_retries: { value: 2 } } }],
  ['retries 0 = none', { retries: 0 }, { cluster: 'c' }],
];
for (const [name, opts, action] of ROUTE_CASES) {
  test(`route options: ${name}`, (t) => {
    const r = envoyRoute('edge', { ...route('/x', 's'), ...opts }, 'c') as any;
    t.deepEqual(r.route, action);
    t.is(r.stat_prefix, routeStatPrefix('edge', null, opts.path ?? '/x'));
    t.regex(r.stat_prefix, /^berth_r_[0-9a-f]{12}$/);
  });
}

test('the options reach the encoded route configuration, and routeStats names each route', (t) => {
  const st = bookinfo();
  st.services[0].routes[0] = { ...st.services[0].routes[0], stripPrefix: true, timeoutMs: 30000, retries: 2 };
  const { snapshot, routeStats } = buildSnapshot(st);
  const rc = decoded(snapshot, TypeUrl.route, routeConfigName('basic'));
  const details = rc.virtual_hosts[0].routes.find((r: any) => r.match.prefix === '/details');
  t.is(details.route.regex_rewrite.pattern.regex, '^/details/?');
  t.deepEqual(details.route.timeout, { seconds: '30', nanos: 0 });
  t.is(details.route.retry_policy.num_retries.value, 2);
  t.deepEqual([...routeStats.values()].map((v) => v.route).sort(), ['*/', '*/details']);
  t.deepEqual(routeStats.get(details.stat_prefix), { ingress: 'basic', route: '*/details' });
});

const PEM = { cert: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n', key: '-----BEGIN PRIVATE KEY-----\nMIIC\n-----END PRIVATE KEY-----\n' };

function tlsState(redirectHttps: boolean, hosts: string[] = ['shop.test', 'other.test']): DesiredState {
  const ing = ingress('secure', [...hosts.map((h) => route('/', 'productpage', 9080, h)), route('/any', 'details')]);
  ing.ports.push({ port: 443, protocol: 'tcp', targetPort: 443 });
  ing.ingress = { ...ing.ingress!, tls: true, tlsListen: 443, redirectHttps };
  return { services: [ing, ...bookinfo().services.slice(1)], labelErrors: [] };
}

test('TLS: tls_inspector, one chain per host with a served certificate (SNI, SDS over ADS, h2+http/1.1 ALPN), a raw_buffer plain chain', (t) => {
  const certs = new Map<string, HostCert>([['shop.test', PEM], ['other.test', PEM]]);
  const { snapshot, errors } = buildSnapshot(tlsState(false), { ipv6: false, certs });
  t.deepEqual(errors, []);
  const l = decoded(snapshot, TypeUrl.listener, listenerName('secure'));
  t.deepEqual(l.listener_filters.map((f: any) => f.name), ['envoy.filters.listener.tls_inspector']);
  t.deepEqual(l.filter_chains.map((c: any) => c.name), ['tls_other.test', 'tls_shop.test', 'plain']);
  const shop = l.filter_chains[1];
  t.deepEqual(shop.filter_chain_match, { server_names: ['shop.test'], transport_protocol: 'tls' });
  t.is(shop.transport_socket.name, 'envoy.transport_sockets.tls');
  const ctx = fromAny(shop.transport_socket.typed_config) as any;
  t.deepEqual(ctx.common_tls_context.tls_certificate_sds_secret_configs, [{ name: secretName('shop.test'), sds_config: { ads: {}, resource_api_version: 'V3' } }]);
  t.deepEqual(ctx.common_tls_context.alpn_protocols, ['h2', 'http/1.1']);
  t.is(hcmOf(shop).rds.route_config_name, routeConfigName('secure'));
  t.deepEqual(l.filter_chains[2].filter_chain_match, { transport_protocol: 'raw_buffer' });
  t.is(hcmOf(l.filter_chains[2]).rds.route_config_name, routeConfigName('secure'), 'no redirect asked: plain serves the routes');
  const secret = decoded(snapshot, TypeUrl.secret, secretName('shop.test'));
  t.is(secret.tls_certificate.certificate_chain.inline_string, PEM.cert);
  t.is(secret.tls_certificate.private_key.inline_string, PEM.key);
  t.deepEqual([...snapshot.types.get(TypeUrl.secret)!.resources.keys()].sort(), ['berth_tls_other.test', 'berth_tls_shop.test']);
});

test('TLS: a host without a usable certificate loses only its chain, with the reason; the others serve', (t) => {
  const certs = new Map<string, HostCert>([['shop.test', PEM], ['other.test', { error: '/etc/berth/tls/other.test.key does not exist' }]]);
  const { snapshot, errors } = buildSnapshot(tlsState(true), { ipv6: false, certs });
  t.deepEqual(errors, [{ ingress: 'secure', code: ProxyErrorCode.TLS_CERT, error: 'TLS for host other.test is not served: /etc/berth/tls/other.test.key does not exist' }]);
  const l = decoded(snapshot, TypeUrl.listener, listenerName('secure'));
  t.deepEqual(l.filter_chains.map((c: any) => c.name), ['tls_shop.test', 'plain']);
  t.deepEqual([...snapshot.types.get(TypeUrl.secret)!.resources.keys()], ['berth_tls_shop.test']);
  // redirectHttps: the plain chain uses the redirect configuration, which redirects only shop.test.
  t.is(hcmOf(l.filter_chains[1]).rds.route_config_name, plainRouteConfigName('secure'));
  const plain = decoded(snapshot, TypeUrl.route, plainRouteConfigName('secure'));
  const vh = (n: string) => plain.virtual_hosts.find((v: any) => v.domains[0] === n);
  t.deepEqual(vh('shop.test').routes, [{ name: 'https-redirect', match: { prefix: '/' }, redirect: { https_redirect: true } }]);
  t.true(vh('other.test').routes.every((r: any) => r.route?.cluster), 'no certificate: no redirect, its routes serve');
  t.true(vh('*').routes.every((r: any) => r.route?.cluster));
});

test('TLS: no certificates at all, or no host on any route: reported, plain HTTP still serves', (t) => {
  const none = buildSnapshot(tlsState(true), { ipv6: false, certs: new Map() });
  t.deepEqual(none.errors.map((e) => e.error).sort(), ['TLS for host other.test is not served: no certificate loaded', 'TLS for host shop.test is not served: no certificate loaded']);
  const l = decoded(none.snapshot, TypeUrl.listener, listenerName('secure'));
  t.deepEqual(l.filter_chains.map((c: any) => c.name), ['plain']);
  t.is(hcmOf(l.filter_chains[0]).rds.route_config_name, routeConfigName('secure'), 'nothing to redirect to');
  t.false(none.snapshot.types.get(TypeUrl.route)!.resources.has(plainRouteConfigName('secure')));
  const hostless = buildSnapshot(tlsState(false, []), { ipv6: false });
  t.is(hostless.errors[0].code, ProxyErrorCode.TLS_CERT);
  t.regex(hostless.errors[0].error, /no route names a host/);
});

test('redirect to a non-default tlsListen carries the port', (t) => {
  const st = tlsState(true, ['shop.test']);
  st.services[0].ingress!.tlsListen = 8443;
  const { snapshot } = buildSnapshot(st, { ipv6: false, certs: new Map([['shop.test', PEM]]) });
  const plain = decoded(snapshot, TypeUrl.route, plainRouteConfigName('secure'));
  t.deepEqual(plain.virtual_hosts[0].routes[0].redirect, { https_redirect: true, port_redirect: 8443 });
});

test('a plain ingress has no listener filter and no transport match', (t) => {
  const l = decoded(buildSnapshot(bookinfo()).snapshot, TypeUrl.listener, listenerName('basic'));
  t.is(l.listener_filters, undefined);
  t.deepEqual(l.filter_chains.map((c: any) => [c.name, c.filter_chain_match]), [['plain', undefined]]);
});

test('deterministic: the same state and certificates give the same versions (what a restarted berthd serves the adopted Envoy)', (t) => {
  const certs = new Map<string, HostCert>([['shop.test', PEM]]);
  const a = buildSnapshot(tlsState(true), { ipv6: true, certs, accessLog: '/x' }).snapshot;
  const b = buildSnapshot(tlsState(true), { ipv6: true, certs: new Map(certs), accessLog: '/x' }).snapshot;
  t.is(a.version, b.version);
  const rotated = buildSnapshot(tlsState(true), { ipv6: true, certs: new Map([['shop.test', { ...PEM, cert: PEM.cert + '\n' }]]), accessLog: '/x' }).snapshot;
  t.not(rotated.version, a.version, 'a rotated certificate is a new version');
  t.not(rotated.types.get(TypeUrl.secret)!.version, a.types.get(TypeUrl.secret)!.version);
  t.is(rotated.types.get(TypeUrl.listener)!.version, a.types.get(TypeUrl.listener)!.version, 'only SDS changes: the listener is not re-created');
  t.truthy(service);
});
