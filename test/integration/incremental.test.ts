/**
 * The incremental control plane on REAL pinned maps (issue 11 part 4, integration variant): a
 * seeded random sequence of container events (test/helpers/churn.ts) drives the incremental model
 * and Datapath.update() (only the changed services, planned against berth's view), and after each
 * step a full Datapath.sync() (dump, compare with the view, full plan) must find no drift and
 * need no write. Then an entry deleted behind berth's back is found, reported and repaired by the
 * next full sync. Own pin dir and VIP range; everything is removed afterwards.
 */
import test from 'ava';
import path from 'node:path';
import { Datapath } from '../../src/datapath';
import * as codec from '../../src/datapath/codec';
import { loadNative } from '../../src/native';
import { IncrementalModel } from '../../src/model/incremental';
import { VipStore } from '../../src/model/vipstore';
import type { DatapathOptions } from '../../src/datapath/types';
import type { NetworkInfo, Service } from '../../src/model/types';
import { silentLogger } from '../../src/util/log';
import { rng, step, type World } from '../helpers/churn';
import { hostAsBefore } from '../helpers/cleanup';

const OPTS: DatapathOptions = {
  pinDir: '/sys/fs/bpf/berth-test-incr',
  cgroupRoot: 'auto',
  hostProc: '/proc',
  runDir: '/run/berth-test-incr',
  serviceCidr: '10.217.0.0/28',
  serviceCidr6: 'fd00:217::/124',
  logger: silentLogger(),
};
const NETS: NetworkInfo[] = [
  { id: 'n-a', name: 'a', subnets: ['172.17.0.0/16'], gateways: ['172.17.0.1'] },
  { id: 'n-b', name: 'b', subnets: ['172.18.0.0/16', '10.217.0.8/30'], gateways: ['172.18.0.1'] },
];
const HOST = { addresses: ['127.0.0.1', '::1', '10.217.0.5'] };

let dp: Datapath | null = null;

test.after.always(async () => {
  dp?.close();
  await Datapath.cleanup(OPTS);
});

// After the file's own cleanup hook, before its setup hook (AVA runs hooks in declaration order).
hostAsBefore(test, { ownLeftovers: /berth-test-incr\b|10\.217\.0\.0\/28|fd00:217::\/124|^bpftoolCgroupTree: - \S+ \S+ multi berth_/ });

test.before(async () => {
  await Datapath.cleanup(OPTS); // a leftover of a crashed earlier run of this suite only
  dp = await Datapath.open(OPTS);
});

test('random events on real maps: each incremental update leaves nothing for a full sync to repair; drift made behind berth\'s back is found and repaired', async (t) => {
  const d = dp!;
  const r = rng(Number(process.env.BERTH_FUZZ_SEED ?? 7));
  const world: World = { containers: new Map(), order: [], next: 1, vipPrefix: '10.217.0', vip6Prefix: 'fd00:217:' };
  const model = new IncrementalModel({ serviceCidr: OPTS.serviceCidr, serviceCidr6: OPTS.serviceCidr6, store: VipStore.inMemory() }, HOST);
  model.apply([], [], { networks: NETS });
  const first = await d.sync(model.services(), { prune: true });
  t.deepEqual(first.errors, []);
  let updates = 0;
  for (let i = 0; i < 60; i++) {
    const ev = step(r, world);
    const delta = model.apply(ev.upserts, ev.removed);
    const names = new Set([...delta.changed, ...delta.removed].map((x) => x.name));
    const changed: Service[] = [];
    const removed: string[] = [];
    for (const n of names) {
      const mine = model.services().filter((s) => s.name === n);
      if (mine.length) changed.push(...mine); else removed.push(n);
    }
    const u = await d.update(changed, removed);
    updates += u.updates + u.deletes;
    const full = await d.sync(model.services(), { prune: true });
    const where = `step ${i} (${ev.what})`;
    t.deepEqual(full.drift, { serviceEntries: 0, backends: 0, plan: 0 }, `${where}: the full sync found drift after the incremental update`);
    if (full.drift?.plan) return;
  }
  t.true(updates > 0, 'the sequence wrote something');

  // Behind berth's back: delete one service-map entry of a service with a backend.
  const svc = model.services().find((s) => s.kind === 'service' && s.backends.some((b) => b.ip));
  t.truthy(svc, 'a service with an IPv4 backend exists');
  const n = loadNative();
  const fd = n.objGet(path.join(OPTS.pinDir, 'berth_services'));
  try {
    n.mapDelete(fd, codec.encodeSvcKey({ vip: svc!.vip, port: svc!.ports[0].port, protocol: svc!.ports[0].protocol, slot: 1 }));
  } finally {
    n.closeFd(fd);
  }
  const repair = await d.sync(model.services(), { prune: true });
  t.is(repair.drift?.serviceEntries, 1, 'the deleted slot is reported as drift');
  t.true((repair.drift?.plan ?? 0) >= 1, 'and rewritten');
  const again = await d.sync(model.services(), { prune: true });
  t.deepEqual(again.drift, { serviceEntries: 0, backends: 0, plan: 0 }, 'repaired');
});
