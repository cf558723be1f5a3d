import test from 'ava';
import type { Service } from '../../../src/model/types';
import { buildZone, inZone, lookup, DNS_TTL, LiveZone, type Zone } from '../../../src/dns/zone';
import { rng } from '../../helpers/churn';

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

/** A zone as comparable data: owners sorted, each with its records in order; non-terminals sorted. */
function canonical(z: Zone): unknown {
  return {
    domain: z.domain,
    records: [...z.records].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    nonTerminals: [...z.nonTerminals].sort(),
    soa: z.soa,
  };
}

test('LiveZone: name-by-name updates equal buildZone of the same services after every step (random, seeded)', (t) => {
  // Few names, so that services and ingresses share names, go and come back; names that are also
  // the zone's own words ('ingress', the non-terminal of every ingress name) included.
  const NAMES = ['web', 'db', 'ingress', 'shop', 'a'];
  const dns = { vip: '10.96.0.10', vip6: 'fd00:96::a' };
  for (let seed = 1; seed <= 20; seed++) {
    const r = rng(seed);
    const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)];
    const live = new LiveZone('berth', 1, dns);
    const state = new Map<string, Service>(); // kind/name -> service
    const randomize = (name: string, kind: Service['kind']) => {
      const ports: [number, 'tcp' | 'udp'][] = [[pick([53, 80, 443]), pick(['tcp', 'udp'] as const)]];
      if (r() < 0.3) ports.push([8080, 'tcp']);
      state.set(`${kind}/${name}`, svc(name, `10.96.1.${1 + Math.floor(r() * 3)}`, r() < 0.5 ? null : 'fd00:96::1', ports, kind));
    };
    let serial = 1;
    // Odd seeds start from a zone filled in one pass (a first full sync), even ones from empty.
    if (seed % 2) {
      for (const name of NAMES) for (const kind of ['service', 'ingress'] as const) if (r() < 0.5) randomize(name, kind);
      live.fill(new Map(NAMES.map((n) => [n, { service: state.get(`service/${n}`), ingress: state.get(`ingress/${n}`) }])), ++serial);
      t.deepEqual(canonical(live.zone), canonical(buildZone([...state.values()], 'berth', serial, dns)), `seed ${seed}: filled`);
    }
    for (let step = 0; step < 200; step++) {
      const name = pick(NAMES);
      const kind = pick(['service', 'ingress'] as const);
      const key = `${kind}/${name}`;
      const op = r();
      if (op < 0.3) state.delete(key);
      else randomize(name, kind);
      // Sometimes two names in one update (an event that touched several services).
      const names = r() < 0.2 ? [name, pick(NAMES)] : [name];
      let changed = false;
      for (const n of names) if (live.update(n, state.get(`service/${n}`), state.get(`ingress/${n}`), serial + 1)) changed = true;
      if (changed) serial++;
      const want = buildZone([...state.values()], 'berth', serial, dns);
      t.deepEqual(canonical(live.zone), canonical(want), `seed ${seed} step ${step}: ${key} ${op < 0.3 ? 'removed' : 'set'}`);
      if (t.passed === false) return;
    }
  }
});

test('LiveZone: an update that changes no record keeps the zone and its serial; a backend change is not a zone change', (t) => {
  const live = new LiveZone('berth', 1);
  t.true(live.update('web', SERVICES[0], undefined, 2));
  t.is(live.serial, 2);
  t.false(live.update('web', { ...SERVICES[0], backends: [{ container: 'c', id: 'x', ip: '10.0.0.1', ip6: null }] }, undefined, 3));
  t.is(live.serial, 2);
  t.false(live.update('nothing', undefined, undefined, 3), 'an unknown name removed: nothing to do');
  t.true(live.update('web', undefined, undefined, 3));
  t.is(lookup(live.zone, 'web.berth', 'A').rcode, 'NXDOMAIN');
  t.is(lookup(live.zone, '_tcp.web.berth', 'SRV').rcode, 'NXDOMAIN', 'its empty non-terminals went with it');
  t.is(live.serial, 3);
  t.is((lookup(live.zone, 'nope.berth', 'A').authorities[0].record.data as { serial: number }).serial, 3, 'negative answers carry the new serial');
});
