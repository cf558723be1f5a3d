import test from 'ava';
import { canonicalIp, canonicalV4Value, cidrContains, cidrLast, isLoopback, parseCidr, parseIp } from '../../../src/model/ip';

const canonical: [string, string | null][] = [
  ['10.96.0.1', '10.96.0.1'],
  [' 10.96.0.1 ', '10.96.0.1'],
  ['0.0.0.0', '0.0.0.0'],
  ['255.255.255.255', '255.255.255.255'],
  ['FD00:0096:0000:0000:0000:0000:0000:0001', 'fd00:96::1'],
  ['fd00:96::', 'fd00:96::'],
  ['::', '::'],
  ['::1', '::1'],
  ['1:0:0:2:0:0:0:3', '1:0:0:2::3'], // longest run wins
  ['1:0:0:2:0:0:3:4', '1::2:0:0:3:4'], // leftmost on a tie
  ['1:0:2:3:4:5:6:7', '1:0:2:3:4:5:6:7'], // a single zero group is not compressed
  ['::ffff:10.0.0.1', '::ffff:a00:1'],
  ['2001:db8::1.2.3.4', '2001:db8::102:304'],
  // not addresses
  ['', null],
  ['10.96.0', null],
  ['10.96.0.256', null],
  ['010.96.0.1', null],
  ['fe80::1%eth0', null],
  ['1::2::3', null],
  ['10.96.0.0/16', null],
  ['host.example', null],
];
for (const [input, want] of canonical) {
  test(`canonicalIp(${JSON.stringify(input)}) = ${want}`, (t) => {
    t.is(canonicalIp(input), want);
  });
}

test('parseCidr: canonical text, masked base, size; bad ones are null', (t) => {
  const c = parseCidr('10.96.1.2/16')!;
  t.is(c.text, '10.96.0.0/16');
  t.is(c.size, 65536n);
  t.is(parseCidr('fd00:96::/112')!.text, 'fd00:96::/112');
  t.is(parseCidr('fd00:96::/112')!.size, 65536n);
  t.is(parseCidr('0.0.0.0/0')!.size, 1n << 32n);
  for (const bad of ['10.96.0.0', '10.96.0.0/33', 'fd00::/129', '10.96.0.0/-1', 'x/8', '10.96.0.0/16/1', '']) {
    t.is(parseCidr(bad), null, bad);
  }
});

test('cidrContains respects family and both ends', (t) => {
  const c = parseCidr('10.96.0.0/16')!;
  t.true(cidrContains(c, parseIp('10.96.0.0')!));
  t.true(cidrContains(c, parseIp('10.96.255.255')!));
  t.false(cidrContains(c, parseIp('10.97.0.0')!));
  t.false(cidrContains(c, parseIp('10.95.255.255')!));
  t.false(cidrContains(c, parseIp('::a60:1')!), 'an IPv6 address is never inside an IPv4 range');
  t.is(cidrLast(c).value, parseIp('10.96.255.255')!.value);
});

test('isLoopback: 127/8, ::1 and IPv4-mapped loopback', (t) => {
  for (const a of ['127.0.0.1', '127.255.0.5', '::1', '::ffff:127.0.0.1']) t.true(isLoopback(parseIp(a)!), a);
  for (const a of ['10.96.0.1', '128.0.0.1', '::2', '::ffff:10.0.0.1']) t.false(isLoopback(parseIp(a)!), a);
});

// The hand-written scan behind the fast paths must accept exactly the canonical dotted quads
// (net.isIPv4's set) and give their value; everything else is -1 (then the slow paths decide).
const v4Values: [string, number][] = [
  ['0.0.0.0', 0],
  ['10.96.0.1', 0x0a600001],
  ['255.255.255.255', 0xffffffff],
  ['127.1.2.3', 0x7f010203],
  ['1.2.3.40', 0x01020328],
  ['', -1],
  ['1.2.3', -1],
  ['1.2.3.4.5', -1],
  ['1.2.3.256', -1],
  ['1.2.3.1000', -1],
  ['01.2.3.4', -1],
  ['1.2.3.00', -1],
  ['1..3.4', -1],
  ['.1.2.3', -1],
  ['1.2.3.', -1],
  [' 1.2.3.4', -1],
  ['1.2.3.4/32', -1],
  ['::ffff:1.2.3.4', -1],
  ['1.2.3.-4', -1],
  ['1.2.3.a', -1],
];
for (const [input, want] of v4Values) {
  test(`canonicalV4Value(${JSON.stringify(input)}) = ${want}`, (t) => {
    t.is(canonicalV4Value(input), want);
  });
}
