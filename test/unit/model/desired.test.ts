import test from 'ava';
import { buildDesiredState, type BuildOptions } from '../../../src/model/desired';
import { ModelError } from '../../../src/model/errors';
import { VipStore } from '../../../src/model/vipstore';
import type { ContainerInfo, DesiredState, HostInfo } from '../../../src/model/types';
import { CIDRS, HOST, container, snapshot } from './fixtures';

function build(containers: ContainerInfo[], opts: Partial<BuildOptions> = {}, host: HostInfo = HOST): DesiredState {
  return buildDesiredState(snapshot(containers), host, { ...CIDRS, store: VipStore.inMemory(), ...opts });
}

const svc = (name: string, ports = '80:8080', more: Record<string, string> = {}) => ({ 'berth.service': name, 'berth.ports': ports, ...more });


/** What the model sets on a route / ingress without the issue-10 labels. */
const ROUTE_DEFAULTS = { protocol: 'http', stripPrefix: false, timeoutMs: null, retries: null } as const;
const NO_TLS = { tls: false, tlsListen: null, redirectHttps: false } as const;

test('services sorted by name, ports as labelled, VIPs of both families in range, backends sorted by id', (t) => {
  const st = build([
    container('web-2', svc('web'), { id: 'b'.repeat(64) }),
    container('api-1', svc('api', '443:8443,53/udp')),
    container('web-1', svc('web'), { id: 'a'.repeat(64) }),
    container('plain', { 'other.label': 'x' }),
  ]);
  t.deepEqual(st.labelErrors, []);
  t.deepEqual(st.services.map((s) => s.name), ['api', 'web']);
  const web = st.services[1];
  t.is(web.kind, 'service');
  t.regex(web.vip, /^10\.96\.\d+\.\d+$/);
  t.regex(web.vip6!, /^fd00:96::[0-9a-f]{1,4}$/);
  t.deepEqual(web.ports, [{ port: 80, protocol: 'tcp', targetPort: 8080 }]);
  t.deepEqual(web.backends.map((b) => b.container), ['web-1', 'web-2']);
  t.deepEqual(web.routes, []);
  t.is(web.ingress, null);
  t.deepEqual(web.errors, []);
  t.deepEqual(st.services[0].ports, [{ port: 443, protocol: 'tcp', targetPort: 8443 }, { port: 53, protocol: 'udp', targetPort: 53 }]);
  t.not(st.services[0].vip, web.vip);
  t.not(st.services[0].vip6, web.vip6);
});

// [what, container overrides, listed as a backend, reachable]
const backendCases: [string, Partial<ContainerInfo>, boolean, boolean][] = [
  ['running, no healthcheck', {}, true, true],
  ['running, healthy', { health: 'healthy' }, true, true],
  ['running, starting', { health: 'starting' }, false, false],
  ['running, unhealthy', { health: 'unhealthy' }, false, false],
  ['stopping', { stopping: true }, false, false],
  ['exited', { state: 'exited' }, false, false],
  ['created', { state: 'created' }, false, false],
  ['paused', { state: 'paused' }, false, false],
  ['restarting', { state: 'restarting' }, false, false],
  // Up but unreachable: listed with its reason, never silently missing (issue 15).
  ['no network', { networks: [] }, true, false],
  ['network without address', { networks: [{ name: 'none', id: 'n', ip: null, ip6: null }] }, true, false],
  ['network mode none', { networkMode: 'none', networks: [{ name: 'none', id: 'n', ip: null, ip6: null }] }, true, false],
  ['IPv6 only', { networks: [{ name: 'v6', id: 'n', ip: null, ip6: 'fd00:dead::5' }] }, true, true],
];
for (const [what, over, listed, reachable] of backendCases) {
  test(`backend filter: ${what} -> ${listed ? (reachable ? 'reachable' : 'listed, unreachable') : 'no backend'}`, (t) => {
    const st = build([container('c1', svc('web'), over)]);
    t.deepEqual(st.labelErrors, []);
    t.is(st.services.length, 1, 'the service exists with or without backends (connects fail fast)');
    t.is(st.services[0].backends.length, listed ? 1 : 0);
    if (listed) {
      const b = st.services[0].backends[0];
      t.is(b.reachable, reachable);
      if (!reachable) {
        t.is(b.ip, null);
        t.is(b.ip6, null);
        t.truthy(b.reason, 'an unreachable backend says why');
      }
    }
  });
}

test('backend address: first network by name that has one, per family, canonical', (t) => {
  const st = build([
    container('c1', svc('web'), {
      networks: [
        { name: 'zeta', id: 'z', ip: '172.20.0.9', ip6: 'FD00:BEEF:0::9' },
        { name: 'bridge', id: 'b', ip: null, ip6: null },
        { name: 'alpha', id: 'a', ip: '172.19.0.4', ip6: null },
      ],
    }),
  ]);
  t.deepEqual(st.services[0].backends, [{
    container: 'c1', id: container('c1', {}).id, ip: '172.19.0.4', ip6: 'fd00:beef::9', reachable: true, reason: null,
    networks: [
      { network: 'alpha', ip: '172.19.0.4', ip6: null },
      { network: 'bridge', ip: null, ip6: null },
      { network: 'zeta', ip: '172.20.0.9', ip6: 'fd00:beef::9' },
    ],
  }]);
});

test('a bad container is skipped, never the rebuild: other services are untouched', (t) => {
  const good = build([container('good-1', svc('good'))]).services;
  const st = build([
    container('good-1', svc('good')),
    container('bad-1', { 'berth.service': 'bad', 'berth.prots': '80' }),
    container('bad-2', svc('bad2', '80:99999')),
    container('bad-3', { 'berth.service': 'Not_A_DNS_Label' }),
  ]);
  t.deepEqual(st.services, good);
  t.deepEqual(st.labelErrors.map((e) => [e.container, e.label]), [
    ['bad-1', 'berth.prots'],
    ['bad-1', 'berth.ports'], // the typo also leaves it without ports: both are said
    ['bad-2', 'berth.ports'],
    ['bad-3', 'berth.service'],
  ]);
});

// Pinned VIP cases: [what, pin label, pin, expected code or null]
const pins: [string, string, string, string | null][] = [
  ['good pin', 'berth.vip', '10.96.7.7', null],
  ['good v6 pin', 'berth.vip6', 'fd00:96::7', null],
  ['outside the range', 'berth.vip', '192.0.2.1', 'BERTH_VIP_OUTSIDE_RANGE'],
  ['loopback', 'berth.vip', '127.0.0.5', 'BERTH_VIP_LOOPBACK'],
  ['v6 loopback', 'berth.vip6', '::1', 'BERTH_VIP_LOOPBACK'],
  ['network address', 'berth.vip', '10.96.0.0', 'BERTH_VIP_RESERVED'],
  ['broadcast address', 'berth.vip', '10.96.255.255', 'BERTH_VIP_RESERVED'],
  ['host address', 'berth.vip', '10.96.99.99', 'BERTH_VIP_HOST_ADDRESS'],
  ['Docker subnet', 'berth.vip', '10.96.200.50', 'BERTH_VIP_DOCKER_SUBNET'],
  ['Docker gateway', 'berth.vip', '10.96.200.1', 'BERTH_VIP_DOCKER_GATEWAY'],
  ['v6 outside the range', 'berth.vip6', 'fd00:97::1', 'BERTH_VIP_OUTSIDE_RANGE'],
];
for (const [what, label, pin, code] of pins) {
  test(`pin: ${what}`, (t) => {
    const st = build([container('good-1', svc('good')), container('p-1', svc('pinned', '80', { [label]: pin }))]);
    t.truthy(st.services.find((s) => s.name === 'good'), 'other services unaffected');
    const pinned = st.services.find((s) => s.name === 'pinned');
    if (code === null) {
      t.deepEqual(st.labelErrors, []);
      t.is(label === 'berth.vip' ? pinned!.vip : pinned!.vip6, pin);
      return;
    }
    t.is(pinned, undefined, 'the only container was skipped, so the service does not exist');
    t.is(st.labelErrors.length, 1);
    t.like(st.labelErrors[0], { container: 'p-1', label, code });
    t.true(st.labelErrors[0].error.includes(pin));
  });
}

test('pin owned by another service: the earliest store assignment keeps it, whatever the names', (t) => {
  const store = VipStore.inMemory([{ kind: 'service', name: 'zeta', vip: '10.96.7.7', vip6: null, seq: 1 }]);
  const st = build([
    container('alpha-1', svc('alpha', '80', { 'berth.vip': '10.96.7.7' })),
    container('zeta-1', svc('zeta', '80', { 'berth.vip': '10.96.7.7' })),
  ], { store });
  t.is(st.services.find((s) => s.name === 'zeta')!.vip, '10.96.7.7');
  t.is(st.services.find((s) => s.name === 'alpha'), undefined);
  t.is(st.labelErrors.length, 1);
  t.like(st.labelErrors[0], { container: 'alpha-1', label: 'berth.vip', code: 'BERTH_VIP_OWNED' });
  t.regex(st.labelErrors[0].error, /owned by service zeta/);
});

test('pin owned: without a store assignment, name order decides', (t) => {
  const st = build([
    container('thief-1', svc('thief', '80', { 'berth.vip': '10.96.7.7' })),
    container('good-1', svc('good', '80', { 'berth.vip': '10.96.7.7' })),
  ]);
  t.deepEqual(st.services.map((s) => [s.name, s.vip]), [['good', '10.96.7.7']]);
  t.like(st.labelErrors[0], { container: 'thief-1', label: 'berth.vip', code: 'BERTH_VIP_OWNED' });
});

test("a pin on another service's stored derived VIP is refused; a pin on a later owner's VIP moves the later one", (t) => {
  const first = build([container('a-1', svc('a'))]);
  const aVip = first.services[0].vip;
  // b (new) pins a's derived VIP: a is earlier, b is refused.
  const store = VipStore.inMemory([{ kind: 'service', name: 'a', vip: aVip, vip6: null, seq: 1 }]);
  const st = build([container('a-1', svc('a')), container('b-1', svc('b', '80', { 'berth.vip': aVip }))], { store });
  t.deepEqual(st.services.map((s) => [s.name, s.vip]), [['a', aVip]]);
  t.like(st.labelErrors[0], { container: 'b-1', code: 'BERTH_VIP_OWNED' });
  // a (earlier) now pins b's stored VIP: a takes it, b is re-derived elsewhere.
  const store2 = VipStore.inMemory([
    { kind: 'service', name: 'a', vip: '10.96.1.1', vip6: null, seq: 1 },
    { kind: 'service', name: 'b', vip: '10.96.2.2', vip6: null, seq: 2 },
  ]);
  const st2 = build([container('a-1', svc('a', '80', { 'berth.vip': '10.96.2.2' })), container('b-1', svc('b'))], { store: store2 });
  t.deepEqual(st2.labelErrors, []);
  t.is(st2.services[0].vip, '10.96.2.2');
  t.not(st2.services[1].vip, '10.96.2.2');
  t.is(store2.get('service', 'b')!.vip, st2.services[1].vip);
});

test('an ingress owns its stored VIP against a later pin', (t) => {
  const store = VipStore.inMemory([{ kind: 'ingress', name: 'edge', vip: '10.96.7.7', vip6: null, seq: 1 }]);
  const st = build([
    container('s-1', svc('shop', '80', { 'berth.http.edge.path': '/' })),
    container('p-1', svc('pinned', '80', { 'berth.vip': '10.96.7.7' })),
  ], { store });
  t.is(st.services.find((s) => s.kind === 'ingress')!.vip, '10.96.7.7');
  t.regex(st.labelErrors[0].error, /owned by ingress edge/);
});

// Containers of one service disagreeing: [what, first labels, later labels, label of the error]
const disagreements: [string, Record<string, string>, Record<string, string>, string][] = [
  ['ports', svc('agree', '80:8080'), svc('agree', '81:8080'), 'berth.ports'],
  ['protocol', svc('agree', '80'), svc('agree', '80/udp'), 'berth.ports'],
  ['target port', svc('agree', '80:8080'), svc('agree', '80:8081'), 'berth.ports'],
  ['pin vs no pin', svc('agree', '80', { 'berth.vip': '10.96.7.7' }), svc('agree', '80'), 'berth.vip'],
  ['two pins', svc('agree', '80', { 'berth.vip': '10.96.7.7' }), svc('agree', '80', { 'berth.vip': '10.96.7.8' }), 'berth.vip'],
  ['v6 pins', svc('agree', '80', { 'berth.vip6': 'fd00:96::7' }), svc('agree', '80', { 'berth.vip6': 'fd00:96::8' }), 'berth.vip6'],
];
for (const [what, a, b, label] of disagreements) {
  test(`disagreement on ${what}: the later container is skipped`, (t) => {
    const st = build([container('agree-1', a), container('agree-2', b)]);
    t.deepEqual(st.services[0].backends.map((x) => x.container), ['agree-1']);
    t.is(st.labelErrors.length, 1, JSON.stringify(st.labelErrors));
    t.like(st.labelErrors[0], { container: 'agree-2', label, code: 'BERTH_SERVICE_DISAGREE' });
    t.regex(st.labelErrors[0].error, /agree-1/);
  });
}

test('disagreement: `created` decides which container came first, not the list order', (t) => {
  const st = build([
    container('new', svc('agree', '81:8080'), { created: 2000 }),
    container('old', svc('agree', '80:8080'), { created: 1000 }),
  ]);
  t.deepEqual(st.services[0].ports, [{ port: 80, protocol: 'tcp', targetPort: 8080 }]);
  t.like(st.labelErrors[0], { container: 'new', label: 'berth.ports' });
});

test('agreement: the same ports in another order, exposed ports equal to labels, identical pins', (t) => {
  const st = build([
    container('a', svc('web', '80,53/udp', { 'berth.vip': '10.96.7.7' })),
    container('b', svc('web', '53/udp,80', { 'berth.vip': '10.96.007.7'.replace('007', '7') })),
    container('c', { 'berth.service': 'web', 'berth.vip': '10.96.7.7' }, { exposedPorts: [{ port: 80, protocol: 'tcp' }, { port: 53, protocol: 'udp' }] }),
  ]);
  t.deepEqual(st.labelErrors, []);
  t.is(st.services[0].backends.length, 3);
  t.deepEqual(st.services[0].ports.map((p) => p.port), [80, 53], 'the first container sets the order');
});

test('VIPs are stable across restarts through the store, and forgotten when the name goes', (t) => {
  const store = VipStore.inMemory();
  const cs = [container('a-1', svc('a')), container('b-1', svc('b', '80', { 'berth.http.web.path': '/' }))];
  const one = build(cs, { store });
  const two = build([...cs].reverse(), { store });
  t.deepEqual(two, one, 'same input (in any order), same output');
  t.deepEqual(store.list().map((a) => `${a.kind}/${a.name}`), ['service/a', 'service/b', 'ingress/web']);
  // A stored assignment wins over the hash (e.g. it was resolved after a collision).
  const moved = VipStore.inMemory([{ kind: 'service', name: 'a', vip: '10.96.1.1', vip6: 'fd00:96::101', seq: 1 }]);
  const three = build(cs, { store: moved });
  t.is(three.services[0].vip, '10.96.1.1');
  t.is(three.services[0].vip6, 'fd00:96::101');
  // b is gone: its assignment is forgotten.
  build([cs[0]], { store });
  t.deepEqual(store.list().map((a) => a.name), ['a']);
});

test('a stored VIP that became forbidden or left the range is re-derived', (t) => {
  const store = VipStore.inMemory([
    { kind: 'service', name: 'a', vip: '10.96.200.9', vip6: null, seq: 1 }, // now inside Docker network "inside"
    { kind: 'service', name: 'b', vip: '10.50.0.1', vip6: 'fd00:1::1', seq: 2 }, // range changed
  ]);
  const st = build([container('a-1', svc('a')), container('b-1', svc('b'))], { store });
  t.not(st.services[0].vip, '10.96.200.9');
  t.not(st.services[1].vip, '10.50.0.1');
  t.regex(st.services[1].vip6!, /^fd00:96::/);
  t.is(store.get('service', 'a')!.seq, 1, 'still the earliest owner');
});

test('collisions in a small range resolve deterministically and independently of list order', (t) => {
  const names = ['a', 'b', 'c', 'd', 'e', 'f'];
  const small = { serviceCidr: '10.96.0.0/29', serviceCidr6: 'fd00:96::/125', store: VipStore.inMemory() }; // 6 usable each
  const cs = names.map((n) => container(`${n}-1`, svc(n)));
  const one = buildDesiredState(snapshot(cs, []), { addresses: [] }, small);
  const two = buildDesiredState(snapshot([...cs].reverse(), []), { addresses: [] }, { ...small, store: VipStore.inMemory() });
  t.deepEqual(one.services.map((s) => s.vip), two.services.map((s) => s.vip));
  t.is(new Set(one.services.map((s) => s.vip)).size, 6, 'all distinct');
  t.is(new Set(one.services.map((s) => s.vip6)).size, 6, 'all distinct (v6)');
});

test('an exhausted range skips the service with an error; a full v6 range leaves vip6 null with a service error', (t) => {
  const cs = ['a', 'b', 'c'].map((n) => container(`${n}-1`, svc(n)));
  const st = buildDesiredState(snapshot(cs, []), { addresses: [] }, { serviceCidr: '10.96.0.0/30', serviceCidr6: 'fd00:96::/112', store: VipStore.inMemory() });
  t.deepEqual(st.services.map((s) => s.name), ['a', 'b']);
  t.like(st.labelErrors[0], { container: 'c-1', label: 'berth.service', code: 'BERTH_VIP_EXHAUSTED' });
  const st6 = buildDesiredState(snapshot(cs, []), { addresses: [] }, { serviceCidr: '10.96.0.0/16', serviceCidr6: 'fd00:96::/126', store: VipStore.inMemory() });
  t.is(st6.services.filter((s) => s.vip6 === null).length, 1);
  t.regex(st6.services.find((s) => s.vip6 === null)!.errors[0], /no free VIP/);
});

test('bad service ranges throw a coded error', (t) => {
  for (const [v4, v6] of [['10.96.0.0', 'fd00:96::/112'], ['fd00::/64', 'fd00:96::/112'], ['10.96.0.0/16', '10.97.0.0/16']]) {
    const e = t.throws(() => build([], { serviceCidr: v4, serviceCidr6: v6 }), { instanceOf: ModelError });
    t.is((e as ModelError).code, 'BERTH_BAD_SERVICE_CIDR');
  }
});

test('ingress: routes from all containers, longest path first then host; own VIP; listen/publish', (t) => {
  const st = build([
    container('pp-1', svc('productpage', '9080', { 'berth.http.web.path': '/', 'berth.http.web.publish': '31907' })),
    container('d-1', svc('details', '9080', { 'berth.http.web.path': '/details' })),
    container('d-2', svc('details', '9080', { 'berth.http.web.path': '/details' })), // replica: same route, no error
    container('r-1', svc('reviews', '9080,9443', { 'berth.http.web.path': '/details', 'berth.http.web.host': 'b.example', 'berth.http.web.port': '9443' })),
    container('r-2', svc('reviews', '9080,9443', { 'berth.http.web.path': '/details', 'berth.http.web.host': 'a.example', 'berth.http.web.port': '9443' })),
    container('w-1', svc('web', '80', { 'berth.http.web.path': '/web' })),
  ]);
  t.deepEqual(st.labelErrors, []);
  t.deepEqual(st.services.map((s) => `${s.kind}:${s.name}`), ['service:details', 'service:productpage', 'service:reviews', 'service:web', 'ingress:web']);
  const ing = st.services[4];
  t.deepEqual(ing.routes, [
    { host: 'a.example', path: '/details', service: 'reviews', port: 9443, ...ROUTE_DEFAULTS },
    { host: 'b.example', path: '/details', service: 'reviews', port: 9443, ...ROUTE_DEFAULTS },
    { host: null, path: '/details', service: 'details', port: 9080, ...ROUTE_DEFAULTS },
    { host: null, path: '/web', service: 'web', port: 80, ...ROUTE_DEFAULTS },
    { host: null, path: '/', service: 'productpage', port: 9080, ...ROUTE_DEFAULTS },
  ]);
  t.deepEqual(ing.ports, [{ port: 80, protocol: 'tcp', targetPort: 80 }]);
  t.deepEqual(ing.ingress, { listen: 80, publish: 31907, proxyPort: null, ...NO_TLS });
  t.deepEqual(ing.backends, []);
  t.not(ing.vip, st.services[3].vip, 'the ingress and the service named web differ');
  t.not(ing.vip6, st.services[3].vip6);
});

test('ingress listen: explicit value from any container; others without one agree', (t) => {
  const st = build([
    container('a-1', svc('a', '80', { 'berth.http.edge.path': '/a' })),
    container('b-1', svc('b', '80', { 'berth.http.edge.path': '/b', 'berth.http.edge.listen': '8080' })),
  ]);
  t.deepEqual(st.labelErrors, []);
  const ing = st.services.find((s) => s.kind === 'ingress')!;
  t.deepEqual(ing.ports, [{ port: 8080, protocol: 'tcp', targetPort: 8080 }]);
  t.deepEqual(ing.ingress, { listen: 8080, publish: null, proxyPort: null, ...NO_TLS });
  t.is(ing.routes.length, 2);
});

// Route conflicts: [what, labels of the later container, label, code]
const conflicts: [string, Record<string, string>, string, string][] = [
  ['listen', svc('b', '80', { 'berth.http.edge.path': '/b', 'berth.http.edge.listen': '81' }), 'berth.http.edge.listen', 'BERTH_INGRESS_CONFLICT'],
  ['publish', svc('b', '80', { 'berth.http.edge.path': '/b', 'berth.http.edge.publish': '31000' }), 'berth.http.edge.publish', 'BERTH_INGRESS_CONFLICT'],
  ['publish port of another ingress', svc('b', '80', { 'berth.http.other.path': '/b', 'berth.http.other.publish': '30000' }), 'berth.http.other.publish', 'BERTH_PUBLISH_TAKEN'],
  ['same path, other service', svc('b', '80', { 'berth.http.edge.path': '/a' }), 'berth.http.edge.path', 'BERTH_ROUTE_CONFLICT'],
];
for (const [what, later, label, code] of conflicts) {
  test(`route conflict on ${what}: the later route is dropped, its container still a backend`, (t) => {
    const st = build([
      container('a-1', svc('a', '80', { 'berth.http.edge.path': '/a', 'berth.http.edge.listen': '80', 'berth.http.edge.publish': '30000' })),
      container('b-1', later),
    ]);
    t.is(st.labelErrors.length, 1, JSON.stringify(st.labelErrors));
    t.like(st.labelErrors[0], { container: 'b-1', label, code });
    t.regex(st.labelErrors[0].error, /a-1|edge/);
    const edge = st.services.find((s) => s.kind === 'ingress' && s.name === 'edge')!;
    t.deepEqual(edge.routes, [{ host: null, path: '/a', service: 'a', port: 80, ...ROUTE_DEFAULTS }]);
    t.deepEqual(edge.ingress, { listen: 80, publish: 30000, proxyPort: null, ...NO_TLS });
    t.is(st.services.find((s) => s.kind === 'service' && s.name === 'b')!.backends.length, 1);
    t.false(st.services.some((s) => s.kind === 'ingress' && s.name === 'other'), 'an ingress left without routes does not exist');
  });
}

test('a malformed http label drops only that route; the container still backs its service', (t) => {
  const st = build([container('a-1', svc('a', '80', { 'berth.http.edge.path': 'no-slash', 'berth.http.web.path': '/ok' }))]);
  t.like(st.labelErrors[0], { container: 'a-1', label: 'berth.http.edge.path', code: 'BERTH_BAD_PATH' });
  t.deepEqual(st.services.map((s) => `${s.kind}:${s.name}`), ['service:a', 'ingress:web']);
  t.is(st.services[0].backends.length, 1);
});

test('routes of a skipped container vanish with it', (t) => {
  const st = build([
    container('a-1', svc('a', '80:8080')),
    container('a-2', svc('a', '81:8080', { 'berth.http.edge.path': '/' })),
  ]);
  t.false(st.services.some((s) => s.kind === 'ingress'));
  t.like(st.labelErrors[0], { container: 'a-2', label: 'berth.ports' });
});

test('reserved addresses (the DNS VIPs) are never a VIP: a pin on them is refused, derivation skips them', (t) => {
  const reserved = ['10.96.0.10', 'fd00:96::a'];
  const pinned = build([container('dns-squatter', svc('squat', '80', { 'berth.vip': '10.96.0.10' }))], { reserved });
  t.deepEqual(pinned.services, []);
  t.is(pinned.labelErrors[0].code, 'BERTH_VIP_BERTH_RESERVED');
  t.is(pinned.labelErrors[0].label, 'berth.vip');
  t.regex(pinned.labelErrors[0].error, /reserved by berth/);
  const pinned6 = build([container('c6', svc('squat6', '80', { 'berth.vip6': 'fd00:96::a' }))], { reserved });
  t.is(pinned6.labelErrors[0].code, 'BERTH_VIP_BERTH_RESERVED');
  // Derivation: reserve the very address "web" would derive, and it moves elsewhere.
  const free = build([container('web-1', svc('web'))]).services[0];
  const moved = build([container('web-1', svc('web'))], { reserved: [free.vip, free.vip6!] }).services[0];
  t.not(moved.vip, free.vip);
  t.not(moved.vip6, free.vip6);
  t.deepEqual(build([container('web-1', svc('web'))], { reserved }).services[0].vip, free.vip, 'no effect on other addresses');
});

test('cluster reservations: a VIP the cluster gave another name is neither derived nor pinnable here; a local name keeps its own', (t) => {
  const free = build([container('web-1', svc('web'))]);
  const webVip = free.services[0].vip;
  // api's hash home is taken by "other" (a name with no containers here): api derives elsewhere.
  const apiHome = build([container('api-1', svc('api'))]).services[0].vip;
  const st = build([container('api-1', svc('api')), container('web-1', svc('web'))], {
    clusterVips: [
      { kind: 'service', name: 'other', vip: apiHome, vip6: null },
      { kind: 'service', name: 'web', vip: webVip, vip6: null },
    ],
  });
  t.deepEqual(st.labelErrors, []);
  t.not(st.services.find((s) => s.name === 'api')!.vip, apiHome);
  t.is(st.services.find((s) => s.name === 'web')!.vip, webVip, 'a reservation of a local name does not block it');
  const pinned = build([container('p-1', svc('p', '80', { 'berth.vip': '10.96.7.7' }))], { clusterVips: [{ kind: 'service', name: 'other', vip: '10.96.7.7', vip6: null }] });
  t.deepEqual(pinned.services, []);
  t.is(pinned.labelErrors[0].code, 'BERTH_VIP_OWNED');
  t.regex(pinned.labelErrors[0].error, /already owned by service other/);
});
