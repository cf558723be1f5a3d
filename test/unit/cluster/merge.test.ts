import test from 'ava';
import { findOverlaps, mergeRemote, type ClusterView } from '../../../src/cluster/merge';
import type { NodeRecord, ServiceRecord } from '../../../src/cluster/codec';
import type { DesiredState, Service } from '../../../src/model/types';

const node = (name: string, subnets: string[], address = `192.168.0.${name.length}`): NodeRecord => ({ name, address, subnets, berth: 't', startedAt: '' });
const ports = [{ port: 80, protocol: 'tcp' as const, targetPort: 8080 }];
const rec = (name: string, on: string, ips: string[], extra: Partial<ServiceRecord> = {}): ServiceRecord => ({
  kind: 'service', name, node: on, vip: '10.96.0.5', vip6: null, ports,
  backends: ips.map((ip, i) => ({ container: `${name}-${on}-${i}`, id: `${on}${i}`, ip, ip6: null })), ...extra,
});
const svc = (name: string, ips: string[], extra: Partial<Service> = {}): Service => ({
  name, kind: 'service', vip: '10.96.0.5', vip6: null, ports,
  backends: ips.map((ip, i) => ({ container: `${name}-local-${i}`, id: `l${i}`, ip, ip6: null })),
  routes: [], ingress: null, errors: [], ...extra,
});
const state = (...services: Service[]): DesiredState => ({ services, labelErrors: [] });
const view = (nodes: NodeRecord[], services: ServiceRecord[]): ClusterView => ({
  nodes: new Map(nodes.map((n) => [n.name, n])), services, owners: new Map(),
});

const LOCAL = ['172.18.0.0/16'];

test('remote backends join the local service; every backend names its node', (t) => {
  const m = mergeRemote(state(svc('web', ['172.18.0.2'])), view(
    [node('me', LOCAL), node('b', ['172.19.0.0/16']), node('c', ['172.20.0.0/16'])],
    [rec('web', 'b', ['172.19.0.2']), rec('web', 'c', ['172.20.0.2', '172.20.0.3']), rec('web', 'me', ['172.18.0.99'])],
  ), 'me', LOCAL);
  const web = m.state.services[0];
  t.deepEqual(web.backends.map((b) => `${b.node}:${b.ip}`), ['me:172.18.0.2', 'b:172.19.0.2', 'c:172.20.0.2', 'c:172.20.0.3'].sort((x, y) => {
    const id = (s: string) => ({ 'me:172.18.0.2': 'l0', 'b:172.19.0.2': 'b0', 'c:172.20.0.2': 'c0', 'c:172.20.0.3': 'c1' } as Record<string, string>)[s];
    return id(x) < id(y) ? -1 : 1;
  }));
  t.is(m.remoteBackends, 3, "this node's own record is skipped");
  t.deepEqual(web.errors, []);
});

test('a service only peers have appears with their VIP and ports; local state is not mutated', (t) => {
  const local = state(svc('web', ['172.18.0.2']));
  const m = mergeRemote(local, view([node('b', ['172.19.0.0/16'])], [rec('api', 'b', ['172.19.0.7'], { vip: '10.96.0.9' })]), 'me', LOCAL);
  t.deepEqual(m.state.services.map((s) => `${s.name}@${s.vip}`), ['api@10.96.0.9', 'web@10.96.0.5']);
  t.deepEqual(m.state.services[0].backends, [{ container: 'api-b-0', id: 'b0', ip: '172.19.0.7', ip6: null, node: 'b' }]);
  t.is(local.services[0].backends[0].node, undefined);
});

test('records of a node without a node record (lease gone, not yet seen) are not used', (t) => {
  const m = mergeRemote(state(), view([], [rec('web', 'b', ['172.19.0.2'])]), 'me', LOCAL);
  t.deepEqual(m.state.services, []);
});

test('overlapping subnets: that peer is not used, reported with the fix; peer-peer overlaps exclude both', (t) => {
  const v = view([node('b', ['172.18.0.0/16']), node('c', ['172.30.0.0/24']), node('d', ['172.30.0.128/25']), node('e', ['172.21.0.0/16'])], [
    rec('web', 'b', ['172.18.0.2']), rec('web', 'c', ['172.30.0.2']), rec('web', 'd', ['172.30.0.130']), rec('web', 'e', ['172.21.0.2']),
  ]);
  const m = mergeRemote(state(svc('web', ['172.18.0.2'])), v, 'me', LOCAL);
  t.deepEqual(m.state.services[0].backends.map((b) => b.node), ['e', 'me']);
  t.deepEqual(m.overlaps.map((o) => `${o.node}/${o.with}`), ['b/local', 'c/d', 'd/c']);
  t.regex(m.overlaps[0].message, /node b's container subnet 172.18.0.0\/16 overlaps 172.18.0.0\/16 of this host; .*"bip" and "default-address-pools" in \/etc\/docker\/daemon.json/);
  t.deepEqual(findOverlaps('me', LOCAL, new Map()), []);
});

test('a remote backend outside its node\'s subnets is skipped with an error', (t) => {
  const m = mergeRemote(state(), view([node('b', ['172.19.0.0/16'])], [rec('web', 'b', ['172.19.0.2', '8.8.8.8'])]), 'me', LOCAL);
  t.deepEqual(m.state.services[0].backends.map((b) => b.ip), ['172.19.0.2']);
  t.regex(m.errors[0], /backend web-b-1 \(8.8.8.8\) on node b is outside that node's container subnets/);
});

test('ports disagreeing with the local service: that peer contributes nothing, error on the service', (t) => {
  const other = [{ port: 80, protocol: 'tcp' as const, targetPort: 9090 }];
  const m = mergeRemote(state(svc('web', ['172.18.0.2'])), view([node('b', ['172.19.0.0/16'])], [rec('web', 'b', ['172.19.0.2'], { ports: other })]), 'me', LOCAL);
  t.is(m.state.services[0].backends.length, 1);
  t.regex(m.state.services[0].errors[0], /node b serves web with other ports \(80:9090\/tcp\)/);
});

test('remote-only service: the first node by name fixes VIP/ports, a disagreeing later one is skipped', (t) => {
  const m = mergeRemote(state(), view([node('b', ['172.19.0.0/16']), node('c', ['172.20.0.0/16'])], [
    rec('api', 'c', ['172.20.0.2'], { vip: '10.96.0.8' }), rec('api', 'b', ['172.19.0.2'], { vip: '10.96.0.9' }),
  ]), 'me', LOCAL);
  const api = m.state.services[0];
  t.is(api.vip, '10.96.0.9');
  t.deepEqual(api.backends.map((b) => b.node), ['b']);
  t.regex(api.errors[0], /node c announces api with VIP 10.96.0.8/);
});

test('a remote-only service on a local service\'s VIP is not added; the error names the cluster owner', (t) => {
  const v = view([node('b', ['172.19.0.0/16'])], [rec('api', 'b', ['172.19.0.2'], { vip: '10.96.0.5' })]);
  v.owners.set('10.96.0.5', { kind: 'service', name: 'web' });
  const m = mergeRemote(state(svc('web', ['172.18.0.2'])), v, 'me', LOCAL);
  t.deepEqual(m.state.services.map((s) => s.name), ['web']);
  t.regex(m.state.services[0].errors[0], /node b announces service api at VIP 10.96.0.5 too \(owner in the cluster: service web\)/);
});

test('same name at different VIPs while converging: backends used, the difference reported', (t) => {
  const m = mergeRemote(state(svc('web', ['172.18.0.2'])), view([node('b', ['172.19.0.0/16'])], [rec('web', 'b', ['172.19.0.2'], { vip: '10.96.0.6' })]), 'me', LOCAL);
  t.is(m.state.services[0].backends.length, 2);
  t.regex(m.state.services[0].errors[0], /converging/);
});

test('ingress records are not merged (ingresses are per host)', (t) => {
  const m = mergeRemote(state(), view([node('b', ['172.19.0.0/16'])], [rec('shop', 'b', [], { kind: 'ingress' })]), 'me', LOCAL);
  t.deepEqual(m.state.services, []);
});
