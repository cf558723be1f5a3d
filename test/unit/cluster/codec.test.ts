import test from 'ava';
import {
  decodeNode, decodeService, decodeVip, decodeVipOwner, encodeNode, encodeService, encodeVip, recordRules,
} from '../../../src/cluster/codec';
import { keyLayout, parseKey } from '../../../src/cluster/keys';

const rules = recordRules('10.96.0.0/16', 'fd00:96::/112');
const keys = keyLayout('/berth');

test('keys: layout and parse round trip; foreign keys are not berth\'s', (t) => {
  t.is(keys.node('h1'), '/berth/nodes/h1');
  t.is(keys.service('service', 'web', 'h1'), '/berth/services/service/web/h1');
  t.is(keys.vip('ingress', 'shop'), '/berth/vips/ingress/shop');
  t.is(keys.vipOwner('fd00:96::5'), '/berth/vip-owners/fd00:96::5');
  t.deepEqual(parseKey('/berth', keys.service('service', 'web', 'h1')), { type: 'service', kind: 'service', name: 'web', node: 'h1' });
  t.deepEqual(parseKey('/berth', keys.vipOwner('fd00:96::5')), { type: 'vipOwner', addr: 'fd00:96::5' });
  for (const k of ['/berthx/nodes/h1', '/other/nodes/h1', '/berth/nodes/', '/berth/nodes/a/b', '/berth/services/pod/web/h1', '/berth/vips/service', '/berth/unknown/x']) {
    t.is(parseKey('/berth', k), null, k);
  }
});

const svcKey = parseKey('/berth', '/berth/services/service/web/h1') as Extract<ReturnType<typeof parseKey>, { type: 'service' }>;
const goodSvc = {
  kind: 'service' as const, name: 'web', node: 'h1', vip: '10.96.0.5', vip6: 'fd00:96::5',
  ports: [{ port: 80, protocol: 'tcp' as const, targetPort: 8080 }],
  backends: [{ container: 'web-1', id: 'abc', ip: '172.18.0.2', ip6: null }],
};

test('service record: encode/decode round trip, addresses canonicalised', (t) => {
  const d = decodeService('k', svcKey, encodeService(goodSvc), rules);
  t.deepEqual(d, { ok: true, record: goodSvc });
  const loose = JSON.parse(encodeService(goodSvc));
  loose.vip6 = 'FD00:96:0::5';
  const d2 = decodeService('k', svcKey, JSON.stringify(loose), rules);
  t.true(d2.ok && d2.record.vip6 === 'fd00:96::5');
});

const badSvc: [string, (o: Record<string, unknown>) => unknown, RegExp][] = [
  ['VIP outside the local range', (o) => ({ ...o, vip: '10.200.0.5' }), /names VIP 10.200.0.5 \(vip\) outside this host's range 10.96.0.0\/16/],
  ['VIP6 outside the local range', (o) => ({ ...o, vip6: 'fd00:97::5' }), /VIP fd00:97::5 \(vip6\) outside/],
  ['backend inside the VIP range', (o) => ({ ...o, backends: [{ container: 'c', id: 'x', ip: '10.96.3.3', ip6: null }] }), /backends\[0\] address 10.96.3.3 inside the VIP range 10.96.0.0\/16/],
  ['backend6 inside the VIP range', (o) => ({ ...o, backends: [{ container: 'c', id: 'x', ip: null, ip6: 'fd00:96::9' }] }), /inside the VIP range fd00:96::\/112/],
  ['backend without address', (o) => ({ ...o, backends: [{ container: 'c', id: 'x', ip: null, ip6: null }] }), /backends\[0\] has no address/],
  ['newer version', (o) => ({ ...o, version: 2 }), /has version 2; this berth reads version 1/],
  ['no version', (o) => ({ ...o, version: undefined }), /has version undefined/],
  ['name differs from key', (o) => ({ ...o, name: 'api' }), /says name "api" but its key says "web"/],
  ['node differs from key', (o) => ({ ...o, node: 'h2' }), /says node "h2" but its key says "h1"/],
  ['kind differs from key', (o) => ({ ...o, kind: 'ingress' }), /says kind "ingress"/],
  ['bad port', (o) => ({ ...o, ports: [{ port: 0, protocol: 'tcp', targetPort: 1 }] }), /ports\[0\].port must be a port number/],
  ['bad protocol', (o) => ({ ...o, ports: [{ port: 1, protocol: 'sctp', targetPort: 1 }] }), /ports\[0\].protocol/],
  ['no ports', (o) => ({ ...o, ports: [] }), /"ports" must be a non-empty array/],
  ['vip not v4', (o) => ({ ...o, vip: 'fd00:96::1' }), /"vip" must be an IPv4 address/],
  ['vip garbage', (o) => ({ ...o, vip: '10.96.0.300' }), /"vip" must be an IPv4 address/],
  ['not an object', () => [1, 2], /is not a JSON object/],
];
for (const [name, mutate, re] of badSvc) {
  test(`service record rejected: ${name}`, (t) => {
    const o = JSON.parse(encodeService(goodSvc)) as Record<string, unknown>;
    const d = decodeService('/berth/services/service/web/h1', svcKey, JSON.stringify(mutate(o)), rules);
    t.false(d.ok);
    if (!d.ok) {
      t.regex(d.error, re);
      t.regex(d.error, /^record \/berth\/services\/service\/web\/h1 .*; ignored$/);
    }
  });
}

test('service record rejected: not JSON', (t) => {
  const d = decodeService('k', svcKey, '{oops', rules);
  t.deepEqual(d, { ok: false, error: 'record k is not JSON; ignored' });
});

const nodeKey = { type: 'node' as const, node: 'h1' };
const goodNode = { name: 'h1', address: '192.168.1.10', subnets: ['172.18.0.0/16'], berth: '0.1.0', startedAt: '2026-01-01T00:00:00.000Z' };

test('node record: round trip; subnets canonicalised', (t) => {
  t.deepEqual(decodeNode('k', nodeKey, encodeNode(goodNode), rules), { ok: true, record: goodNode });
  const d = decodeNode('k', nodeKey, encodeNode({ ...goodNode, subnets: ['172.18.5.0/16'] }), rules);
  t.true(d.ok && d.record.subnets[0] === '172.18.0.0/16');
});

const badNode: [string, Partial<typeof goodNode> | Record<string, unknown>, RegExp][] = [
  ['address inside the VIP range', { address: '10.96.0.1' }, /node address 10.96.0.1 inside the VIP range/],
  ['address not an IP', { address: 'host-1' }, /"address" must be an IP address/],
  ['subnet overlapping the VIP range', { subnets: ['10.0.0.0/8'] }, /container subnet 10.0.0.0\/8, which overlaps the VIP range 10.96.0.0\/16/],
  ['subnet inside the VIP range', { subnets: ['10.96.5.0/24'] }, /overlaps the VIP range/],
  ['subnet garbage', { subnets: ['172.18.0.0'] }, /subnet "172.18.0.0" is not a CIDR/],
  ['subnets not an array', { subnets: '172.18.0.0/16' }, /"subnets" must be an array/],
  ['name differs from key', { name: 'h2' }, /says name "h2" but its key says "h1"/],
];
for (const [name, patch, re] of badNode) {
  test(`node record rejected: ${name}`, (t) => {
    const d = decodeNode('k', nodeKey, JSON.stringify({ version: 1, ...goodNode, ...patch }), rules);
    t.false(d.ok);
    if (!d.ok) t.regex(d.error, re);
  });
}

test('vip and vip-owner records', (t) => {
  const vk = { type: 'vip' as const, kind: 'service' as const, name: 'web' };
  const rec = { kind: 'service' as const, name: 'web', vip: '10.96.0.5', vip6: null, pinned: true, by: 'h1' };
  t.deepEqual(decodeVip('k', vk, encodeVip(rec), rules), { ok: true, record: rec });
  t.false(decodeVip('k', vk, encodeVip({ ...rec, vip: '192.168.0.1' }), rules).ok);
  t.false(decodeVip('k', vk, JSON.stringify({ version: 1, ...rec, pinned: 'yes' }), rules).ok);
  const ok = decodeVipOwner('k', { type: 'vipOwner', addr: '10.96.0.5' }, '{"version":1,"kind":"service","name":"web"}', rules);
  t.deepEqual(ok, { ok: true, record: { kind: 'service', name: 'web' } });
  const notCanonical = decodeVipOwner('k', { type: 'vipOwner', addr: 'FD00:96::5' }, '{"version":1,"kind":"service","name":"web"}', rules);
  t.false(notCanonical.ok);
  const outside = decodeVipOwner('k', { type: 'vipOwner', addr: '10.97.0.5' }, '{"version":1,"kind":"service","name":"web"}', rules);
  t.false(outside.ok);
});
