import test from 'ava';
import { crossnetHow, crossnetRules, FLOW_CONNMARK } from '../../../src/datapath/crossnet';
import { crossNetworkText } from '../../../src/cli/format';
import type { Service } from '../../../src/model/types';

const PIN = '/sys/fs/bpf/berth/prog_berth_flow_match';

// [mode, match program pinned, expected rule set]
const howCases: ['allow' | 'docker', string | null, ReturnType<typeof crossnetHow>][] = [
  ['allow', PIN, 'balanced-flows'],
  ['allow', null, 'open-ports'],
  ['docker', PIN, 'docker'],
  ['docker', null, 'docker'],
];
for (const [mode, pin, want] of howCases) {
  test(`crossnetHow(${mode}, ${pin ? 'pinned' : 'no program'}) = ${want}`, (t) => t.is(crossnetHow(mode, pin), want));
}

function svc(name: string, backends: Service['backends'], ports: Service['ports'] = [{ port: 80, protocol: 'tcp', targetPort: 8080 }]): Service {
  return { name, kind: 'service', vip: '10.96.0.1', vip6: null, ports, backends, routes: [], ingress: null, errors: [] };
}

test('balanced-flows: mark NEW balanced connections, then accept marked ones (both directions), as iptables -S prints them', (t) => {
  const mark = `0x${FLOW_CONNMARK.toString(16)}/0x${FLOW_CONNMARK.toString(16)}`;
  t.deepEqual(crossnetRules('balanced-flows', 4, { matchPin: PIN, services: [] }), [
    `-A BERTH_CROSSNET -m conntrack --ctstate NEW -m bpf --object-pinned ${PIN} -m comment --comment berth -j CONNMARK --set-xmark ${mark}`,
    `-A BERTH_CROSSNET -m connmark --mark ${mark} -m comment --comment berth -j ACCEPT`,
  ]);
  t.deepEqual(crossnetRules('balanced-flows', 6, { matchPin: PIN, services: [] }), crossnetRules('balanced-flows', 4, { matchPin: PIN, services: [] }), 'the same for IPv6');
});

test('open-ports: each reachable backend\'s target ports, both directions, deduplicated; unreachable and address-less skipped', (t) => {
  const services = [
    svc('web', [
      { container: 'a', id: 'a', ip: '172.20.0.2', ip6: 'fd00::2', reachable: true },
      { container: 'b', id: 'b', ip: null, ip6: null, reachable: false, reason: 'network mode none' },
    ], [{ port: 80, protocol: 'tcp', targetPort: 8080 }, { port: 53, protocol: 'udp', targetPort: 53 }]),
    svc('web2', [{ container: 'a', id: 'a', ip: '172.20.0.2', ip6: null }]), // same container and port: once
  ];
  t.deepEqual(crossnetRules('open-ports', 4, { matchPin: null, services }), [
    '-A BERTH_CROSSNET -d 172.20.0.2/32 -p tcp -m tcp --dport 8080 -m comment --comment berth -j ACCEPT',
    '-A BERTH_CROSSNET -s 172.20.0.2/32 -p tcp -m tcp --sport 8080 -m comment --comment berth -j ACCEPT',
    '-A BERTH_CROSSNET -d 172.20.0.2/32 -p udp -m udp --dport 53 -m comment --comment berth -j ACCEPT',
    '-A BERTH_CROSSNET -s 172.20.0.2/32 -p udp -m udp --sport 53 -m comment --comment berth -j ACCEPT',
  ]);
  t.deepEqual(crossnetRules('open-ports', 6, { matchPin: null, services }).length, 4);
  t.deepEqual(crossnetRules('docker', 4, { matchPin: PIN, services }), []);
});

const textCases: [string, Parameters<typeof crossNetworkText>[0], RegExp][] = [
  ['in place', { mode: 'allow', how: 'balanced-flows', flows: null, chains: [{ family: 4, dockerUser: true, isolation: true, jumpFirst: true, chainOk: true }], error: null }, /allow: balanced flows .*; rules in place$/],
  ['missing', { mode: 'allow', how: 'balanced-flows', flows: null, chains: [{ family: 4, dockerUser: true, isolation: true, jumpFirst: false, chainOk: false }], error: 'boom' }, /rules NOT in place; ERROR: boom/],
  ['fallback says weaker and why', { mode: 'allow', how: 'open-ports', flows: { matchPin: null, recording: false, error: 'no cgroup_skb' }, chains: [], error: null }, /WEAKER fallback.*no cgroup_skb/],
  ['no Docker iptables', { mode: 'allow', how: 'balanced-flows', flows: null, chains: [{ family: 4, dockerUser: false, isolation: false, jumpFirst: false, chainOk: false }], error: null }, /no DOCKER-USER chain/],
];
for (const [what, x, re] of textCases) test(`status text: ${what}`, (t) => t.regex(crossNetworkText(x), re));
