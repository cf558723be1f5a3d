import test from 'ava';
import { clientNetworks, networkLists, networkNumbers, type NetContext } from '../../../src/datapath/netlists';
import { frontendsWithNetworks, plan, currentFrom, DEFAULT_LIMITS } from '../../../src/datapath/plan';
import { SVC_F_NETS } from '../../../src/datapath/codec';
import type { Backend, ContainerInfo, NetworkInfo, Service } from '../../../src/model/types';

const NETS: NetworkInfo[] = [
  { id: 'aaaa', name: 'na', driver: 'bridge', subnets: [], gateways: [] },
  { id: 'bbbb', name: 'nb', driver: 'bridge', subnets: [], gateways: [] },
  { id: 'cccc', name: 'nc', driver: 'bridge', subnets: [], gateways: [] },
  { id: 'hhhh', name: 'host', driver: 'host', subnets: [], gateways: [] },
  { id: 'nnnn', name: 'none', driver: 'null', subnets: [], gateways: [] },
];
const NUM = networkNumbers(NETS);
const A = NUM.get('na')!, B = NUM.get('nb')!, C = NUM.get('nc')!;

test('networkNumbers: one number 1..65535 per network with its own netns; host and none get none; stable when others come and go', (t) => {
  t.deepEqual([...NUM.keys()].sort(), ['na', 'nb', 'nc']);
  for (const n of NUM.values()) t.true(n >= 1 && n <= 0xffff);
  t.is(new Set(NUM.values()).size, 3);
  const fewer = networkNumbers(NETS.filter((n) => n.name !== 'na'));
  t.is(fewer.get('nb'), B, 'removing a network moves no other number');
  t.is(fewer.get('nc'), C);
  // Same hash: the later id (in id order) takes the next free number.
  const clash = networkNumbers([{ id: 'x', name: 'one', subnets: [], gateways: [] }, { id: 'x', name: 'two', subnets: [], gateways: [] }]);
  t.not(clash.get('one'), clash.get('two'));
});

const be = (name: string, nets: [string, string | null, string | null][], over: Partial<Backend> = {}): Backend => ({
  container: name, id: name, ip: nets.find((n) => n[1])?.[1] ?? null, ip6: nets.find((n) => n[2])?.[2] ?? null,
  networks: nets.map(([network, ip, ip6]) => ({ network, ip, ip6 })), reachable: true, reason: null, ...over,
});
function svc(backends: Backend[]): Service {
  return { name: 'web', kind: 'service', vip: '10.96.0.5', vip6: 'fd00:96::5', ports: [{ port: 80, protocol: 'tcp', targetPort: 8080 }], backends, routes: [], ingress: null, errors: [] };
}
const one = be('one', [['na', '172.20.0.2', 'fd00:a::2']]);
const multi = be('multi', [['na', '172.20.0.3', null], ['nb', '172.21.0.3', null]]);
const hostBe = be('h', [['host', '172.17.0.1', null]]);
const list0 = (s: Service, v4 = true) => s.backends.map((b) => (v4 ? b.ip : b.ip6)).filter((x): x is string => !!x).map((ip) => ({ ip, port: 8080 }));

// [what, mode, backends, vip, expected lists by network name (absent = list 0 applies)]
const cases: [string, NetContext['mode'], Backend[], string, Record<string, string[]>][] = [
  ['allow, single-network backend: no list anywhere (the common case costs nothing)', 'allow', [one], '10.96.0.5', {}],
  ['allow, multi-network backend: a client on nb gets its nb address (shared network first)', 'allow', [multi], '10.96.0.5', { nb: ['172.21.0.3'] }],
  ['allow, mixed: the shared address where there is one, list 0 elsewhere', 'allow', [one, multi], '10.96.0.5', { nb: ['172.20.0.2', '172.21.0.3'] }],
  ['docker, single-network backend: other networks get an empty list (refused)', 'docker', [one], '10.96.0.5', { nb: [], nc: [] }],
  ['docker, multi-network: each network only what it shares', 'docker', [one, multi], '10.96.0.5', { nb: ['172.21.0.3'], nc: [] }],
  ['docker, a host-network backend is for everyone', 'docker', [hostBe], '10.96.0.5', {}],
  ['docker, IPv6: a v6 VIP lists v6 addresses only', 'docker', [one, multi], 'fd00:96::5', { nb: [], nc: [] }],
  ['an unreachable backend is in no list', 'docker', [be('none', [], { ip: null, ip6: null, reachable: false, reason: 'x' })], '10.96.0.5', {}],
];
for (const [what, mode, backends, vip, want] of cases) {
  test(`networkLists: ${what}`, (t) => {
    const s = svc(backends);
    const got = networkLists(s, vip, 8080, list0(s, !vip.includes(':')), { mode, numbers: NUM }, 0xffff);
    const byName = Object.fromEntries([...NUM].filter(([, n]) => got.has(n)).map(([name, n]) => [name, got.get(n)!.map((a) => a.ip)]));
    t.deepEqual(byName, want);
  });
}

test('frontendsWithNetworks: list 0 flagged SVC_F_NETS only when lists exist; lists carry their number; plan writes and removes them', (t) => {
  const ctx: NetContext = { mode: 'docker', numbers: NUM };
  const f = frontendsWithNetworks(svc([one]), DEFAULT_LIMITS, ctx).frontends.filter((x) => x.vip === '10.96.0.5');
  t.is(f[0].net, undefined);
  t.is(f[0].flags & SVC_F_NETS, SVC_F_NETS);
  t.deepEqual(f.slice(1).map((x) => [x.net, x.backends.length]).sort(), [[B, 0], [C, 0]].sort());
  t.is(frontendsWithNetworks(svc([one]), DEFAULT_LIMITS, { mode: 'allow', numbers: NUM }).frontends[0].flags & SVC_F_NETS, 0);
  // Applied to empty maps: masters of the empty lists say count 0 (the hook refuses).
  const p = plan([svc([one])], currentFrom([], []), { prune: true }, DEFAULT_LIMITS, ctx);
  const puts = p.perService.get('web')!.filter((o) => o.op === 'svc-put' && o.key.net === B);
  t.deepEqual(puts.map((o) => o.op === 'svc-put' && [o.key.slot, o.val.count]), [[0, 0], [0, 0]], 'v4 and v6 masters of list nb, empty');
  // Back to allow: the per-network entries are deleted, list 0 loses the flag.
  const cur = currentFrom(p.perService.get('web')!.filter((o) => o.op === 'svc-put').map((o) => o.op === 'svc-put' ? { key: o.key, val: o.val } : null!),
    p.perService.get('web')!.filter((o) => o.op === 'backend-put').map((o) => o.op === 'backend-put' ? { id: o.id, addr: o.addr } : null!));
  const back = plan([svc([one])], cur, { prune: true }, DEFAULT_LIMITS, { mode: 'allow', numbers: NUM });
  t.true(back.cleanup.some((o) => o.op === 'svc-del' && o.key.net === B));
  t.true(back.perService.get('web')!.some((o) => o.op === 'svc-put' && o.key.slot === 0 && !o.key.net && (o.val.flags & SVC_F_NETS) === 0));
});

test('clientNetworks: own-netns running containers only, networks in name order, at most 4', (t) => {
  const c = (id: string, over: Partial<ContainerInfo>): ContainerInfo => ({ id, name: id, labels: {}, state: 'running', health: 'none', stopping: false, exposedPorts: [], networks: [], ...over });
  const on = (...names: string[]) => names.map((name) => ({ name, id: name, ip: '1.2.3.4', ip6: null }));
  const got = clientNetworks([
    c('x', { networks: on('nc', 'na') }),
    c('host', { networkMode: 'host', networks: on('host') }),
    c('shared', { networkMode: 'container:x' }),
    c('stopped', { state: 'exited', networks: on('na') }),
    c('unknown', { networks: on('not-listed') }),
  ], NUM);
  t.deepEqual(got, [{ id: 'x', nets: [A, C] }]);
});
