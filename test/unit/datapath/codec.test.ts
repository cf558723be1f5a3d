import test from 'ava';
import os from 'node:os';
import { loadNative } from '../../../src/native';
import * as codec from '../../../src/datapath/codec';

test('codec layout equals bpf/lb.h as compiled into the addon (sizes and offsets)', (t) => {
  const n = loadNative();
  t.deepEqual(codec.checkLayout(n.sizes, n.offsets), []);
  t.deepEqual({ ...n.sizes }, codec.SIZES);
  t.is(n.constants.SVC_F_HOST_NETNS, codec.SVC_F_HOST_NETNS);
  t.is(n.constants.FAMILY_V4, codec.FAMILY_V4);
  t.is(n.constants.FAMILY_V6, codec.FAMILY_V6);
});

test('checkLayout names a drifted size and offset', (t) => {
  const n = loadNative();
  const drift = codec.checkLayout({ ...n.sizes, svcKey: 28 }, { ...n.offsets, backendPort: 18 });
  t.deepEqual(drift, ['sizeof svcKey: codec 24, lb.h 28', 'offset backendPort: codec 16, lb.h 18']);
});

const ips: [string, string, string][] = [
  ['10.96.0.10', '0a60000a000000000000000000000000', '10.96.0.10'],
  ['127.0.0.1', '7f000001000000000000000000000000', '127.0.0.1'],
  ['fd00:96::5', 'fd000096000000000000000000000005', 'fd00:96::5'],
  ['FD00:0096:0000:0000:0000:0000:0000:0005', 'fd000096000000000000000000000005', 'fd00:96::5'],
  ['::1', '00000000000000000000000000000001', '::1'],
  ['::', '00000000000000000000000000000000', '::'],
  ['::ffff:127.0.0.1', '00000000000000000000ffff7f000001', '::ffff:127.0.0.1'],
  ['2001:db8:0:1:0:0:0:1', '20010db8000000010000000000000001', '2001:db8:0:1::1'],
  ['1:0:0:2:0:0:0:3', '00010000000000020000000000000003', '1:0:0:2::3'],
  ['1:2:3:4:5:6:7:8', '00010002000300040005000600070008', '1:2:3:4:5:6:7:8'],
];
for (const [ip, hex, canon] of ips) {
  test(`ip bytes and canonical text: ${ip}`, (t) => {
    t.is(codec.ipToBytes(ip).toString('hex'), hex);
    t.is(codec.canonicalIp(ip), canon);
  });
}

test('bad addresses are rejected with the address in the message', (t) => {
  for (const bad of ['10.96.0', 'fd00::96::1', 'example.com', '']) {
    const e = t.throws(() => codec.ipToBytes(bad));
    t.true(e?.message.includes(`'${bad}'`));
  }
});

test('service key: network-order VIP and port, host-order slot, round trip', (t) => {
  const k = { vip: '10.96.0.10', port: 80, protocol: 'tcp' as const, slot: 3 };
  const b = codec.encodeSvcKey(k);
  t.is(b.length, 24);
  t.is(b.subarray(0, 4).toString('hex'), '0a60000a');
  t.is(b.subarray(16, 18).toString('hex'), '0050'); // port 80, network order
  t.is(b[18], 6);
  t.is(b[19], 4);
  t.is(b.readUInt16LE(20), 3); // x86-64 host order
  t.deepEqual(codec.decodeSvcKey(b), k);
  const k6 = { vip: 'fd00:96::a', port: 53, protocol: 'udp' as const, slot: 0 };
  t.deepEqual(codec.decodeSvcKey(codec.encodeSvcKey(k6)), k6);
  t.is(codec.encodeSvcKey(k6)[19], 6);
});

test('encoders into a shared buffer write exactly what the single encoders write, at each offset', (t) => {
  const keys = [
    { vip: '10.96.0.10', port: 80, protocol: 'tcp' as const, slot: 3 },
    { vip: 'fd00:96::a', port: 53, protocol: 'udp' as const, slot: 0, net: 2 },
    { vip: '::ffff:10.0.0.1', port: 443, protocol: 'tcp' as const, slot: 1 },
    { vip: 'fd00:96::a', port: 54, protocol: 'udp' as const, slot: 1 }, // the memoized v6 again
  ];
  const kb = Buffer.alloc(24 * keys.length);
  keys.forEach((k, i) => codec.encodeSvcKeyInto(kb, i * 24, k));
  keys.forEach((k, i) => t.deepEqual(kb.subarray(i * 24, (i + 1) * 24), codec.encodeSvcKey(k), k.vip));
  const addrs = [{ ip: '172.17.0.2', port: 8080 }, { ip: 'fd00::2', port: 80 }, { ip: '::ffff:127.0.0.1', port: 15001 }];
  const bb = Buffer.alloc(20 * addrs.length);
  addrs.forEach((a, i) => codec.encodeBackendInto(bb, i * 20, a));
  addrs.forEach((a, i) => {
    t.deepEqual(bb.subarray(i * 20, (i + 1) * 20), codec.encodeBackend(a), a.ip);
    t.deepEqual(codec.decodeBackend(bb, i * 20), a);
  });
  const vb = Buffer.alloc(16);
  codec.encodeSvcValInto(vb, 8, { id: 7, count: 4, flags: 2 });
  t.deepEqual(vb.subarray(8), codec.encodeSvcVal({ id: 7, count: 4, flags: 2 }));
  t.true(vb.subarray(0, 8).every((x) => x === 0));
  // Bad addresses fail the same way through writeIp, also when asked twice (nothing memoized).
  for (const bad of ['10.96.0', 'fd00::96::1']) {
    for (let n = 0; n < 2; n++) t.throws(() => codec.encodeSvcKeyInto(Buffer.alloc(24), 0, { vip: bad, port: 1, protocol: 'tcp', slot: 0 }), { message: new RegExp(`'${bad}'`) });
  }
});

test('service value, backend, config, destroy key round trips', (t) => {
  const v = { id: 70000, count: 65535, flags: 1 };
  t.deepEqual(codec.decodeSvcVal(codec.encodeSvcVal(v)), v);
  t.is(codec.decodeBackendKey(codec.encodeBackendKey(123456)), 123456);
  for (const a of [{ ip: '172.17.0.2', port: 8080 }, { ip: 'fd00:1::2', port: 5353 }, { ip: '::ffff:127.0.0.1', port: 15001 }]) {
    const b = codec.encodeBackend(a);
    t.is(b.length, 20);
    t.deepEqual(codec.decodeBackend(b), a);
  }
  t.is(codec.encodeBackend({ ip: '::ffff:127.0.0.1', port: 1 })[18], 6);
  t.is(codec.decodeConfig(codec.encodeConfig({ hostNetnsCookie: 4096n + 3n })).hostNetnsCookie, 4099n);
  // A v4-mapped backend is keyed as IPv4, like the iterator keys a dual-stack socket's peer.
  const mapped = codec.encodeDestroyKey({ ip: '::ffff:10.1.2.3', port: 53 });
  t.deepEqual(mapped, codec.encodeDestroyKey({ ip: '10.1.2.3', port: 53 }));
  t.is(mapped[18], 4);
});

test('per-CPU counters are summed over all CPU slots', (t) => {
  const b = Buffer.alloc(16 * 3);
  b.writeBigUInt64LE(5n, 0); b.writeBigUInt64LE(1n, 8);
  b.writeBigUInt64LE(7n, 16); b.writeBigUInt64LE(0n, 24);
  b.writeBigUInt64LE(1n, 32); b.writeBigUInt64LE(2n, 40);
  t.deepEqual(codec.decodeCountersPercpu(b), { connects: 13, noBackend: 3 });
});

test('undecodable key bytes fail with a codec error', (t) => {
  const b = codec.encodeSvcKey({ vip: '10.0.0.1', port: 1, protocol: 'tcp', slot: 0 });
  b[19] = 9;
  t.throws(() => codec.decodeSvcKey(b), { instanceOf: codec.CodecError });
});

test('redirect map key: address and port in network order + padding, by family; value: listener port in host order', (t) => {
  t.deepEqual([...codec.encodeRedirKey('10.96.0.50', 80)], [10, 96, 0, 50, 0, 80, 0, 0]);
  t.is(codec.encodeRedirKey('fd00:96::32', 80).toString('hex'), 'fd000096000000000000000000000032' + '0050' + '0000');
  t.is(codec.encodeRedirKey('::ffff:10.0.0.1', 443).toString('hex'), '00000000000000000000ffff0a000001' + '01bb' + '0000');
  t.is(codec.encodeRedirKey('fe80::1%eth0', 1).toString('hex'), 'fe800000000000000000000000000001' + '0001' + '0000');
  t.is(codec.encodeRedirKey('1:2:3:4:5:6:7:8', 2).length, codec.SIZES.redir6Key);
  t.throws(() => codec.encodeRedirKey('1:2:3', 80));
  const v = codec.encodeRedirVal(18243);
  t.is(v.length, codec.SIZES.redirVal);
  t.is(os.endianness() === 'LE' ? v.readUInt16LE(0) : v.readUInt16BE(0), 18243);
  t.is(v.readUInt16BE(2), 0);
});

/** The IPv6 parse berth used before parseV6Into (net.isIPv6, then split/map): the oracle. */
const oracleV6 = codec.parseV6Split;

test('parseV6Into: the usual forms parse to the right bytes; anything else is left to net.isIPv6', (t) => {
  const cases: [string, string | null][] = [
    ['::', '00000000000000000000000000000000'],
    ['::1', '00000000000000000000000000000001'],
    ['1::', '00010000000000000000000000000000'],
    ['fd00:94::a', 'fd00009400000000000000000000000a'],
    ['FD00:94::A', 'fd00009400000000000000000000000a'],
    ['2001:db8:0:0:1:0:0:1', '20010db8000000000001000000000001'],
    ['1:2:3:4:5:6:7::', '00010002000300040005000600070000'],
    ['::2:3:4:5:6:7:8', '00000002000300040005000600070008'],
    ['::ffff:192.0.2.1', '00000000000000000000ffffc0000201'],
    ['1:2:3:4:5:6:1.2.3.4', '00010002000300040005000601020304'],
    ['::1.2.3.4', '00000000000000000000000001020304'],
    // Not parsed here (null): invalid, or a form left to the slow path (zone id).
    ['', null], [':', null], [':::', null], ['1:2', null], ['1::2::3', null], ['12345::', null], ['1:2:3:4:5:6:7:8:9', null],
    ['1:2:3:4:5:6:7:8::', null], ['::1:2:3:4:5:6:7:8', null], ['1:', null], [':1', null], ['1::2:', null], ['g::1', null],
    ['::01.2.3.4', null], ['::1.2.3', null], ['::256.1.1.1', null], ['1:2:3:4:5:6:7:1.2.3.4', null], ['1.2.3.4', null],
    ['fe80::1%eth0', null], [' ::1', null],
  ];
  for (const [text, hex] of cases) {
    const b = Buffer.alloc(20, 0xee);
    const ok = codec.parseV6Into(text, b, 2);
    t.is(ok, hex !== null, text);
    if (hex) t.is(b.subarray(2, 18).toString('hex'), hex, text);
  }
  // The slow path still takes what only net.isIPv6 knows, and rejects the rest by name.
  t.is(codec.ipToBytes('fe80::1%eth0').toString('hex'), 'fe800000000000000000000000000001');
  t.throws(() => codec.ipToBytes('1::2::3'), { message: /1::2::3/ });
});

test('parseV6Into accepts nothing net.isIPv6 rejects, and agrees with the old parse (random strings)', (t) => {
  // Deterministic LCG: the same strings every run.
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  // Mostly address-shaped: 0-9 groups joined by ':' (a '::' somewhere, sometimes two), an IPv4
  // tail now and then, and stray characters.
  const tokens = ['0', '1', 'f', 'F', 'a9', 'ffff', 'ABCD', '0000', '12345', '', 'g', '1.2.3.4', '01.2.3.4', '255.255.255.255', '1.2.3', '.'];
  let accepted = 0;
  const b = Buffer.alloc(16);
  for (let i = 0; i < 50000; i++) {
    const parts: string[] = [];
    const count = rnd(10);
    for (let k = 0; k < count; k++) parts.push(tokens[rnd(rnd(3) === 0 ? tokens.length : 8)]);
    let s = parts.join(':');
    for (let g = rnd(3); g > 0; g--) {
      const at = rnd(s.length + 1);
      s = `${s.slice(0, at)}${rnd(4) === 0 ? ':' : '::'}${s.slice(at)}`;
    }
    const ok = codec.parseV6Into(s, b, 0);
    const want = oracleV6(s);
    if (ok) {
      accepted++;
      if (!want) return t.fail(`parseV6Into accepted '${s}', net.isIPv6 does not`);
      if (!b.equals(want)) return t.fail(`'${s}': ${b.toString('hex')} != ${want.toString('hex')}`);
    }
  }
  t.true(accepted > 1000, `only ${accepted} valid strings generated`);
  // And every address the model formats (canonical, compressed) takes the fast path.
  for (const a of ['fd00:94::1', 'fd00:94::ffff', 'fd00::94:0:1', '2001:db8::']) t.true(codec.parseV6Into(a, b, 0), a);
});
