import test from 'ava';
import type { ContainerInfo, NetworkInfo } from '../../../src/model/types';
import { hostBackendAddress, placeBackend, type NetworkEnv } from '../../../src/model/network';

const NETS: NetworkInfo[] = [
  { id: 'b', name: 'bridge', driver: 'bridge', subnets: ['172.17.0.0/16', 'fd00:17::/64'], gateways: ['172.17.0.1', 'fd00:17::1'] },
  { id: 'u', name: 'app_default', driver: 'bridge', subnets: ['172.20.0.0/16'], gateways: ['172.20.0.1'] },
  { id: 'z', name: 'zz_other', driver: 'bridge', subnets: ['172.21.0.0/16'], gateways: ['172.21.0.1'] },
  { id: 'm', name: 'mv', driver: 'macvlan', subnets: ['192.168.50.0/24'], gateways: ['192.168.50.1'] },
  { id: 'i', name: 'iv', driver: 'ipvlan', subnets: ['192.168.60.0/24'], gateways: [] },
  { id: 'o', name: 'ov', driver: 'overlay', subnets: ['10.0.9.0/24'], gateways: ['10.0.9.1'] },
  { id: 'h', name: 'host', driver: 'host', subnets: [], gateways: [] },
  { id: 'n', name: 'none', driver: 'null', subnets: [], gateways: [] },
];

function c(name: string, over: Partial<ContainerInfo> = {}): ContainerInfo {
  return {
    id: name.padEnd(64, '0'), name, labels: {}, state: 'running', health: 'none', stopping: false, exposedPorts: [], networks: [], ...over,
  };
}
const on = (name: string, ip: string | null, ip6: string | null = null) => ({ name, id: name, ip, ip6 });

const peer = c('peer', { networks: [on('app_default', '172.20.0.7')] });
const hostPeer = c('hostpeer', { networkMode: 'host', networks: [on('host', null)] });
const stopped = c('stopped', { state: 'exited', networks: [on('bridge', '172.17.0.9')] });
const ENV: NetworkEnv = { networks: NETS, containers: [peer, hostPeer, stopped] };

// [what, container, expected ip, ip6, reachable, reason pattern (null = no reason), network names listed]
const cases: [string, ContainerInfo, string | null, string | null, boolean, RegExp | null, string[]][] = [
  ['default bridge', c('a', { networkMode: 'default', networks: [on('bridge', '172.17.0.2')] }), '172.17.0.2', null, true, null, ['bridge']],
  ['user-defined network (compose)', c('a', { networkMode: 'app_default', networks: [on('app_default', '172.20.0.3')] }), '172.20.0.3', null, true, null, ['app_default']],
  ['two networks: first by name, both listed', c('a', { networks: [on('zz_other', '172.21.0.5'), on('app_default', '172.20.0.5')] }), '172.20.0.5', null, true, null, ['app_default', 'zz_other']],
  ['the choice does not depend on the order Docker lists them', c('a', { networks: [on('app_default', '172.20.0.5'), on('zz_other', '172.21.0.5')] }), '172.20.0.5', null, true, null, ['app_default', 'zz_other']],
  ['IPv6 from the first network that has one', c('a', { networks: [on('app_default', '172.20.0.5'), on('bridge', '172.17.0.5', 'FD00:17::5')] }), '172.20.0.5', 'fd00:17::5', true, null, ['app_default', 'bridge']],
  ['host network: the host, at docker0\'s gateway', c('a', { networkMode: 'host', networks: [on('host', null)] }), '172.17.0.1', 'fd00:17::1', true, /host network: reached at the host's address on bridge/, ['host']],
  ['network none', c('a', { networkMode: 'none', networks: [on('none', null)] }), null, null, false, /network mode none/, []],
  ['container:<id> takes the peer\'s addresses', c('a', { networkMode: `container:${peer.id}` }), '172.20.0.7', null, true, /shares the network of container peer/, ['app_default']],
  ['container:<name> works too', c('a', { networkMode: 'container:peer' }), '172.20.0.7', null, true, /container peer/, ['app_default']],
  ['container:<short id>', c('a', { networkMode: `container:${peer.id.slice(0, 12)}` }), '172.20.0.7', null, true, /container peer/, ['app_default']],
  ['container: sharing a host-network container is the host', c('a', { networkMode: `container:${hostPeer.id}` }), '172.17.0.1', 'fd00:17::1', true, /container hostpeer; host network/, ['host']],
  ['container: peer not running', c('a', { networkMode: `container:${stopped.id}` }), null, null, false, /container stopped, which is not running/, []],
  ['container: peer unknown', c('a', { networkMode: 'container:nosuch' }), null, null, false, /container nosuch, which is not running/, []],
  ['macvlan only: unreachable, says why', c('a', { networkMode: 'mv', networks: [on('mv', '192.168.50.9')] }), null, null, false, /macvlan network mv: the host cannot reach/, ['mv']],
  ['ipvlan only', c('a', { networks: [on('iv', '192.168.60.9')] }), null, null, false, /ipvlan network iv/, ['iv']],
  ['overlay only', c('a', { networks: [on('ov', '10.0.9.9')] }), null, null, false, /overlay network ov/, ['ov']],
  ['macvlan and a bridge: the bridge, with a note', c('a', { networks: [on('mv', '192.168.50.9'), on('app_default', '172.20.0.9')] }), '172.20.0.9', null, true, /skipped macvlan network mv/, ['app_default', 'mv']],
  ['a network missing from the list counts as a bridge', c('a', { networks: [on('fresh', '172.30.0.2')] }), '172.30.0.2', null, true, null, ['fresh']],
  ['no address anywhere', c('a', { networks: [on('bridge', null)] }), null, null, false, /no address on any of its networks/, ['bridge']],
  ['on no network', c('a', { networks: [] }), null, null, false, /on no network/, []],
];
for (const [what, container, ip, ip6, reachable, reason, nets] of cases) {
  test(`placeBackend: ${what}`, (t) => {
    const p = placeBackend(container, ENV);
    t.is(p.ip, ip);
    t.is(p.ip6, ip6);
    t.is(p.reachable, reachable);
    if (reason) t.regex(p.reason ?? '', reason);
    else t.is(p.reason, null);
    t.deepEqual(p.networks.map((n) => n.network), nets);
    // Stable: the same input gives the same answer (the datapath would otherwise churn).
    t.deepEqual(placeBackend(container, ENV), p);
  });
}

test('container: chains are bounded (a cycle is unreachable, not a stack overflow)', (t) => {
  const x = c('x', { networkMode: 'container:y' });
  const y = c('y', { networkMode: 'container:x' });
  const p = placeBackend(x, { networks: NETS, containers: [x, y] });
  t.false(p.reachable);
  t.regex(p.reason ?? '', /too many containers/);
});

// [what, networks, expected]
const hostCases: [string, NetworkInfo[], ReturnType<typeof hostBackendAddress>][] = [
  ['docker0 first, both families', NETS, { network: 'bridge', ip: '172.17.0.1', ip6: 'fd00:17::1' }],
  ['no docker0: first bridge network by name', NETS.filter((n) => n.name !== 'bridge'), { network: 'app_default', ip: '172.20.0.1', ip6: null }],
  ['only networks the host cannot be reached through', NETS.filter((n) => !['bridge', 'app_default', 'zz_other'].includes(n.name)), null],
  ['nothing', [], null],
  ['a bridge without gateway is skipped', [{ id: 'q', name: 'aaa', driver: 'bridge', subnets: ['10.1.0.0/24'], gateways: [] }, NETS[2]], { network: 'zz_other', ip: '172.21.0.1', ip6: null }],
];
for (const [what, nets, want] of hostCases) {
  test(`hostBackendAddress: ${what}`, (t) => {
    t.deepEqual(hostBackendAddress(nets), want);
  });
}
