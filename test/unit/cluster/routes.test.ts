import test from 'ava';
import { peerRoutes } from '../../../src/cluster/routes';
import type { NodeRecord } from '../../../src/cluster/codec';

const n = (name: string, address: string, subnets: string[]): [string, NodeRecord] => [name, { name, address, subnets, berth: 't', startedAt: '' }];

test('peer routes: every peer subnet via its address; not self, not overlapping peers, not at our own address, same family only', (t) => {
  const nodes = new Map([
    n('me', '10.0.0.1', ['172.18.0.0/16']),
    n('b', '10.0.0.2', ['172.19.0.0/16', 'fd00:19::/64']),
    n('c', '10.0.0.3', ['172.20.0.0/16']),
    n('twin', '10.0.0.1', ['172.21.0.0/16']),
    n('v6', 'fd00::4', ['fd00:22::/64', '172.22.0.0/16']),
  ]);
  const overlaps = [{ node: 'c', subnet: '172.20.0.0/16', with: 'local', otherSubnet: '172.20.0.0/16', message: '' }];
  t.deepEqual(peerRoutes('me', nodes, overlaps, '10.0.0.1'), [
    { subnet: '172.19.0.0/16', via: '10.0.0.2', node: 'b' },
    { subnet: 'fd00:22::/64', via: 'fd00::4', node: 'v6' },
  ]);
  t.deepEqual(peerRoutes('me', new Map(), [], null), []);
});
