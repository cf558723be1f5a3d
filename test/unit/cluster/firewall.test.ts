import test from 'ava';
import { peerAcceptRules, peerAccepts, PEERS_CHAIN } from '../../../src/cluster/firewall';
import type { NodeRecord } from '../../../src/cluster/codec';

const n = (name: string, address: string, subnets: string[] = []): [string, NodeRecord] => [name, { name, address, subnets, berth: 't', startedAt: '' }];

const cases: { title: string; nodes: [string, NodeRecord][]; own: string | null; local: string[]; want: string[] }[] = [
  {
    title: 'every peer times every local subnet of its family, sorted',
    nodes: [n('me', '10.0.0.1'), n('c', '10.0.0.3'), n('b', '10.0.0.2')],
    own: '10.0.0.1',
    local: ['172.18.0.0/16', '172.28.0.0/24'],
    want: ['4 10.0.0.2 172.18.0.0/16 b', '4 10.0.0.2 172.28.0.0/24 b', '4 10.0.0.3 172.18.0.0/16 c', '4 10.0.0.3 172.28.0.0/24 c'],
  },
  {
    title: 'not self, not a peer at our own address (several berthd on one host)',
    nodes: [n('me', '10.0.0.1'), n('twin', '10.0.0.1')],
    own: '10.0.0.1',
    local: ['172.18.0.0/16'],
    want: [],
  },
  {
    title: 'families kept apart; v6 peer gets v6 subnets only',
    nodes: [n('me', '10.0.0.1'), n('b', '10.0.0.2'), n('v6', 'fd00::4')],
    own: '10.0.0.1',
    local: ['172.18.0.0/16', 'fd00:18::/64'],
    want: ['4 10.0.0.2 172.18.0.0/16 b', '6 fd00::4 fd00:18::/64 v6'],
  },
  {
    title: 'bad peer address and bad local subnets skipped; duplicate subnets once; host bits cleared',
    nodes: [n('me', '10.0.0.1'), n('bad', 'not-an-ip'), n('b', '10.0.0.2')],
    own: '10.0.0.1',
    local: ['172.18.0.1/16', '172.18.0.0/16', 'garbage', ''],
    want: ['4 10.0.0.2 172.18.0.0/16 b'],
  },
  {
    title: 'no local subnets (Docker with no networks yet): nothing',
    nodes: [n('me', '10.0.0.1'), n('b', '10.0.0.2')],
    own: '10.0.0.1',
    local: [],
    want: [],
  },
  {
    title: 'own address unknown: only self by name is skipped',
    nodes: [n('me', '10.0.0.1'), n('b', '10.0.0.2')],
    own: null,
    local: ['172.18.0.0/16'],
    want: ['4 10.0.0.2 172.18.0.0/16 b'],
  },
];

for (const c of cases) {
  test(`peerAccepts: ${c.title}`, (t) => {
    const got = peerAccepts('me', new Map(c.nodes), c.own, c.local).map((a) => `${a.family} ${a.peer} ${a.subnet} ${a.node}`);
    t.deepEqual(got, c.want);
  });
}

test('peerAcceptRules: the text iptables -S prints, per family, in BERTH_PEERS', (t) => {
  const acc = peerAccepts('me', new Map([n('me', '10.0.0.1'), n('b', '10.0.0.2'), n('v6', 'fd00::4')]), '10.0.0.1', ['172.18.0.0/16', 'fd00:18::/64']);
  t.deepEqual(peerAcceptRules(acc, 4), [`-A ${PEERS_CHAIN} -s 10.0.0.2/32 -d 172.18.0.0/16 -m comment --comment berth -j ACCEPT`]);
  t.deepEqual(peerAcceptRules(acc, 6), [`-A ${PEERS_CHAIN} -s fd00::4/128 -d fd00:18::/64 -m comment --comment berth -j ACCEPT`]);
  t.deepEqual(peerAcceptRules([], 4), []);
});
