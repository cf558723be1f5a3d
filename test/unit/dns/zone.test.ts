import test from 'ava';
import type { Service } from '../../../src/model/types';
import { buildZone, inZone, lookup, DNS_TTL } from '../../../src/dns/zone';

function svc(name: string, vip: string, vip6: string | null, ports: [number, 'tcp' | 'udp'][], kind: 'service' | 'ingress' = 'service'): Service {
  return {
    name, kind, vip, vip6, ports: ports.map(([port, protocol]) => ({ port, protocol, targetPort: port })),
    backends: [], routes: [], ingress: kind === 'ingress' ? { listen: ports[0][0], publish: null, proxyPort: null } : null, errors: [],
  };
}

const SERVICES = [
  svc('web', '10.96.1.1', 'fd00:96::101', [[80, 'tcp'], [53, 'udp']]),
  svc('db', '10.96.1.2', null, [[5432, 'tcp']]),
  svc('shop', '10.96.2.1', 'fd00:96::201', [[80, 'tcp']], 'ingress'),
  svc('web', '10.96.2.2', null, [[8080, 'tcp']], 'ingress'), // an ingress named like a service
];
const zone = buildZone(SERVICES, 'berth', 7, { vip: '10.96.0.10', vip6: 'fd00:96::a' });
const data = (name: string, type: string) => lookup(zone, name, type).answers.map((a) => a.record.data);

test('table: names, types, rcodes', (t) => {
  const cases: [string, string, 'NOERROR' | 'NXDOMAIN', unknown[]][] = [
    ['web.berth', 'A', 'NOERROR', ['10.96.1.1']],
    ['web.berth', 'AAAA', 'NOERROR', ['fd00:96::101']],
    ['WEB.Berth.', 'A', 'NOERROR', ['10.96.1.1']], // case-insensitive, trailing dot
    ['db.berth', 'A', 'NOERROR', ['10.96.1.2']],
    ['db.berth', 'AAAA', 'NOERROR', []], // no VIP6: NODATA, not NXDOMAIN
    ['db.berth', 'MX', 'NOERROR', []],
    ['nope.berth', 'A', 'NXDOMAIN', []],
    ['x.web.berth', 'A', 'NXDOMAIN', []],
    ['_80._tcp.web.berth', 'SRV', 'NOERROR', [{ priority: 0, weight: 0, port: 80, target: 'web.berth' }]],
    ['_53._udp.web.berth', 'SRV', 'NOERROR', [{ priority: 0, weight: 0, port: 53, target: 'web.berth' }]],
    ['_53._tcp.web.berth', 'SRV', 'NXDOMAIN', []], // udp only
    ['_tcp.web.berth', 'SRV', 'NOERROR', []], // empty non-terminal (RFC 8020)
    ['shop.berth', 'A', 'NOERROR', ['10.96.2.1']], // ingress under the zone, no service of that name
    ['shop.ingress.berth', 'AAAA', 'NOERROR', ['fd00:96::201']],
    ['web.ingress.berth', 'A', 'NOERROR', ['10.96.2.2']], // the service wins web.berth; the ingress keeps its own name
    ['_8080._tcp.web.ingress.berth', 'SRV', 'NOERROR', [{ priority: 0, weight: 0, port: 8080, target: 'web.ingress.berth' }]],
    ['ingress.berth', 'A', 'NOERROR', []], // non-terminal
    ['berth', 'A', 'NOERROR', []],
    ['_dns.berth', 'A', 'NOERROR', ['10.96.0.10']],
  ];
  for (const [name, type, rcode, want] of cases) {
    const a = lookup(zone, name, type);
    t.is(a.rcode, rcode, `${name} ${type}`);
    t.deepEqual(a.answers.map((x) => x.record.data), want, `${name} ${type}`);
    for (const x of a.answers) t.is(x.name, name, 'answers echo the name as asked');
  }
});

test('negative answers carry the SOA with the short TTL as negative-caching time', (t) => {
  for (const [n, ty] of [['nope.berth', 'A'], ['db.berth', 'AAAA']]) {
    const a = lookup(zone, n, ty);
    t.is(a.authorities.length, 1);
    t.is(a.authorities[0].record.type, 'SOA');
    t.is((a.authorities[0].record.data as { minimum: number; serial: number }).minimum, DNS_TTL);
    t.is((a.authorities[0].record.data as { serial: number }).serial, 7);
  }
  t.deepEqual(data('berth', 'SOA').length, 1);
  t.deepEqual(data('berth', 'NS'), ['_dns.berth']);
});

test('every TTL is the short one; SRV answers carry the target addresses as additionals', (t) => {
  const a = lookup(zone, '_80._tcp.web.berth', 'SRV');
  t.true(a.answers.every((x) => x.ttl === DNS_TTL));
  t.deepEqual(a.additionals.map((x) => [x.name, x.record.data]), [['web.berth', '10.96.1.1'], ['web.berth', 'fd00:96::101']]);
  t.deepEqual(lookup(zone, 'web.berth', 'ANY').answers.map((x) => x.record.type), ['A', 'AAAA']);
});

test('a service that goes is NXDOMAIN in the next zone; a new one answers', (t) => {
  const z2 = buildZone([SERVICES[1], svc('new', '10.96.3.3', null, [[1, 'udp']])], 'berth', 8);
  t.is(lookup(z2, 'web.berth', 'A').rcode, 'NXDOMAIN');
  t.deepEqual(lookup(z2, 'new.berth', 'A').answers.map((a) => a.record.data), ['10.96.3.3']);
});

test('inZone: apex and below, case-insensitive; lookalikes are outside', (t) => {
  const cases: [string, boolean][] = [
    ['berth', true], ['web.berth', true], ['WEB.BERTH.', true], ['a.b.c.berth', true],
    ['xberth', false], ['berth.com', false], ['web.berth.example', false], ['example.com', false], ['', false],
  ];
  for (const [n, want] of cases) t.is(inZone(zone, n), want, n);
  const z = buildZone(SERVICES, 'svc.local', 1);
  t.is(lookup(z, 'web.svc.local', 'A').answers.length, 1);
  t.false(inZone(z, 'web.berth'));
});
