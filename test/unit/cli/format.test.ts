import test from 'ava';
import { formatServices, formatStatus, table, type ServiceView, type StatusView } from '../../../src/cli/format';

const web: ServiceView = {
  name: 'web', kind: 'service', vip: '10.96.3.4', vip6: 'fd00:96::304',
  ports: [{ port: 80, protocol: 'tcp', targetPort: 8080 }, { port: 53, protocol: 'udp', targetPort: 53 }],
  backends: [{ container: 'web-1', id: 'a'.repeat(64), ip: '172.17.0.2', ip6: null }, { container: 'web-2', id: 'b'.repeat(64), ip: '172.17.0.3', ip6: null }],
  routes: [], errors: [],
};
const basic: ServiceView = {
  name: 'basic', kind: 'ingress', vip: '10.96.9.9', vip6: null, ports: [{ port: 80, protocol: 'tcp', targetPort: 80 }], backends: [],
  routes: [{ host: null, path: '/details', service: 'details', port: 9080 }, { host: 'shop.example', path: '/', service: 'productpage', port: 9080 }],
  listenerPort: 15001, listen: 80, publish: 31907, errors: ['port 31907 is taken'],
};

test('table aligns columns', (t) => {
  t.is(table(['A', 'BB'], [['xxx', 'y'], ['z', 'w']]), 'A    BB\nxxx  y\nz    w');
});

test('services: ports, backends, ingress listener, routes and errors', (t) => {
  const out = formatServices([basic, web]);
  t.regex(out, /^NAME\s+KIND\s+VIP\s+VIP6\s+PORTS\s+BACKENDS$/m);
  t.regex(out, /web\s+service\s+10\.96\.3\.4\s+fd00:96::304\s+80->8080\/tcp,53\/udp\s+web-1\(172\.17\.0\.2\) web-2\(172\.17\.0\.3\)/);
  t.regex(out, /basic\s+ingress\s+10\.96\.9\.9\s+-\s+80\/tcp\s+listener 15001, publish 31907/);
  t.regex(out, /basic routes:\n  \*\/details -> details:9080\n  shop\.example\/ -> productpage:9080/);
  t.regex(out, /errors:\n  basic: port 31907 is taken/);
  t.regex(formatServices([]), /no services/);
  t.regex(formatServices([{ ...web, backends: [] }]), /80->8080\/tcp,53\/udp\s+none/);
});

test('status: attach point truthfulness and label errors are shown', (t) => {
  const st: StatusView = {
    version: '0.1.0', pid: 42, ready: true, docker: 'connected', dockerReconnects: 1,
    cgroupRoot: '/run/berth/cgroupv2', cgroupIsHostRoot: false, attached: ['connect4', 'connect6'],
    maps: { services: 3, backends: 2 }, redirect: 'iptables',
    envoy: { state: 'running', pid: 99, version: '1.40.0', restarts: 2, lastNack: 'bad cluster' },
    labelErrors: [{ container: 'c1', label: 'berth.ports', error: 'bad port "x"' }],
    lastReconcile: { at: '2026-01-01T00:00:00Z', durationMs: 1.25, error: null },
    config: { redirect: 'iptables', proxyPorts: { from: 1, to: 2 } }, configSources: { redirect: 'flag' }, configFile: null,
  };
  const out = formatStatus(st);
  t.regex(out, /berthd 0\.1\.0 \(pid 42\): ready/);
  t.regex(out, /host root: NO/);
  t.regex(out, /attached:\s+connect4 connect6/);
  t.regex(out, /envoy:\s+running \(pid 99\) 1\.40\.0, 2 restarts/);
  t.regex(out, /last rejected config: bad cluster/);
  t.regex(out, /redirect: iptables \(flag\)/);
  t.regex(out, /proxyPorts: \{"from":1,"to":2\}/);
  t.regex(out, /container c1, label berth\.ports: bad port "x"/);
  t.regex(formatStatus({ ...st, cgroupIsHostRoot: true, labelErrors: [] }), /host root: yes[\s\S]*label errors: none/);
});

test('status shows DNS: zone, VIPs, backend socket, upstreams and their problems; or off', (t) => {
  const base = {
    version: '0', pid: 1, ready: true, docker: 'connected', dockerReconnects: 0, cgroupRoot: '/sys/fs/cgroup', cgroupIsHostRoot: true,
    attached: [], maps: null, redirect: null, envoy: { state: 'running', pid: null }, labelErrors: [], lastReconcile: null,
    config: {}, configSources: {}, configFile: null,
  };
  const text = formatStatus({ ...base, dns: { domain: 'berth', vip: '10.96.0.10', vip6: 'fd00:96::a', port: 10053, listen: ['127.0.0.1', '172.17.0.1'], backend: '172.17.0.1', upstreams: [{ ip: '192.168.1.1', port: 53 }], upstreamSource: '/etc/resolv.conf', errors: ['upstream 10.96.0.10:53 skipped: loop'] } });
  t.regex(text, /dns: +\*\.berth at 10\.96\.0\.10 and fd00:96::a -> 172\.17\.0\.1:10053 \(listening on 127\.0\.0\.1, 172\.17\.0\.1\); other names -> 192\.168\.1\.1:53 \(from \/etc\/resolv\.conf\)/);
  t.regex(text, /skipped: loop/);
  t.regex(formatStatus({ ...base, dns: null }), /dns: +off/);
  t.notRegex(formatStatus(base), /dns:/);
});

test('cluster mode: backends show their node; status shows etcd, this node, nodes seen, revision, routes, overlaps', (t) => {
  const out = formatServices([{ ...web, backends: [{ ...web.backends[0], node: 'h1' }, { ...web.backends[1], node: 'h2' }] }]);
  t.regex(out, /h1\/web-1\(172\.17\.0\.2\) h2\/web-2\(172\.17\.0\.3\)/);
  const st = {
    version: '0.1.0', pid: 1, ready: true, docker: 'connected', dockerReconnects: 0, cgroupRoot: '/', cgroupIsHostRoot: true, attached: [],
    maps: null, redirect: null, envoy: { state: 'running', pid: null }, labelErrors: [], lastReconcile: null, config: {}, configSources: {}, configFile: null,
  } as StatusView;
  t.notRegex(formatStatus(st), /cluster:/, 'single host: no cluster lines');
  const cl: NonNullable<StatusView['cluster']> = {
    etcd: 'disconnected', endpoints: ['https://10.0.0.1:2379'], node: 'h1', address: '10.0.0.11', nodes: ['h1', 'h2'], revision: '42',
    lease: null, compactions: 1, disconnects: 2, rejectedRecords: 0, lastError: 'UNAVAILABLE', remoteBackends: 3,
    overlaps: [{ message: "node h3's container subnet 172.17.0.0/16 overlaps" }], routes: [{ subnet: '172.19.0.0/16', via: '10.0.0.12', node: 'h2' }], errors: [],
  };
  const out2 = formatStatus({ ...st, cluster: cl });
  t.regex(out2, /cluster:\s+etcd disconnected \(https:\/\/10\.0\.0\.1:2379\), revision 42, last error: UNAVAILABLE/);
  t.regex(out2, /this node h1 at 10\.0\.0\.11; nodes seen: h1 h2; 3 remote backends/);
  t.regex(out2, /2 etcd disconnects, 1 compaction re-reads/);
  t.regex(out2, /route 172\.19\.0\.0\/16 via 10\.0\.0\.12 \(node h2\)/);
  t.regex(out2, /node h3's container subnet/);
});
