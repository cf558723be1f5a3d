import test from 'ava';
import { chooseUpstreams, parseResolvConf, parseUpstreamList, type UpstreamInputs } from '../../../src/dns/upstreams';

const RANGES = ['10.96.0.0/16', 'fd00:96::/112'];
const SELF = [{ ip: '127.0.0.1', port: 10053 }, { ip: '172.17.0.1', port: 10053 }];
const inputs = (o: Partial<UpstreamInputs>): UpstreamInputs => ({ configured: 'auto', etcResolvConf: null, resolvedResolvConf: null, ranges: RANGES, self: SELF, ...o });
const ips = (c: ReturnType<typeof chooseUpstreams>) => c.upstreams.map((u) => `${u.ip}:${u.port}`);

test('parseResolvConf: nameserver lines only, comments and junk ignored, zone ids dropped', (t) => {
  t.deepEqual(parseResolvConf('# c\nsearch x\nnameserver 1.1.1.1\n  nameserver  fe80::1%eth0 \nnameserver bogus\noptions edns0\n;nameserver 9.9.9.9\n'), ['1.1.1.1', 'fe80::1']);
  t.deepEqual(parseResolvConf(''), []);
});

test('parseUpstreamList: ip, ip:port, [ip6]:port, bare ip6', (t) => {
  t.deepEqual(parseUpstreamList('1.2.3.4, 127.0.0.1:5300,[::1]:54,fd00::1'), [
    { ip: '1.2.3.4', port: 53 }, { ip: '127.0.0.1', port: 5300 }, { ip: '::1', port: 54 }, { ip: 'fd00::1', port: 53 },
  ]);
});

test('forwarding decisions (table)', (t) => {
  const resolved = 'nameserver 192.168.1.1\nnameserver 10.96.0.10\n';
  const cases: [string, Partial<UpstreamInputs>, string[], string][] = [
    ['plain resolv.conf', { etcResolvConf: 'nameserver 192.168.1.1\nnameserver 8.8.8.8\n' }, ['192.168.1.1:53', '8.8.8.8:53'], '/etc/resolv.conf'],
    ['resolved stub -> its upstream list, minus our own VIP', { etcResolvConf: 'nameserver 127.0.0.53\n', resolvedResolvConf: resolved }, ['192.168.1.1:53'], '/run/systemd/resolve/resolv.conf'],
    ['resolved stub without its list: the stub itself', { etcResolvConf: 'nameserver 127.0.0.53\n' }, ['127.0.0.53:53'], '/etc/resolv.conf'],
    ['no stub: resolved list ignored', { etcResolvConf: 'nameserver 192.168.9.9\n', resolvedResolvConf: resolved }, ['192.168.9.9:53'], '/etc/resolv.conf'],
    ['host pointed at berth: VIPs are loops', { etcResolvConf: 'nameserver 10.96.0.10\nnameserver fd00:96::a\nnameserver 1.1.1.1\n' }, ['1.1.1.1:53'], '/etc/resolv.conf'],
    ['our own socket is a loop, same address on another port is not', { configured: '127.0.0.1:10053,127.0.0.1:10054' }, ['127.0.0.1:10054'], 'config'],
    ['configured list wins over files', { configured: '127.0.0.1:5300', etcResolvConf: 'nameserver 1.1.1.1\n' }, ['127.0.0.1:5300'], 'config'],
    ['duplicates once', { etcResolvConf: 'nameserver 1.1.1.1\nnameserver 1.1.1.1\n' }, ['1.1.1.1:53'], '/etc/resolv.conf'],
    ['unreadable resolv.conf: none', {}, [], 'none'],
    ['everything a loop', { etcResolvConf: 'nameserver 10.96.0.10\n' }, [], '/etc/resolv.conf (all skipped)'],
  ];
  for (const [what, over, want, source] of cases) {
    const c = chooseUpstreams(inputs(over));
    t.deepEqual(ips(c), want, what);
    t.is(c.source, source, what);
  }
  const c = chooseUpstreams(inputs({ etcResolvConf: 'nameserver 10.96.0.10\n' }));
  t.regex(c.skipped[0].why, /loop/);
});
