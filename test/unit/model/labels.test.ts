import test from 'ava';
import { decodeLabels, isDnsLabel, parsePorts } from '../../../src/model/labels';
import type { ServicePort } from '../../../src/model/types';

const tcp = (port: number, targetPort = port): ServicePort => ({ port, protocol: 'tcp', targetPort });
const udp = (port: number, targetPort = port): ServicePort => ({ port, protocol: 'udp', targetPort });

// [berth.ports value, expected ports] — good cases
const goodPorts: [string, ServicePort[]][] = [
  ['80', [tcp(80)]],
  ['80:8080', [tcp(80, 8080)]],
  ['80:8080/tcp', [tcp(80, 8080)]],
  ['53/udp', [udp(53)]],
  ['53/UDP', [udp(53)]],
  ['80:8080/tcp,53/udp', [tcp(80, 8080), udp(53)]],
  [' 80 , 443:8443 ', [tcp(80), tcp(443, 8443)]],
  ['53/tcp,53/udp', [tcp(53), udp(53)]], // same number, different protocols
  ['80:8080,80:8080', [tcp(80, 8080)]], // an exact repeat is harmless
  ['1,65535', [tcp(1), tcp(65535)]],
  ['9090,80', [tcp(9090), tcp(80)]], // label order kept: the first tcp port is the default route port
];
for (const [value, want] of goodPorts) {
  test(`parsePorts(${JSON.stringify(value)})`, (t) => {
    const r = parsePorts(value);
    t.deepEqual('ports' in r ? r.ports : r.error('c'), want);
  });
}

// [berth.ports value, expected code, the whole message: it names the offending item or port]
const badPorts: [string, string, string][] = [
  ['', 'BERTH_BAD_PORT_SPEC', '"" is not svcPort[:containerPort][/tcp|/udp]'],
  ['eighty', 'BERTH_BAD_PORT_SPEC', '"eighty" is not svcPort[:containerPort][/tcp|/udp]'],
  ['80,', 'BERTH_BAD_PORT_SPEC', '"" is not svcPort[:containerPort][/tcp|/udp]'],
  ['80::8080', 'BERTH_BAD_PORT_SPEC', '"80::8080" is not svcPort[:containerPort][/tcp|/udp]'],
  ['80:8080:9090', 'BERTH_BAD_PORT_SPEC', '"80:8080:9090" is not svcPort[:containerPort][/tcp|/udp]'],
  ['-1', 'BERTH_BAD_PORT_SPEC', '"-1" is not svcPort[:containerPort][/tcp|/udp]'],
  ['80.5', 'BERTH_BAD_PORT_SPEC', '"80.5" is not svcPort[:containerPort][/tcp|/udp]'],
  [':80', 'BERTH_BAD_PORT_SPEC', '":80" is not svcPort[:containerPort][/tcp|/udp]'],
  ['0', 'BERTH_BAD_PORT_NUMBER', '"0": port 0 is not in 1..65535'],
  ['65536', 'BERTH_BAD_PORT_NUMBER', '"65536": port 65536 is not in 1..65535'],
  ['80:99999', 'BERTH_BAD_PORT_NUMBER', '"80:99999": port 99999 is not in 1..65535'],
  ['80:0/udp', 'BERTH_BAD_PORT_NUMBER', '"80:0/udp": port 0 is not in 1..65535'],
  ['80/sctp', 'BERTH_BAD_PROTOCOL', '"80/sctp": protocol "sctp" is neither tcp nor udp'],
  ['80/', 'BERTH_BAD_PROTOCOL', '"80/": protocol "" is neither tcp nor udp'],
  ['80:8080,80:9090', 'BERTH_DUPLICATE_PORT', 'service port 80/tcp is listed twice with different container ports (8080 and 9090)'],
  ['53/udp,53:5353/udp', 'BERTH_DUPLICATE_PORT', 'service port 53/udp is listed twice with different container ports (53 and 5353)'],
];
for (const [value, code, message] of badPorts) {
  test(`parsePorts(${JSON.stringify(value)}) fails with ${code}`, (t) => {
    const r = parsePorts(value);
    if (!('error' in r)) return t.fail(`accepted: ${JSON.stringify(r.ports)}`);
    const e = r.error('web-1');
    t.is(e.code, code);
    t.is(e.container, 'web-1');
    t.is(e.label, 'berth.ports');
    t.is(e.error, message);
  });
}

test('isDnsLabel', (t) => {
  for (const ok of ['a', 'web', 'web-1', '1web', 'a'.repeat(63)]) t.true(isDnsLabel(ok), ok);
  for (const bad of ['', '-web', 'web-', 'Web', 'web_1', 'web.1', 'a'.repeat(64), 'wéb', ' web']) t.false(isDnsLabel(bad), bad);
});

const exposed = [{ port: 8080, protocol: 'tcp' as const }, { port: 53, protocol: 'udp' as const }, { port: 80, protocol: 'tcp' as const }];

test('defaults: no berth.ports means the exposed ports as themselves, sorted', (t) => {
  const r = decodeLabels({ name: 'c', labels: { 'berth.service': 'web' }, exposedPorts: exposed });
  t.deepEqual(r.errors, []);
  t.deepEqual(r.spec!.ports, [udp(53), tcp(80), tcp(8080)]);
  t.false(r.spec!.portsFromLabel);
  t.is(r.spec!.vip, null);
  t.deepEqual(r.spec!.routes, []);
});

test('a container without berth labels is not ours: no spec, no error', (t) => {
  const r = decodeLabels({ name: 'c', labels: { 'com.docker.compose.service': 'x', 'Berth.service': 'web' }, exposedPorts: [] });
  t.deepEqual(r, { spec: null, errors: [] });
});

test('pins are canonicalised', (t) => {
  const r = decodeLabels({ name: 'c', labels: { 'berth.service': 'web', 'berth.ports': '80', 'berth.vip': '10.96.0.10', 'berth.vip6': 'FD00:96:0::A' }, exposedPorts: [] });
  t.deepEqual(r.errors, []);
  t.is(r.spec!.vip, '10.96.0.10');
  t.is(r.spec!.vip6, 'fd00:96::a');
});

/** A route's issue-10 settings when the container gives none. */
const HTTP_DEFAULTS = { tlsListen: null, tls: null, redirectHttps: null, protocol: 'http', stripPrefix: false, timeoutMs: null, retries: null } as const;

test('http routes: defaults and explicit values', (t) => {
  const r = decodeLabels({
    name: 'c',
    labels: {
      'berth.service': 'shop', 'berth.ports': '9090:8080,80:8080,53/udp',
      'berth.http.web.path': '/shop',
      'berth.http.edge.host': 'Shop.Example', 'berth.http.edge.port': '80', 'berth.http.edge.listen': '8080', 'berth.http.edge.publish': '31907',
    },
    exposedPorts: [],
  });
  t.deepEqual(r.errors, []);
  t.deepEqual(r.spec!.routes, [
    { ingress: 'edge', path: '/', host: 'shop.example', port: 80, listen: 8080, publish: 31907, ...HTTP_DEFAULTS },
    { ingress: 'web', path: '/shop', host: null, port: 9090, listen: null, publish: null, ...HTTP_DEFAULTS },
  ]);
});

// Labels that skip the whole container: [labels, offending label, code]
const fatal: [string, Record<string, string>, string, string][] = [
  ['unknown key', { 'berth.service': 'web', 'berth.ports': '80', 'berth.prots': '80' }, 'berth.prots', 'BERTH_UNKNOWN_LABEL'],
  ['unknown nested key', { 'berth.service': 'web', 'berth.ports': '80', 'berth.service.name': 'x' }, 'berth.service.name', 'BERTH_UNKNOWN_LABEL'],
  ['http without attribute', { 'berth.service': 'web', 'berth.ports': '80', 'berth.http.web': '/' }, 'berth.http.web', 'BERTH_UNKNOWN_LABEL'],
  ['http unknown attribute', { 'berth.service': 'web', 'berth.ports': '80', 'berth.http.web.prefix': '/' }, 'berth.http.web.prefix', 'BERTH_UNKNOWN_LABEL'],
  ['http too deep', { 'berth.service': 'web', 'berth.ports': '80', 'berth.http.a.b.path': '/' }, 'berth.http.a.b.path', 'BERTH_UNKNOWN_LABEL'],
  ['no service', { 'berth.ports': '80' }, 'berth.service', 'BERTH_NO_SERVICE'],
  ['empty service', { 'berth.service': '', 'berth.ports': '80' }, 'berth.service', 'BERTH_BAD_SERVICE_NAME'],
  ['service not a DNS label', { 'berth.service': 'Not_A_DNS_Label', 'berth.ports': '80' }, 'berth.service', 'BERTH_BAD_SERVICE_NAME'],
  ['service too long', { 'berth.service': 'a'.repeat(64), 'berth.ports': '80' }, 'berth.service', 'BERTH_BAD_SERVICE_NAME'],
  ['bad port spec', { 'berth.service': 'web', 'berth.ports': '80:99999' }, 'berth.ports', 'BERTH_BAD_PORT_NUMBER'],
  ['bad protocol', { 'berth.service': 'web', 'berth.ports': '80/sctp' }, 'berth.ports', 'BERTH_BAD_PROTOCOL'],
  ['no ports at all', { 'berth.service': 'web' }, 'berth.ports', 'BERTH_NO_PORTS'],
  ['vip not an address', { 'berth.service': 'web', 'berth.ports': '80', 'berth.vip': '10.96.0' }, 'berth.vip', 'BERTH_BAD_VIP'],
  ['vip is IPv6', { 'berth.service': 'web', 'berth.ports': '80', 'berth.vip': 'fd00:96::1' }, 'berth.vip', 'BERTH_BAD_VIP'],
  ['vip6 is IPv4', { 'berth.service': 'web', 'berth.ports': '80', 'berth.vip6': '10.96.0.1' }, 'berth.vip6', 'BERTH_BAD_VIP'],
  ['vip with prefix', { 'berth.service': 'web', 'berth.ports': '80', 'berth.vip': '10.96.0.1/32' }, 'berth.vip', 'BERTH_BAD_VIP'],
];
for (const [what, labels, label, code] of fatal) {
  test(`skips the container: ${what}`, (t) => {
    const r = decodeLabels({ name: 'bad-1', labels, exposedPorts: [] });
    t.is(r.spec, null);
    const e = r.errors.find((x) => x.label === label);
    t.truthy(e, JSON.stringify(r.errors));
    t.is(e!.code, code);
    t.is(e!.container, 'bad-1');
    t.true(e!.error.length > 10);
  });
}

// Labels that drop only one route: [labels on top of a good service, offending label, code]
const routeOnly: [string, Record<string, string>, string, string][] = [
  ['bad ingress name', { 'berth.http.Web_1.path': '/' }, 'berth.http.Web_1.path', 'BERTH_BAD_INGRESS_NAME'],
  ['path without slash', { 'berth.http.web.path': 'shop' }, 'berth.http.web.path', 'BERTH_BAD_PATH'],
  ['path with space', { 'berth.http.web.path': '/a b' }, 'berth.http.web.path', 'BERTH_BAD_PATH'],
  ['path with query', { 'berth.http.web.path': '/a?b=1' }, 'berth.http.web.path', 'BERTH_BAD_PATH'],
  ['path with fragment', { 'berth.http.web.path': '/a#b' }, 'berth.http.web.path', 'BERTH_BAD_PATH'],
  ['empty path', { 'berth.http.web.path': '' }, 'berth.http.web.path', 'BERTH_BAD_PATH'],
  ['port not a service port', { 'berth.http.web.port': '8080' }, 'berth.http.web.port', 'BERTH_BAD_ROUTE_PORT'],
  ['port is a udp port', { 'berth.http.web.port': '53' }, 'berth.http.web.port', 'BERTH_BAD_ROUTE_PORT'],
  ['port not a number', { 'berth.http.web.port': 'http' }, 'berth.http.web.port', 'BERTH_BAD_ROUTE_PORT'],
  ['listen 0', { 'berth.http.web.listen': '0' }, 'berth.http.web.listen', 'BERTH_BAD_LISTEN_PORT'],
  ['listen too big', { 'berth.http.web.listen': '65536' }, 'berth.http.web.listen', 'BERTH_BAD_LISTEN_PORT'],
  ['publish not a number', { 'berth.http.web.publish': 'yes' }, 'berth.http.web.publish', 'BERTH_BAD_LISTEN_PORT'],
  ['bad host', { 'berth.http.web.host': 'shop example' }, 'berth.http.web.host', 'BERTH_BAD_HOST'],
  ['host with port', { 'berth.http.web.host': 'shop.example:80' }, 'berth.http.web.host', 'BERTH_BAD_HOST'],
];
for (const [what, extra, label, code] of routeOnly) {
  test(`drops only the route: ${what}`, (t) => {
    const r = decodeLabels({
      name: 'c1',
      labels: { 'berth.service': 'api', 'berth.ports': '80:8080,53/udp', 'berth.http.other.path': '/ok', ...extra },
      exposedPorts: [],
    });
    t.truthy(r.spec, 'the container still backs its service');
    t.is(r.spec!.service, 'api');
    t.deepEqual(r.spec!.routes.map((x) => x.ingress), ['other'], 'the other ingress keeps its route');
    t.is(r.errors.length, 1, JSON.stringify(r.errors));
    t.like(r.errors[0], { container: 'c1', label, code });
  });
}

test('http route to a service without tcp ports is an error on the port label', (t) => {
  const r = decodeLabels({ name: 'dns', labels: { 'berth.service': 'dns', 'berth.ports': '53/udp', 'berth.http.web.path': '/' }, exposedPorts: [] });
  t.deepEqual(r.spec!.routes, []);
  t.like(r.errors[0], { label: 'berth.http.web.port', code: 'BERTH_NO_TCP_PORT' });
});

test('every fatal problem is reported, not only the first', (t) => {
  const r = decodeLabels({ name: 'x', labels: { 'berth.service': 'X', 'berth.ports': 'nope', 'berth.vip': 'nope', 'berth.foo': '1' }, exposedPorts: [] });
  t.is(r.spec, null);
  t.deepEqual(r.errors.map((e) => e.label).sort(), ['berth.foo', 'berth.ports', 'berth.service', 'berth.vip']);
});

test('wildcard host is allowed and lower-cased', (t) => {
  const r = decodeLabels({ name: 'c', labels: { 'berth.service': 'a', 'berth.ports': '80', 'berth.http.web.host': '*.Shop.Example' }, exposedPorts: [] });
  t.is(r.spec!.routes[0].host, '*.shop.example');
});
