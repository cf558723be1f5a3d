import test from 'ava';
import type { Service } from '../../../src/model/types';
import { plan, currentFrom, countOps, frontendId, type CurrentState, type Op, type Plan, type Limits, DEFAULT_LIMITS } from '../../../src/datapath/plan';
import type { BackendAddr, SvcKey, SvcVal } from '../../../src/datapath/codec';

/** An in-memory stand-in for the two maps, checking after every op what a concurrent connect() relies on. */
class FakeMaps {
  svc = new Map<string, { key: SvcKey; val: SvcVal }>();
  be = new Map<number, BackendAddr>();
  private k(key: SvcKey): string { return `${frontendId(key)}#${key.slot}`; }
  apply(op: Op): void {
    switch (op.op) {
      case 'backend-put': this.be.set(op.id, op.addr); break;
      case 'backend-del': this.be.delete(op.id); break;
      case 'svc-put': this.svc.set(this.k(op.key), { key: op.key, val: op.val }); break;
      case 'svc-del': this.svc.delete(this.k(op.key)); break;
      case 'counter-reset': break;
    }
    this.checkConsistent();
  }
  /** Every master's slots 1..count exist and name existing backends. */
  checkConsistent(): void {
    for (const { key, val } of this.svc.values()) {
      if (key.slot !== 0) continue;
      for (let s = 1; s <= val.count; s++) {
        const slot = this.svc.get(this.k({ ...key, slot: s }));
        if (!slot) throw new Error(`${frontendId(key)}: master count ${val.count} but slot ${s} missing`);
        if (!this.be.has(slot.val.id)) throw new Error(`${frontendId(key)} slot ${s}: backend ${slot.val.id} missing`);
      }
    }
  }
  current(): CurrentState {
    return currentFrom([...this.svc.values()], [...this.be].map(([id, addr]) => ({ id, addr })));
  }
  run(p: Plan): void {
    for (const ops of p.perService.values()) for (const op of ops) this.apply(op);
    for (const op of p.cleanup) this.apply(op);
  }
  /** What a connect to vip:port/proto can reach. */
  reach(vip: string, port: number, protocol: 'tcp' | 'udp'): { flags: number; backends: string[] } | null {
    const m = this.svc.get(this.k({ vip, port, protocol, slot: 0 }));
    if (!m) return null;
    const backends: string[] = [];
    for (let s = 1; s <= m.val.count; s++) {
      const a = this.be.get(this.svc.get(this.k({ vip, port, protocol, slot: s }))!.val.id)!;
      backends.push(`${a.ip}:${a.port}`);
    }
    return { flags: m.val.flags, backends: backends.sort() };
  }
}

function svc(name: string, vip: string, vip6: string | null, backends: [string, string | null][], ports: Service['ports'] = [{ port: 80, protocol: 'tcp', targetPort: 8080 }]): Service {
  return {
    name, kind: 'service', vip, vip6, ports, routes: [], ingress: null, errors: [],
    backends: backends.map(([ip, ip6], i) => ({ container: `${name}-${i}`, id: `${name}${i}`, ip, ip6 })),
  };
}

function ingress(name: string, vip: string, vip6: string | null, proxyPort: number | null): Service {
  return {
    name, kind: 'ingress', vip, vip6, ports: [{ port: 80, protocol: 'tcp', targetPort: 80 }], backends: [], routes: [], errors: [],
    ingress: { listen: 80, publish: null, proxyPort },
  };
}

function sync(m: FakeMaps, services: Service[], prune = true, limits: Limits = DEFAULT_LIMITS): Plan {
  const p = plan(services, m.current(), { prune }, limits);
  m.run(p);
  return p;
}

const web = svc('web', '10.96.0.10', 'fd00:96::a', [['172.17.0.2', 'fd00:1::2'], ['172.17.0.3', 'fd00:1::3']]);

test('empty maps -> a dual-stack service: backends, slots, masters; ids from 1', (t) => {
  const m = new FakeMaps();
  const p = sync(m, [web]);
  t.deepEqual(p.errors, []);
  t.deepEqual(countOps(p), { updates: 4 + 4 + 2 + 1, deletes: 0 }); // 4 backends, 4 slots, 2 masters, 1 counter reset
  t.is(p.serviceIds.get('web'), 1);
  t.deepEqual(m.reach('10.96.0.10', 80, 'tcp'), { flags: 0, backends: ['172.17.0.2:8080', '172.17.0.3:8080'] });
  t.deepEqual(m.reach('fd00:96::a', 80, 'tcp'), { flags: 0, backends: ['fd00:1::2:8080', 'fd00:1::3:8080'] });
  t.is(m.reach('10.96.0.10', 80, 'udp'), null);
  t.deepEqual([...m.be.keys()].sort(), [1, 2, 3, 4]);
});

test('a second identical sync writes nothing (level-triggered, minimal)', (t) => {
  const m = new FakeMaps();
  sync(m, [web]);
  const again = sync(m, [web]);
  t.deepEqual(countOps(again), { updates: 0, deletes: 0 });
});

test('adoption: a fresh planner over maps left by an earlier run keeps every id and writes nothing', (t) => {
  const m = new FakeMaps();
  const other = svc('db', '10.96.0.20', null, [['172.17.0.9', null]], [{ port: 5432, protocol: 'tcp', targetPort: 5432 }]);
  const first = sync(m, [web, other]);
  const restarted = plan([other, web], m.current(), { prune: true });
  t.deepEqual(countOps(restarted), { updates: 0, deletes: 0 });
  t.deepEqual(restarted.serviceIds, first.serviceIds);
});

test('adding a backend writes its backend, one slot and the master only', (t) => {
  const m = new FakeMaps();
  sync(m, [web]);
  const grown = svc('web', '10.96.0.10', null, [['172.17.0.2', null], ['172.17.0.3', null], ['172.17.0.4', null]]);
  const p = sync(m, [grown], false);
  const ops = [...p.perService.get('web')!];
  t.deepEqual(ops.map((o) => o.op), ['backend-put', 'svc-put', 'svc-put']);
  t.is((ops[1] as { key: SvcKey }).key.slot, 3);
  t.is((ops[2] as { key: SvcKey }).key.slot, 0);
  t.deepEqual(m.reach('10.96.0.10', 80, 'tcp')!.backends, ['172.17.0.2:8080', '172.17.0.3:8080', '172.17.0.4:8080']);
});

test('removing a backend: master count first, then the slot, then the backend; it is reported for UDP destroy', (t) => {
  const m = new FakeMaps();
  sync(m, [web]);
  const shrunk = svc('web', '10.96.0.10', 'fd00:96::a', [['172.17.0.2', 'fd00:1::2']]);
  const p = sync(m, [shrunk]);
  t.deepEqual(m.reach('10.96.0.10', 80, 'tcp')!.backends, ['172.17.0.2:8080']);
  t.deepEqual(p.removedBackends.map((b) => `${b.addr.ip}:${b.addr.port}`).sort(), ['172.17.0.3:8080', 'fd00:1::3:8080']);
  t.deepEqual(p.cleanup.map((o) => o.op), ['backend-del', 'backend-del']);
  t.is(m.be.size, 2);
});

test('zero backends keeps the frontend with count 0 (connect is refused, not sent off-host)', (t) => {
  const m = new FakeMaps();
  sync(m, [web]);
  sync(m, [svc('web', '10.96.0.10', null, [])]);
  t.deepEqual(m.reach('10.96.0.10', 80, 'tcp'), { flags: 0, backends: [] });
  t.is(m.reach('fd00:96::a', 80, 'tcp'), null, 'the dropped VIP6 is gone');
  t.is(m.be.size, 0);
});

test('prune=true removes services nobody wants; prune=false never deletes', (t) => {
  const m = new FakeMaps();
  const db = svc('db', '10.96.0.20', null, [['172.17.0.9', null]]);
  sync(m, [web, db]);
  const keep = sync(m, [db], false);
  t.is(countOps(keep).deletes, 0);
  t.truthy(m.reach('10.96.0.10', 80, 'tcp'));
  // prune=false also keeps a wanted service's current backends next to new ones.
  const p = sync(m, [svc('db', '10.96.0.20', null, [['172.17.0.10', null]])], false);
  t.is(countOps(p).deletes, 0);
  t.deepEqual(m.reach('10.96.0.20', 80, 'tcp')!.backends, ['172.17.0.10:8080', '172.17.0.9:8080']);
  sync(m, [db], true);
  t.is(m.reach('10.96.0.10', 80, 'tcp'), null);
  t.deepEqual(m.reach('10.96.0.20', 80, 'tcp')!.backends, ['172.17.0.9:8080']);
  t.is(m.be.size, 1);
});

test('service ids stay put when another service goes away; a new service gets a free id and a counter reset', (t) => {
  const m = new FakeMaps();
  const a = svc('a', '10.96.0.1', null, [['172.17.0.2', null]]);
  const b = svc('b', '10.96.0.2', null, [['172.17.0.3', null]]);
  const c = svc('c', '10.96.0.3', null, [['172.17.0.4', null]]);
  const p1 = sync(m, [a, b, c]);
  const p2 = sync(m, [b, c]);
  t.is(p2.serviceIds.get('b'), p1.serviceIds.get('b'));
  t.is(p2.serviceIds.get('c'), p1.serviceIds.get('c'));
  const d = svc('d', '10.96.0.4', null, [['172.17.0.5', null]]);
  const p3 = sync(m, [b, c, d]);
  t.is(p3.serviceIds.get('d'), p1.serviceIds.get('a'), 'the freed id is reused');
  t.deepEqual(p3.perService.get('d')![0], { op: 'counter-reset', id: p3.serviceIds.get('d')! });
});

test('a VIP moved to another service keeps no stale id sharing', (t) => {
  const m = new FakeMaps();
  sync(m, [svc('a', '10.96.0.1', null, [['172.17.0.2', null]])]);
  const p = sync(m, [svc('a', '10.96.0.5', null, [['172.17.0.2', null]]), svc('b', '10.96.0.1', null, [['172.17.0.3', null]])]);
  t.not(p.serviceIds.get('a'), p.serviceIds.get('b'));
  t.deepEqual(m.reach('10.96.0.1', 80, 'tcp')!.backends, ['172.17.0.3:8080']);
  t.deepEqual(m.reach('10.96.0.5', 80, 'tcp')!.backends, ['172.17.0.2:8080']);
});

test('ingress: host-netns-only frontends to loopback (v4-mapped for the VIP6); no proxy port yet -> no backend', (t) => {
  const m = new FakeMaps();
  sync(m, [ingress('shop', '10.96.0.30', 'fd00:96::1e', 15001)]);
  t.deepEqual(m.reach('10.96.0.30', 80, 'tcp'), { flags: 1, backends: ['127.0.0.1:15001'] });
  t.deepEqual(m.reach('fd00:96::1e', 80, 'tcp'), { flags: 1, backends: ['::ffff:127.0.0.1:15001'] });
  sync(m, [ingress('shop', '10.96.0.30', null, null)]);
  t.deepEqual(m.reach('10.96.0.30', 80, 'tcp'), { flags: 1, backends: [] });
});

test('UDP and TCP ports of one service are separate frontends sharing one service id', (t) => {
  const m = new FakeMaps();
  const dns = svc('dns', '10.96.0.53', null, [['172.17.0.2', null]], [{ port: 53, protocol: 'udp' as const, targetPort: 5353 }, { port: 53, protocol: 'tcp' as const, targetPort: 5353 }]);
  const p = sync(m, [dns]);
  t.deepEqual(m.reach('10.96.0.53', 53, 'udp')!.backends, ['172.17.0.2:5353']);
  t.deepEqual(m.reach('10.96.0.53', 53, 'tcp')!.backends, ['172.17.0.2:5353']);
  t.is(m.be.size, 1, 'one backend entry for the same address:port');
  t.is(p.serviceIds.size, 1);
});

test('a frontend claimed by two services goes to the first by name; the other gets an error', (t) => {
  const m = new FakeMaps();
  const p = sync(m, [svc('zeta', '10.96.0.1', null, [['172.17.0.3', null]]), svc('alpha', '10.96.0.1', null, [['172.17.0.2', null]])]);
  t.deepEqual(m.reach('10.96.0.1', 80, 'tcp')!.backends, ['172.17.0.2:8080']);
  t.deepEqual(p.errors.map((e) => e.service), ['zeta']);
  t.regex(p.errors[0].error, /already service alpha/);
});

test('limits: too many backends are capped with an error; running out of service ids fails only that service', (t) => {
  const m = new FakeMaps();
  const many = svc('many', '10.96.0.1', null, [['172.17.0.2', null], ['172.17.0.3', null], ['172.17.0.4', null]]);
  const small: Limits = { maxServiceIds: 3, maxBackends: 100, maxSlots: 2 };
  const p = sync(m, [many, svc('x', '10.96.0.2', null, [['172.17.0.9', null]]), svc('y', '10.96.0.3', null, [['172.17.0.8', null]])], true, small);
  t.is(m.reach('10.96.0.1', 80, 'tcp')!.backends.length, 2);
  t.true(p.errors.some((e) => e.service === 'many' && /at most 2/.test(e.error)));
  t.true(p.errors.some((e) => e.service === 'y' && /no free service id/.test(e.error)));
  t.truthy(m.reach('10.96.0.2', 80, 'tcp'), 'x still programmed');
});

test('orphan slots (no master, an interrupted earlier write) are removed by a pruning sync', (t) => {
  const m = new FakeMaps();
  m.be.set(7, { ip: '172.17.0.7', port: 80 });
  m.svc.set('tcp/10.96.0.99/80#1', { key: { vip: '10.96.0.99', port: 80, protocol: 'tcp', slot: 1 }, val: { id: 7, count: 0, flags: 0 } });
  const p = sync(m, []);
  t.is(m.svc.size, 0);
  t.is(m.be.size, 0);
  t.is(countOps(p).deletes, 2);
});
