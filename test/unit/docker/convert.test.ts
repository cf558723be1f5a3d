import test from 'ava';
import { exposedPorts, summaryToContainerInfo, toNetworkInfo } from '../../../src/docker/convert';

test('a running container with health, two networks, exposed and published ports (from the list summary)', (t) => {
  const info = summaryToContainerInfo({
    Id: 'a'.repeat(64),
    Names: ['/web-1'],
    Created: 1764000000,
    State: 'running',
    Status: 'Up 3 minutes (healthy)',
    Labels: { 'berth.service': 'web' },
    // Published ports appear once per host binding (IPv4 and IPv6); exposed ones once.
    Ports: [
      { PrivatePort: 8080, Type: 'tcp' }, { PrivatePort: 53, Type: 'udp' }, { PrivatePort: 9, Type: 'sctp' },
      { PrivatePort: 80, Type: 'tcp' }, { PrivatePort: 80, Type: 'tcp' }, null,
    ],
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
    created: 1764000000000,
  });
});

test('health from the Status text: starting, unhealthy, none (no HEALTHCHECK, paused, exited)', (t) => {
  const h = (Status: string) => summaryToContainerInfo({ Id: 'c', State: 'running', Status }, false).health;
  t.is(h('Up 1 second (health: starting)'), 'starting');
  t.is(h('Up 2 hours (unhealthy)'), 'unhealthy');
  t.is(h('Up 2 hours (healthy)'), 'healthy');
  t.is(h('Up 2 hours'), 'none');
  t.is(h('Up 2 hours (Paused)'), 'none');
  t.is(h('Exited (0) 3 seconds ago'), 'none');
});

test('missing pieces: no names, null labels, ports and networks (a stopped container)', (t) => {
  const info = summaryToContainerInfo({ Id: 'b', State: 'exited', Labels: null, Ports: null, NetworkSettings: { Networks: {} } }, true);
  t.is(info.name, '');
  t.is(info.health, 'none');
  t.deepEqual(info.labels, {});
  t.deepEqual(info.exposedPorts, []);
  t.deepEqual(info.networks, []);
  t.true(info.stopping);
  t.is(info.state, 'exited');
  t.false('created' in info);
  t.is(summaryToContainerInfo({ Id: 'z' }, false).state, 'unknown');
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

test('network mode and driver: host, none, container:<id>, a user network; driver kept when listed', (t) => {
  const mode = (NetworkMode?: string) => summaryToContainerInfo({ Id: 'm', State: 'running', HostConfig: NetworkMode === undefined ? undefined : { NetworkMode } }, false).networkMode;
  t.is(mode('host'), 'host');
  t.is(mode('none'), 'none');
  t.is(mode('container:' + 'b'.repeat(64)), 'container:' + 'b'.repeat(64));
  t.is(mode('proj_default'), 'proj_default');
  t.is(mode(undefined), undefined, 'an engine that does not say: absent, not guessed');
  t.is(mode(''), undefined);
  t.is(toNetworkInfo({ Id: 'v', Name: 'mv', Driver: 'macvlan' }).driver, 'macvlan');
  t.false('driver' in toNetworkInfo({ Id: 'v', Name: 'mv' }));
});

test("the watcher's compact form (ConvertOptions): kept labels only, shared strings and empties, a bare client", (t) => {
  const summary = {
    Id: 'd'.repeat(64), Names: ['/api-1'], Created: 1764000001, State: 'running', Status: 'Up 1 second (healthy)',
    Labels: { 'berth.service': 'api', 'com.docker.compose.project': 'x', 'berth.ports': '80:8080' },
    Ports: [{ PrivatePort: 8080, Type: 'tcp' }, { PrivatePort: 8080, Type: 'tcp' }],
    HostConfig: { NetworkMode: 'bridge' },
    NetworkSettings: { Networks: { bridge: { NetworkID: 'n1', IPAddress: '172.17.0.3' } } },
  };
  const pool = new Map<string, string>();
  const seen: string[] = [];
  const intern = (s: string) => {
    seen.push(s);
    if (!pool.has(s)) pool.set(s, s);
    return pool.get(s)!;
  };
  const noLabels = Object.freeze({}) as Record<string, string>;
  const noPorts = Object.freeze([]) as unknown as { port: number; protocol: 'tcp' | 'udp' }[];
  const opts = { intern, noLabels, noPorts, keepLabel: (k: string) => k.startsWith('berth.') };
  const full = summaryToContainerInfo(summary, true, opts);
  // The same content as the plain conversion, minus the labels berth does not keep.
  const plain = summaryToContainerInfo(summary, true);
  delete plain.labels['com.docker.compose.project'];
  t.deepEqual(full, plain);
  t.deepEqual(Object.keys(full.labels), ['berth.service', 'berth.ports']);
  for (const s of ['berth.service', 'api', 'running', 'bridge', 'n1']) t.true(seen.includes(s), `${s} interned`);
  t.false(seen.includes('x'), 'a dropped label value is not interned');
  // Exact-length lists: a duplicate port binding does not leave spare room.
  t.is(full.exposedPorts.length, 1);

  // No labels kept, no ports: the shared empties, not fresh objects.
  const none = summaryToContainerInfo({ ...summary, Labels: { other: '1' }, Ports: [] }, false, opts);
  t.is(none.labels, noLabels);
  t.is(none.exposedPorts, noPorts);

  // A client: id, name, state, mode and networks only.
  const client = summaryToContainerInfo(summary, true, { bare: true, intern, noLabels, noPorts });
  t.deepEqual(client, {
    id: summary.Id, name: 'api-1', labels: {}, state: 'running', health: 'none', stopping: false, exposedPorts: [],
    networks: [{ name: 'bridge', id: 'n1', ip: '172.17.0.3', ip6: null }], networkMode: 'bridge',
  });
  t.is(client.labels, noLabels);
  t.is(client.exposedPorts, noPorts);
});
