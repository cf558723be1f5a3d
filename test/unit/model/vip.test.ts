import test from 'ava';
import { cidrContains, formatIp, parseCidr, parseIp, type Addr } from '../../../src/model/ip';
import { deriveVip, makeVipRules, usableSize, vipCandidate, vipProblem } from '../../../src/model/vip';
import { BRIDGE, GATEWAY_ONLY, HOST, INSIDE } from './fixtures';

const range4 = parseCidr('10.96.0.0/16')!;
const range6 = parseCidr('fd00:96::/112')!;
const rules4 = makeVipRules(range4, HOST, [BRIDGE, INSIDE, GATEWAY_ONLY]);
const rules6 = makeVipRules(range6, HOST, [BRIDGE, INSIDE, GATEWAY_ONLY]);
const none = () => false;

test('derivation is deterministic, in range, never network or broadcast', (t) => {
  for (const name of ['web', 'details', 'reviews', 'a', 'x'.repeat(63)]) {
    const a = deriveVip('service', name, rules4, none)!;
    t.is(formatIp(a), formatIp(deriveVip('service', name, rules4, none)!), name);
    t.true(cidrContains(range4, a));
    t.not(formatIp(a), '10.96.0.0');
    t.not(formatIp(a), '10.96.255.255');
    const b = deriveVip('service', name, rules6, none)!;
    t.true(cidrContains(range6, b));
  }
});

test('the hash is pinned: same name, same VIP on every host (golden values)', (t) => {
  // If these change, every existing deployment's derived VIPs move: change them only on purpose.
  const golden: [string, string, string, string, string][] = [
    ['web', '10.96.186.177', 'fd00:96::bab1', '10.96.216.143', 'fd00:96::d88f'],
    ['details', '10.96.222.15', 'fd00:96::de0f', '10.96.149.236', 'fd00:96::95ec'],
  ];
  for (const [name, v4, v6, i4, i6] of golden) {
    t.is(formatIp(deriveVip('service', name, rules4, none)!), v4, name);
    t.is(formatIp(deriveVip('service', name, rules6, none)!), v6, name);
    t.is(formatIp(deriveVip('ingress', name, rules4, none)!), i4, name);
    t.is(formatIp(deriveVip('ingress', name, rules6, none)!), i6, name);
  }
});

test('service and ingress of the same name get different VIPs', (t) => {
  for (const name of ['web', 'shop', 'api']) {
    t.not(formatIp(vipCandidate('service', name, range4, 0)!), formatIp(vipCandidate('ingress', name, range4, 0)!), name);
  }
});

test('different names spread over the range (no systematic collisions)', (t) => {
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) seen.add(formatIp(vipCandidate('service', `svc-${i}`, range4, 0)!));
  t.true(seen.size >= 198, `only ${seen.size} distinct of 200`);
});

test('collision: a taken home address rehashes deterministically', (t) => {
  const home = deriveVip('service', 'web', rules4, none)!;
  const taken = (a: Addr) => a.value === home.value;
  const second = deriveVip('service', 'web', rules4, taken)!;
  t.not(second.value, home.value);
  t.is(second.value, deriveVip('service', 'web', rules4, taken)!.value);
  t.is(second.value, vipCandidate('service', 'web', range4, 1)!.value, 'the first rehash');
});

test('a nearly full range still finds the one free address; a full one gives null', (t) => {
  const small = parseCidr('10.96.0.0/28')!; // 14 usable
  const rules = makeVipRules(small, { addresses: [] }, []);
  t.is(usableSize(small), 14n);
  const free = parseIp('10.96.0.9')!;
  const a = deriveVip('service', 'web', rules, (x) => x.value !== free.value)!;
  t.is(formatIp(a), '10.96.0.9');
  t.is(deriveVip('service', 'web', rules, () => true), null);
  t.is(deriveVip('service', 'web', makeVipRules(parseCidr('10.96.0.0/31')!, { addresses: [] }, []), none), null, '/31 has no usable address');
  t.is(deriveVip('service', 'web', makeVipRules(parseCidr('10.96.0.0/32')!, { addresses: [] }, []), none), null);
});

test('derivation skips forbidden addresses', (t) => {
  // A range that is mostly a Docker subnet: every derived VIP must be outside it.
  const r = parseCidr('10.96.200.0/23')!;
  const rules = makeVipRules(r, { addresses: ['10.96.201.7'] }, [INSIDE, GATEWAY_ONLY]);
  for (let i = 0; i < 50; i++) {
    const a = deriveVip('service', `s${i}`, rules, none)!;
    t.is(vipProblem(rules, a), null, formatIp(a));
    t.false(cidrContains(parseCidr('10.96.200.0/24')!, a));
    t.not(formatIp(a), '10.96.201.7');
    t.not(formatIp(a), '10.96.201.1');
  }
});

// [address, family, expected code or null]
const problems: [string, 4 | 6, string | null][] = [
  ['10.96.0.10', 4, null],
  ['10.96.255.254', 4, null],
  ['192.0.2.1', 4, 'BERTH_VIP_OUTSIDE_RANGE'],
  ['10.97.0.1', 4, 'BERTH_VIP_OUTSIDE_RANGE'],
  ['127.0.0.5', 4, 'BERTH_VIP_LOOPBACK'],
  ['10.96.0.0', 4, 'BERTH_VIP_RESERVED'],
  ['10.96.255.255', 4, 'BERTH_VIP_RESERVED'],
  ['10.96.99.99', 4, 'BERTH_VIP_HOST_ADDRESS'],
  ['10.96.200.1', 4, 'BERTH_VIP_DOCKER_GATEWAY'],
  ['10.96.201.1', 4, 'BERTH_VIP_DOCKER_GATEWAY'],
  ['10.96.200.77', 4, 'BERTH_VIP_DOCKER_SUBNET'],
  ['fd00:96::a', 6, null],
  ['::1', 6, 'BERTH_VIP_LOOPBACK'],
  ['fd00:97::1', 6, 'BERTH_VIP_OUTSIDE_RANGE'],
  ['fd00:96::', 6, 'BERTH_VIP_RESERVED'],
  ['fd00:96::ffff', 6, 'BERTH_VIP_RESERVED'],
];
for (const [addr, fam, code] of problems) {
  test(`vipProblem(${addr}) = ${code}`, (t) => {
    const p = vipProblem(fam === 4 ? rules4 : rules6, parseIp(addr)!);
    if (code === null) return t.is(p, null);
    const e = p!('c', 'berth.vip');
    t.is(e.code, code);
    t.true(e.error.includes(addr), e.error);
  });
}

test('an IPv6 host address and Docker v6 subnet are forbidden in the v6 range', (t) => {
  const r = parseCidr('fd00:dead::/112')!;
  const rules = makeVipRules(r, { addresses: ['fd00:dead::5'] }, [BRIDGE]);
  t.is(vipProblem(rules, parseIp('fd00:dead::5')!)!('c', 'l').code, 'BERTH_VIP_HOST_ADDRESS');
  t.is(vipProblem(rules, parseIp('fd00:dead::1')!)!('c', 'l').code, 'BERTH_VIP_DOCKER_GATEWAY');
  t.is(vipProblem(rules, parseIp('fd00:dead::9')!)!('c', 'l').code, 'BERTH_VIP_DOCKER_SUBNET');
});
