import test from 'ava';
import { dnsFrontendService, dnsVips, DnsVipError, DNS_SERVICE_NAME, hostBackendAddress } from '../../../src/dns/vips';
import { desiredFrontends } from '../../../src/datapath/plan';
import { isDnsLabel } from '../../../src/model/labels';

const base = { serviceCidr: '10.96.0.0/16', serviceCidr6: 'fd00:96::/112', dnsVip: 'auto', dnsVip6: 'auto' };

test('default DNS VIPs are the ranges\' .10 / ::a; explicit ones are checked against the range', (t) => {
  t.deepEqual(dnsVips(base), { vip: '10.96.0.10', vip6: 'fd00:96::a' });
  t.deepEqual(dnsVips({ ...base, serviceCidr: '10.213.0.0/16', serviceCidr6: 'fd00:213::/112' }), { vip: '10.213.0.10', vip6: 'fd00:213::a' });
  t.deepEqual(dnsVips({ ...base, dnsVip: '10.96.5.5', dnsVip6: 'off' }), { vip: '10.96.5.5', vip6: null });
  const bad: [Partial<typeof base>, 'dnsVip' | 'dnsVip6', RegExp][] = [
    [{ dnsVip: '10.97.0.10' }, 'dnsVip', /outside the service range 10\.96\.0\.0\/16/],
    [{ dnsVip: '10.96.0.0' }, 'dnsVip', /network or last address/],
    [{ dnsVip: '10.96.255.255' }, 'dnsVip', /network or last address/],
    [{ dnsVip6: 'fd00:97::a' }, 'dnsVip6', /outside/],
    [{ dnsVip: 'fd00:96::a' }, 'dnsVip', /not an IPv4 address/],
    [{ serviceCidr: '10.96.0.0/30' }, 'dnsVip', /too small/],
  ];
  for (const [over, key, re] of bad) {
    const e = t.throws(() => dnsVips({ ...base, ...over }), { instanceOf: DnsVipError }, JSON.stringify(over));
    t.is(e?.key, key);
    t.regex(e?.message ?? '', re);
  }
});

test('the host backend is the default bridge gateway, else the first network gateway, else loopback', (t) => {
  const net = (name: string, gateways: string[]) => ({ id: name, name, subnets: [], gateways });
  t.is(hostBackendAddress([net('zeta', ['172.30.0.1']), net('bridge', ['fd00::1', '172.17.0.1'])]), '172.17.0.1');
  t.is(hostBackendAddress([net('zeta', ['172.30.0.1']), net('alpha', ['172.20.0.1']), net('bridge', [])]), '172.20.0.1');
  t.is(hostBackendAddress([net('v6only', ['fd00::1'])]), '127.0.0.1');
  t.is(hostBackendAddress([]), '127.0.0.1');
});

test('the DNS frontend is UDP and TCP 53 of both VIPs to the host socket (v4-mapped for the VIP6)', (t) => {
  const s = dnsFrontendService({ vip: '10.96.0.10', vip6: 'fd00:96::a' }, '172.17.0.1', 10053);
  t.false(isDnsLabel(DNS_SERVICE_NAME), 'no user service can be called like the DNS entry');
  const f = desiredFrontends(s).frontends.map((x) => `${x.protocol} ${x.vip}:${x.port} flags=${x.flags} -> ${x.backends.map((b) => `${b.ip}:${b.port}`).join(',')}`);
  t.deepEqual(f.sort(), [
    'tcp 10.96.0.10:53 flags=0 -> 172.17.0.1:10053',
    'tcp fd00:96::a:53 flags=0 -> ::ffff:172.17.0.1:10053',
    'udp 10.96.0.10:53 flags=0 -> 172.17.0.1:10053',
    'udp fd00:96::a:53 flags=0 -> ::ffff:172.17.0.1:10053',
  ]);
  t.deepEqual(desiredFrontends(dnsFrontendService({ vip: '10.96.0.10', vip6: null }, '127.0.0.1', 1)).frontends.length, 2);
});
