import test from 'ava';
import { exposedPorts, summarySignature, toContainerInfo, toNetworkInfo, type SummaryLike } from '../../../src/docker/convert';

test('a running container with health, two networks, exposed ports', (t) => {
  const info = toContainerInfo({
    Id: 'a'.repeat(64),
    Name: '/web-1',
    State: { Status: 'running', Health: { Status: 'healthy' } },
    Config: { Labels: { 'berth.service': 'web' }, ExposedPorts: { '8080/tcp': {}, '53/udp': {}, '9/sctp': {}, '80': {} } },
    NetworkSettings: {
      Networks: {
        zeta: { NetworkID: 'n2', IPAddress: '172.30.1.2', GlobalIPv6Address: 'fd00:b7e5::2' },
        bridge: { NetworkID: 'n1', IPAddress: '172.17.0.2', GlobalIPv6Address: '' },
      },
    },
  }, false);
  t.deepEqual(info, {
    id: 'a'.repeat(64),
    name: 'web-1',
    labels: { 'berth.service': 'web' },
    state: 'running',
    health: 'healthy',
    stopping: false,
    exposedPorts: [{ port: 53, protocol: 'udp' }, { port: 80, protocol: 'tcp' }, { port: 8080, protocol: 'tcp' }],
    networks: [
      { name: 'bridge', id: 'n1', ip: '172.17.0.2', ip6: null },
      { name: 'zeta', id: 'n2', ip: '172.30.1.2', ip6: 'fd00:b7e5::2' },
    ],
  });
});

test('missing pieces: no health block, null labels, no networks (stopped container)', (t) => {
  const info = toContainerInfo({ Id: 'b', Name: '/x', State: { Status: 'exited' }, Config: { Labels: null, ExposedPorts: null }, NetworkSettings: { Networks: {} } }, true);
  t.is(info.health, 'none');
  t.deepEqual(info.labels, {});
  t.deepEqual(info.exposedPorts, []);
  t.deepEqual(info.networks, []);
  t.true(info.stopping);
  t.is(info.state, 'exited');
});

test('an unknown health status reads as none', (t) => {
  t.is(toContainerInfo({ Id: 'c', State: { Status: 'running', Health: { Status: 'weird' } } }, false).health, 'none');
});

test('exposedPorts drops malformed and out-of-range keys', (t) => {
  t.deepEqual(exposedPorts({ 'abc/tcp': {}, '0/tcp': {}, '70000/udp': {}, '443/tcp': {} }), [{ port: 443, protocol: 'tcp' }]);
  t.deepEqual(exposedPorts(undefined), []);
});

test('networks: subnets and gateways of both families, empty IPAM config tolerated', (t) => {
  t.deepEqual(toNetworkInfo({ Id: 'n', Name: 'bt-x', IPAM: { Config: [{ Subnet: '172.30.1.0/24', Gateway: '172.30.1.1' }, { Subnet: 'fd00:b7e5::/64' }] } }), {
    id: 'n', name: 'bt-x', subnets: ['172.30.1.0/24', 'fd00:b7e5::/64'], gateways: ['172.30.1.1'],
  });
  t.deepEqual(toNetworkInfo({ Id: 'h', Name: 'host', IPAM: { Config: null } }), { id: 'h', name: 'host', subnets: [], gateways: [] });
});

test('creation time from inspect (nanosecond RFC 3339) orders containers; absent or bad: no field', (t) => {
  const base = { Id: 'c', Name: '/c', State: { Status: 'running' }, Config: {}, NetworkSettings: { Networks: {} } };
  t.is(toContainerInfo({ ...base, Created: '2026-11-24T21:31:05.123456789Z' }, false).created, Date.parse('2026-11-24T21:31:05.123Z'));
  t.false('created' in toContainerInfo(base, false));
  t.false('created' in toContainerInfo({ ...base, Created: 'yesterday' }, false));
});

test('summarySignature: uptime text and label order do not matter; names, state, health, labels and addresses do', (t) => {
  const base: SummaryLike = {
    Id: 'x', Names: ['/web-1'], Created: 1700000000, State: 'running', Status: 'Up 5 minutes (healthy)',
    Labels: { 'berth.service': 'web', 'berth.ports': '80:8080' },
    NetworkSettings: { Networks: { bridge: { NetworkID: 'n1', IPAddress: '172.17.0.2', GlobalIPv6Address: '' } } },
  };
  const sig = summarySignature(base);
  t.is(summarySignature({ ...base, Status: 'Up 2 hours (healthy)' }), sig, 'uptime is noise');
  t.is(summarySignature({ ...base, Labels: { 'berth.ports': '80:8080', 'berth.service': 'web' } }), sig, 'label order is noise');
  const changes: [string, SummaryLike][] = [
    ['name', { ...base, Names: ['/web-2'] }],
    ['state', { ...base, State: 'exited', Status: 'Exited (0) 1 second ago' }],
    ['health', { ...base, Status: 'Up 5 minutes (unhealthy)' }],
    ['health starting', { ...base, Status: 'Up 1 second (health: starting)' }],
    ['label', { ...base, Labels: { 'berth.service': 'api', 'berth.ports': '80:8080' } }],
    ['IPv4 address', { ...base, NetworkSettings: { Networks: { bridge: { NetworkID: 'n1', IPAddress: '172.17.0.3', GlobalIPv6Address: '' } } } }],
    ['IPv6 address', { ...base, NetworkSettings: { Networks: { bridge: { NetworkID: 'n1', IPAddress: '172.17.0.2', GlobalIPv6Address: 'fd00::2' } } } }],
    ['network', { ...base, NetworkSettings: { Networks: { other: { NetworkID: 'n2', IPAddress: '172.17.0.2', GlobalIPv6Address: '' } } } }],
    ['created', { ...base, Created: 1700000001 }],
  ];
  for (const [what, s] of changes) t.not(summarySignature(s), sig, what);
  t.notThrows(() => summarySignature({ Id: 'bare' }), 'a summary with nothing but an id');
});
