import test from 'ava';
import { chainRules, bridgeRules, CHAIN } from '../../../src/proxy/iptables';
import { defaultInterfaces, mapEntries } from '../../../src/proxy/tc';
import { encodeRedirKey, encodeRedirVal } from '../../../src/datapath/codec';
import { proxyMark } from '../../../src/proxy/routing';
import type { RedirectEntry } from '../../../src/proxy/redirect-types';

const basic: RedirectEntry = { ingress: 'basic', vip: '10.96.0.50', vip6: 'fd00:96::32', listen: 80, publish: 31907, listenerPort: 18243 };
const admin: RedirectEntry = { ingress: 'admin', vip: '10.96.0.51', vip6: null, listen: 8080, publish: null, listenerPort: 15001 };

test('Cilium\'s mark: (port << 16) | 0x200, seed 002\'s example', (t) => {
  t.is(proxyMark(18243), 0x43470200);
  t.is(proxyMark(65535) & 0xf00, 0x200);
});

test('TPROXY rules: VIP:listen and LOCAL:publish, in iptables -S form, sorted by ingress', (t) => {
  t.deepEqual(chainRules([basic, admin], 4), [
    `-A ${CHAIN} -d 10.96.0.51/32 -p tcp -m tcp --dport 8080 -m comment --comment berth -j TPROXY --on-port 15001 --on-ip 0.0.0.0 --tproxy-mark 0x993a0200/0xffffffff`,
    `-A ${CHAIN} -d 10.96.0.50/32 -p tcp -m tcp --dport 80 -m comment --comment berth -j TPROXY --on-port 18243 --on-ip 0.0.0.0 --tproxy-mark 0x43470200/0xffffffff`,
    `-A ${CHAIN} -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 31907 -m comment --comment berth -j TPROXY --on-port 18243 --on-ip 0.0.0.0 --tproxy-mark 0x43470200/0xffffffff`,
  ]);
  t.deepEqual(chainRules([admin], 6), [], 'no IPv6 VIP, no publish: nothing for ip6tables');
  t.deepEqual(chainRules([basic], 6)[0], `-A ${CHAIN} -d fd00:96::32/128 -p tcp -m tcp --dport 80 -m comment --comment berth -j TPROXY --on-port 18243 --on-ip :: --tproxy-mark 0x43470200/0xffffffff`);
  t.true(chainRules([basic, admin], 4).every((r) => r.includes('--comment berth')));
});

test('tc map content: one VIP key per ingress and one publish key per host address', (t) => {
  const both = mapEntries([basic, admin], ['192.0.2.2', '172.17.0.1', 'fd00::2']);
  t.is(both.v6.size, 2, 'the IPv6 VIP and the host\'s IPv6 address on the publish port');
  t.true(both.v6.has(encodeRedirKey('fd00::2', 31907).toString('hex').replace(/(..)/g, '$1 ').trim()));
  const m = both.v4;
  t.is(m.size, 4);
  t.true(m.has('0a 60 00 32 00 50 00 00'));
  t.true(m.has('c0 00 02 02 7c a3 00 00'), 'host address : 31907');
  t.true(m.has('ac 11 00 01 7c a3 00 00'));
  t.is(m.get('0a 60 00 33 1f 90 00 00'), [...encodeRedirVal(15001)].map((x) => x.toString(16).padStart(2, '0')).join(' '));
});

test('default tc attach points: Ethernet, not loopback, not bridge ports, not ifb', (t) => {
  t.deepEqual(defaultInterfaces([
    { ifname: 'lo', ifindex: 1, link_type: 'loopback' },
    { ifname: 'eth0', ifindex: 2, link_type: 'ether' },
    { ifname: 'eth1', ifindex: 3, link_type: 'ether' },
    { ifname: 'ifb0', ifindex: 4, link_type: 'ether', linkinfo: { info_kind: 'ifb' } },
    { ifname: 'docker0', ifindex: 5, link_type: 'ether', linkinfo: { info_kind: 'bridge' } },
    { ifname: 'veth1234', ifindex: 6, link_type: 'ether', master: 'docker0', linkinfo: { info_kind: 'veth' } },
    { ifname: 'vethfree', ifindex: 7, link_type: 'ether', linkinfo: { info_kind: 'veth' } },
    { ifname: 'wg0', ifindex: 8, link_type: 'none', linkinfo: { info_kind: 'wireguard' } },
    { ifname: 'br-abc', ifindex: 9, link_type: 'ether', linkinfo: { info_kind: 'bridge' } },
  ]), ['br-abc', 'docker0', 'eth0', 'eth1', 'vethfree']);
});

test('bridge rules: REDIRECT to the same listener, only for frames from a bridge port (br_netfilter pass)', (t) => {
  t.deepEqual(bridgeRules([basic, admin], 4), [
    `-A ${CHAIN} -d 10.96.0.51/32 -p tcp -m tcp --dport 8080 -m physdev --physdev-is-in -m comment --comment berth -j REDIRECT --to-ports 15001`,
    `-A ${CHAIN} -d 10.96.0.50/32 -p tcp -m tcp --dport 80 -m physdev --physdev-is-in -m comment --comment berth -j REDIRECT --to-ports 18243`,
    `-A ${CHAIN} -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 31907 -m physdev --physdev-is-in -m comment --comment berth -j REDIRECT --to-ports 18243`,
  ]);
  t.deepEqual(bridgeRules([basic], 6)[0], `-A ${CHAIN} -d fd00:96::32/128 -p tcp -m tcp --dport 80 -m physdev --physdev-is-in -m comment --comment berth -j REDIRECT --to-ports 18243`);
  t.deepEqual(bridgeRules([admin], 6), []);
});
