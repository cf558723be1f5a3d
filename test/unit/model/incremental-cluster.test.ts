/**
 * Cluster mode's input to the incremental model (IncrementalModel.setClusterVips): the cluster's
 * VIP assignments re-run the placement, and every later step, a service placed while they are
 * set included, gives what buildDesiredState gives from scratch with the same store and
 * clusterVips. (The random property test, incremental.test.ts, covers the single host.)
 */
import test from 'ava';
import { buildDesiredState, type ClusterVip } from '../../../src/model/desired';
import { IncrementalModel } from '../../../src/model/incremental';
import { VipStore } from '../../../src/model/vipstore';
import type { ContainerInfo } from '../../../src/model/types';
import { CIDRS, HOST, container, snapshot } from './fixtures';

const svc = (name: string) => ({ 'berth.service': name, 'berth.ports': '80:8080' });

function rebuild(containers: ContainerInfo[], store: VipStore, clusterVips: ClusterVip[]) {
  return buildDesiredState(snapshot(containers), HOST, { ...CIDRS, store: VipStore.inMemory(store.list()), clusterVips });
}

function vips(services: { name: string; vip: string; vip6: string | null }[]): string[] {
  return services.map((s) => `${s.name}=${s.vip},${s.vip6}`);
}

test('cluster VIPs: the incremental model equals a rebuild after each step, and a name the cluster holds is never taken', (t) => {
  const home = (name: string) => rebuild([container(`${name}-1`, svc(name))], VipStore.inMemory(), []).services[0];
  const apiHome = home('api');
  const dbHome = home('db');
  const store = VipStore.inMemory();
  const model = new IncrementalModel({ ...CIDRS, store }, HOST);
  const api = container('api-1', svc('api'), { created: 1 });
  const web = container('web-1', svc('web'), { created: 2 });
  const db = container('db-1', svc('db'), { created: 3 });
  model.resync(snapshot([api, web]), HOST);
  t.deepEqual(vips(model.services()), vips(rebuild([api, web], store, []).services));
  t.is(model.get('service', 'api')!.vip, apiHome.vip);

  // Steps: (cluster VIPs to set or null, containers to add). Names "other"/"far" have no
  // containers here; their VIPs are api's and db's hash homes.
  const other: ClusterVip = { kind: 'service', name: 'other', vip: apiHome.vip, vip6: apiHome.vip6 };
  const far: ClusterVip = { kind: 'service', name: 'far', vip: dbHome.vip, vip6: dbHome.vip6 };
  const steps: [string, ClusterVip[] | null, ContainerInfo[]][] = [
    ['assignments arrive: api moves off the VIP the cluster gave "other"', [other, far], []],
    ['db appears while they are set: it avoids "far"\'s VIP (its hash home; not placed alone)', null, [db]],
    ['"far" released', [other], []],
    ['assignments gone', [], []],
  ];
  let current: ClusterVip[] = [];
  let containers = [api, web];
  for (const [what, cv, add] of steps) {
    const before = VipStore.inMemory(store.list());
    if (cv) {
      current = cv;
      model.setClusterVips(store, cv);
    }
    if (add.length) {
      containers = [...containers, ...add];
      model.apply(add, []);
    }
    const want = rebuild(containers, before, current);
    t.deepEqual(vips(model.services()), vips(want.services), what);
    t.deepEqual(model.labelErrors(), want.labelErrors, what);
    for (const c of current) {
      for (const s of model.services()) if (s.name !== c.name) t.not(s.vip, c.vip, `${what}: ${s.name} took ${c.name}'s VIP`);
    }
  }
  t.not(model.get('service', 'api')!.vip, apiHome.vip, 'api left the VIP the cluster gave "other"');
});

test('without cluster VIPs setClusterVips([]) changes nothing (single-host placement kept)', (t) => {
  const store = VipStore.inMemory();
  const model = new IncrementalModel({ ...CIDRS, store }, HOST);
  const cs = [container('a-1', svc('a'), { created: 1 }), container('b-1', svc('b'), { created: 2 })];
  model.resync(snapshot(cs), HOST);
  const before = vips(model.services());
  const d = model.setClusterVips(store, []);
  t.deepEqual(d.changed, []);
  t.deepEqual(d.removed, []);
  t.deepEqual(vips(model.services()), before);
});
