import test from 'ava';
import { buildSnapshot, checkConsistency, clusterName, emptySnapshot, listenerName, orderRoutes, routeConfigName, type Snapshot } from '../../../src/proxy/resources';
import { TypeUrl, HCM_TYPE, fromAny, decode, encode, toAny } from '../../../src/proxy/protos';
import { ProxyErrorCode } from '../../../src/proxy/errors';
import { bookinfo, ingress, route, service } from './fixtures';

/* eslint-disable @typescript-eslint/no-explicit-any -- decoded protobuf objects */
function decoded(s: Snapshot, type: TypeUrl, name: string): any {
  const r = s.types.get(type)!.resources.get(name);
  if (!r) throw new Error(`no ${type} ${name}`);
  return fromAny(r.resource);
}

test('one listener, route configuration, EDS cluster and load assignment per target', (t) => {
  const { snapshot, errors } = buildSnapshot(bookinfo());
  t.deepEqual(errors, []);
  const names = (type: TypeUrl) => [...snapshot.types.get(type)!.resources.keys()].sort();
  t.deepEqual(names(TypeUrl.listener), ['berth_ingress_basic']);
  t.deepEqual(names(TypeUrl.route), ['berth_ingress_basic']);
  t.deepEqual(names(TypeUrl.cluster), ['berth_svc_details_9080', 'berth_svc_productpage_9080']);
  t.deepEqual(names(TypeUrl.endpoint), ['berth_svc_details_9080', 'berth_svc_productpage_9080']);
});

test('the listener: 0.0.0.0:proxyPort, transparent, HCM with RDS over ADS and the router filter', (t) => {
  const { snapshot } = buildSnapshot(bookinfo());
  const l = decoded(snapshot, TypeUrl.listener, listenerName('basic'));
  t.deepEqual(l.address.socket_address, { address: '0.0.0.0', port_value: 15000 });
  t.deepEqual(l.transparent, { value: true });
  const f = l.filter_chains[0].filters[0];
  t.is(f.name, 'envoy.filters.network.http_connection_manager');
  t.is(f.typed_config.type_url, `type.googleapis.com/${HCM_TYPE}`);
  const hcm = fromAny(f.typed_config) as any;
  t.is(hcm.rds.route_config_name, routeConfigName('basic'));
  t.deepEqual(hcm.rds.config_source.ads, {});
  t.is(hcm.rds.config_source.resource_api_version, 'V3');
  t.deepEqual(hcm.http_filters.map((h: any) => h.name), ['envoy.filters.http.router']);
  t.is(hcm.http_filters[0].typed_config.type_url, 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router');
  t.true(hcm.strip_any_host_port);
});

test('with IPv6, the listener also binds [::]:proxyPort, IPv6-only', (t) => {
  const l = decoded(buildSnapshot(bookinfo(), { ipv6: true }).snapshot, TypeUrl.listener, listenerName('basic'));
  t.deepEqual(l.additional_addresses.map((a: any) => a.address.socket_address), [{ address: '::', port_value: 15000, ipv4_compat: false }]);
  t.is(decoded(buildSnapshot(bookinfo()).snapshot, TypeUrl.listener, listenerName('basic')).additional_addresses, undefined);
});

test('kernels before 6.5 (bpf_sk_assign takes no reuseport socket): listeners without SO_REUSEPORT; otherwise Envoy\'s default', (t) => {
  const l = decoded(buildSnapshot(bookinfo(), { ipv6: true, reusePort: false }).snapshot, TypeUrl.listener, listenerName('basic'));
  t.deepEqual(l.enable_reuse_port, { value: false });
  for (const o of [{ ipv6: false }, { ipv6: false, reusePort: true }]) {
    t.is(decoded(buildSnapshot(bookinfo(), o).snapshot, TypeUrl.listener, listenerName('basic')).enable_reuse_port, undefined);
  }
});

test('routes: longest prefix first, in the default virtual host', (t) => {
  const st = bookinfo();
  st.services[0].routes = [route('/', 'productpage'), route('/details', 'details'), route('/details/v2', 'details')];
  const rc = decoded(buildSnapshot(st).snapshot, TypeUrl.route, 'berth_ingress_basic');
  t.is(rc.virtual_hosts.length, 1);
  t.deepEqual(rc.virtual_hosts[0].domains, ['*']);
  t.deepEqual(rc.virtual_hosts[0].routes.map((r: any) => [r.match.prefix, r.route.cluster]), [
    ['/details/v2', 'berth_svc_details_9080'],
    ['/details', 'berth_svc_details_9080'],
    ['/', 'berth_svc_productpage_9080'],
  ]);
});

test('host routes get their own virtual host, which also carries the any-host routes', (t) => {
  const st = bookinfo();
  st.services[0].routes = [route('/', 'productpage'), route('/details', 'details', 9080, 'shop.example'), route('/', 'details', 9080, 'shop.example')];
  const rc = decoded(buildSnapshot(st).snapshot, TypeUrl.route, 'berth_ingress_basic');
  t.deepEqual(rc.virtual_hosts.map((v: any) => v.domains), [['shop.example'], ['*']]);
  t.deepEqual(rc.virtual_hosts[0].routes.map((r: any) => [r.match.prefix, r.route.cluster]), [
    ['/details', 'berth_svc_details_9080'],
    ['/', 'berth_svc_details_9080'], // host-specific wins at equal length
    ['/', 'berth_svc_productpage_9080'],
  ]);
  t.deepEqual(rc.virtual_hosts[1].routes.map((r: any) => r.match.prefix), ['/']);
});

test('orderRoutes is a total, stable order', (t) => {
  const rs = [route('/a', 'x'), route('/ab', 'y'), route('/a', 'w'), route('/a', 'x', 9080, 'h')];
  t.deepEqual(orderRoutes(rs).map((r) => `${r.host ?? '*'}${r.path}:${r.service}`), ['*/ab:y', 'h/a:x', '*/a:w', '*/a:x']);
  t.deepEqual(orderRoutes([...rs].reverse()), orderRoutes(rs));
});

test('clusters are EDS over ADS; load assignments hold the backends at the targetPort', (t) => {
  const { snapshot } = buildSnapshot(bookinfo());
  const c = decoded(snapshot, TypeUrl.cluster, clusterName('details', 9080));
  t.is(c.type, 'EDS');
  t.deepEqual(c.eds_cluster_config.eds_config.ads, {});
  t.is(c.eds_cluster_config.service_name, 'berth_svc_details_9080');
  const cla = decoded(snapshot, TypeUrl.endpoint, clusterName('details', 9080));
  t.is(cla.cluster_name, 'berth_svc_details_9080');
  t.deepEqual(cla.endpoints[0].lb_endpoints.map((e: any) => e.endpoint.address.socket_address), [
    { address: '172.17.0.2', port_value: 8080 },
    { address: '172.17.0.3', port_value: 8080 },
  ]);
});

test('a backend with only IPv6 is reached over IPv6; one without address is left out', (t) => {
  const st = bookinfo();
  st.services[1] = service('details', [[9080, 8080]], [null, null, '172.17.0.9'], ['fd00::5', null, null]);
  const cla = decoded(buildSnapshot(st).snapshot, TypeUrl.endpoint, clusterName('details', 9080));
  t.deepEqual(cla.endpoints[0].lb_endpoints.map((e: any) => e.endpoint.address.socket_address.address), ['fd00::5', '172.17.0.9']);
});

test('a service without backends still gets its cluster and an empty load assignment', (t) => {
  const st = bookinfo();
  st.services[2] = service('productpage', [[9080, 9080]], []);
  const { snapshot } = buildSnapshot(st);
  const cla = decoded(snapshot, TypeUrl.endpoint, clusterName('productpage', 9080));
  t.deepEqual(cla.endpoints[0].lb_endpoints ?? [], []);
  t.deepEqual(checkConsistency(snapshot), []);
});

test('two ingresses routing to one (service, port) share its cluster', (t) => {
  const st = bookinfo();
  st.services.push(ingress('admin', [route('/', 'details')], 15001));
  const { snapshot } = buildSnapshot(st);
  t.is(snapshot.types.get(TypeUrl.cluster)!.resources.size, 2);
  t.is(snapshot.types.get(TypeUrl.listener)!.resources.size, 2);
  t.is(decoded(snapshot, TypeUrl.listener, 'berth_ingress_admin').address.socket_address.port_value, 15001);
});

test('a route to an unknown service or port is skipped and reported for its ingress only', (t) => {
  const st = bookinfo();
  st.services[0].routes.push(route('/ghost', 'ghost'), route('/d2', 'details', 1234));
  st.services.push(ingress('other', [route('/', 'productpage')], 15001));
  const { snapshot, errors } = buildSnapshot(st);
  t.deepEqual(errors.map((e) => [e.ingress, e.code]), [['basic', ProxyErrorCode.ROUTE_TARGET], ['basic', ProxyErrorCode.ROUTE_TARGET]]);
  t.regex(errors[0].error, /no service ghost/);
  t.regex(errors[1].error, /has no tcp port 1234/);
  const rc = decoded(snapshot, TypeUrl.route, 'berth_ingress_basic');
  t.deepEqual(rc.virtual_hosts[0].routes.map((r: any) => r.match.prefix), ['/details', '/']);
  t.deepEqual(checkConsistency(snapshot), []);
});

test('an ingress without a listener port yet is left out', (t) => {
  const st = bookinfo();
  st.services[0].ingress!.proxyPort = null;
  const { snapshot } = buildSnapshot(st);
  t.is(snapshot.types.get(TypeUrl.listener)!.resources.size, 0);
  t.is(snapshot.types.get(TypeUrl.cluster)!.resources.size, 0);
});

test('versions: same state, same versions; a backend change moves only EDS', (t) => {
  const a = buildSnapshot(bookinfo()).snapshot;
  const b = buildSnapshot(bookinfo()).snapshot;
  t.is(a.version, b.version);
  const st = bookinfo();
  st.services[1].backends.pop();
  const c = buildSnapshot(st).snapshot;
  t.not(c.version, a.version);
  for (const type of [TypeUrl.cluster, TypeUrl.listener, TypeUrl.route]) t.is(c.types.get(type)!.version, a.types.get(type)!.version, type);
  t.not(c.types.get(TypeUrl.endpoint)!.version, a.types.get(TypeUrl.endpoint)!.version);
  t.not(emptySnapshot().version, a.version);
});

test('the consistency check finds a missing cluster, route configuration and load assignment', (t) => {
  const { snapshot } = buildSnapshot(bookinfo());
  const drop = (type: TypeUrl, name: string): Snapshot => {
    const types = new Map(snapshot.types);
    const res = new Map(types.get(type)!.resources);
    res.delete(name);
    types.set(type, { version: 'x', resources: res });
    return { version: 'x', types };
  };
  t.deepEqual(checkConsistency(snapshot), []);
  t.deepEqual(checkConsistency(drop(TypeUrl.cluster, 'berth_svc_details_9080')), ['berth_ingress_basic refers to missing Cluster berth_svc_details_9080']);
  t.deepEqual(checkConsistency(drop(TypeUrl.route, 'berth_ingress_basic')), ['berth_ingress_basic refers to missing RouteConfiguration berth_ingress_basic']);
  t.deepEqual(checkConsistency(drop(TypeUrl.endpoint, 'berth_svc_productpage_9080')), ['berth_svc_productpage_9080 refers to missing ClusterLoadAssignment berth_svc_productpage_9080']);
});

test('typed Any round trip: the bytes decode with Envoy\'s own message types', (t) => {
  const { snapshot } = buildSnapshot(bookinfo());
  for (const [type, { resources }] of snapshot.types) {
    for (const r of resources.values()) {
      t.is(r.resource.type_url, type);
      const msg = decode(type.replace(/^.*\//, ''), r.resource.value);
      // Re-encoding the decoded message gives the same bytes: nothing was lost or unknown.
      t.deepEqual(encode(type.replace(/^.*\//, ''), msg), r.resource.value, r.name);
    }
  }
});

test('the encoder rejects what Envoy\'s protos do not define', (t) => {
  t.throws(() => toAny('envoy.config.cluster.v3.Cluster', { name: 'x', type: 'NOT_A_DISCOVERY_TYPE' }));
  t.throws(() => toAny('envoy.config.cluster.v3.Cluster', { nmae: 'x' }), { message: /Cluster\.nmae: no such field/ });
  t.throws(() => toAny('envoy.config.listener.v3.Listener', { address: { socket_address: { adress: '0.0.0.0' } } }), { message: /socket_address\.adress/ });
  t.throws(() => encode('envoy.config.nothing.v3.Nope', {}), { message: /unknown protobuf message/ });
});
