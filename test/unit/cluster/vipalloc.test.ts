import test from 'ava';
import { claimVip, type ClaimRequest } from '../../../src/cluster/vipalloc';
import { keyLayout } from '../../../src/cluster/keys';
import { FakeKv } from './fake-kv';

const keys = keyLayout('/berth');
const req = (name: string, vip: string, extra: Partial<ClaimRequest> = {}): ClaimRequest => ({
  kind: 'service', name, vip, vip6: null, pinned: false, node: 'h1', ...extra,
});

test('first claim creates the assignment and the owner index in one transaction', async (t) => {
  const kv = new FakeKv();
  const r = await claimVip(kv, keys, req('web', '10.96.0.5', { vip6: 'fd00:96::5' }));
  t.is(r.result, 'created');
  t.is(kv.txns, 1);
  t.like(kv.json('/berth/vips/service/web'), { version: 1, kind: 'service', name: 'web', vip: '10.96.0.5', vip6: 'fd00:96::5', pinned: false, by: 'h1' });
  t.like(kv.json('/berth/vip-owners/10.96.0.5'), { kind: 'service', name: 'web' });
  t.like(kv.json('/berth/vip-owners/fd00:96::5'), { kind: 'service', name: 'web' });
});

test('same name from another host: the existing assignment wins, nothing is written', async (t) => {
  const kv = new FakeKv();
  await claimVip(kv, keys, req('web', '10.96.0.5'));
  const rev = kv.revision;
  const r = await claimVip(kv, keys, req('web', '10.96.7.7', { node: 'h2' }));
  t.is(r.result, 'exists');
  t.is(r.result === 'exists' && r.record.vip, '10.96.0.5');
  t.is(kv.revision, rev);
  t.false(kv.data.has('/berth/vip-owners/10.96.7.7'));
});

test('hash collision: the address belongs to another name -> taken, with the owner', async (t) => {
  const kv = new FakeKv();
  await claimVip(kv, keys, req('web', '10.96.0.5'));
  const r = await claimVip(kv, keys, req('api', '10.96.0.5', { node: 'h2' }));
  t.deepEqual(r, { result: 'taken', addr: '10.96.0.5', owner: { kind: 'service', name: 'web' } });
  t.false(kv.data.has('/berth/vips/service/api'));
});

test('an ingress and a service of the same name are different names', async (t) => {
  const kv = new FakeKv();
  t.is((await claimVip(kv, keys, req('web', '10.96.0.5'))).result, 'created');
  t.is((await claimVip(kv, keys, req('web', '10.96.0.6', { kind: 'ingress' }))).result, 'created');
});

test('pinned VIP owned by another name -> conflict naming the owner (the same on every host)', async (t) => {
  const kv = new FakeKv();
  await claimVip(kv, keys, req('web', '10.96.0.5'));
  for (const node of ['h2', 'h3']) {
    const r = await claimVip(kv, keys, req('api', '10.96.0.5', { pinned: true, node }));
    t.is(r.result, 'conflict');
    t.is(r.result === 'conflict' && r.message, 'pinned VIP 10.96.0.5 of service api is owned in the cluster by service web; pin another address or remove the pin');
  }
});

test('a pin moves an existing hash assignment onto a free address; the old owner entry goes', async (t) => {
  const kv = new FakeKv();
  await claimVip(kv, keys, req('web', '10.96.0.5'));
  const r = await claimVip(kv, keys, req('web', '10.96.0.10', { pinned: true }));
  t.is(r.result, 'created');
  t.like(kv.json('/berth/vips/service/web'), { vip: '10.96.0.10', pinned: true });
  t.false(kv.data.has('/berth/vip-owners/10.96.0.5'));
  t.like(kv.json('/berth/vip-owners/10.96.0.10'), { name: 'web' });
  // Claiming the pinned address again is a no-op.
  t.is((await claimVip(kv, keys, req('web', '10.96.0.10', { pinned: true }))).result, 'exists');
});

test('race: two hosts claim different names for one address; exactly one wins', async (t) => {
  const kv = new FakeKv();
  // h2's transaction commits between h1's decision and its transaction.
  kv.before = async () => void (await claimVip(kv, keys, req('api', '10.96.0.5', { node: 'h2' })));
  const r = await claimVip(kv, keys, req('web', '10.96.0.5'));
  t.is(r.result, 'taken');
  t.like(kv.json('/berth/vip-owners/10.96.0.5'), { name: 'api' });
});

test('race: the assignment changes while a pin moves it -> the claim starts over and sees the new state', async (t) => {
  const kv = new FakeKv();
  await claimVip(kv, keys, req('web', '10.96.0.5'));
  let step = 0;
  const orig = kv.txn.bind(kv);
  kv.txn = async (op) => {
    step++;
    // Before the guarded move (2nd txn), another host pins web elsewhere.
    if (step === 2) await orig({ absent: [], unchanged: [['/berth/vips/service/web', String(kv.data.get('/berth/vips/service/web')!.modRevision)]], puts: [['/berth/vips/service/web', JSON.stringify({ version: 1, kind: 'service', name: 'web', vip: '10.96.0.20', vip6: null, pinned: true, by: 'h2' })]], deletes: [], read: [] });
    return orig(op);
  };
  const r = await claimVip(kv, keys, req('web', '10.96.0.10', { pinned: true }));
  t.true(step >= 3, 'retried after the guard failed');
  t.is(r.result, 'created');
  t.like(kv.json('/berth/vips/service/web'), { vip: '10.96.0.10' });
});

test('owner entries without an assignment (deleted by hand) are repaired', async (t) => {
  const kv = new FakeKv();
  await claimVip(kv, keys, req('web', '10.96.0.5'));
  kv.data.delete('/berth/vips/service/web');
  const r = await claimVip(kv, keys, req('web', '10.96.0.5'));
  t.is(r.result, 'created');
  t.true(kv.data.has('/berth/vips/service/web'));
});

test('a kv that keeps racing gives up with an error instead of looping', async (t) => {
  const kv = new FakeKv();
  kv.txn = async () => ({ succeeded: false, values: new Map() });
  await t.throwsAsync(() => claimVip(kv, keys, req('web', '10.96.0.5')), { message: /kept racing/ });
});

test('transport errors propagate (the caller retries later)', async (t) => {
  const kv = new FakeKv();
  kv.txn = async () => { throw new Error('14 UNAVAILABLE'); };
  await t.throwsAsync(() => claimVip(kv, keys, req('web', '10.96.0.5')), { message: /UNAVAILABLE/ });
});
