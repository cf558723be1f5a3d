/**
 * The ADS server's protocol behaviour, with a real gRPC client over a real unix socket (no Envoy):
 * versions and nonces, ACK/NACK, stale nonces, no resend after a NACK, push order, EDS subsets.
 */
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { AdsServer, type AckEvent, type NackEvent } from '../../../src/proxy/ads';
import { PUSH_ORDER, TypeUrl, packageDefinition, fromAny } from '../../../src/proxy/protos';
import { buildSnapshot } from '../../../src/proxy/resources';
import { silentLogger } from '../../../src/util/log';
import { bookinfo } from './fixtures';

interface Resp { version_info: string; type_url: string; nonce: string; resources: { type_url: string; value: Buffer }[] }

async function harness(t: import('ava').ExecutionContext) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bt-px-ads-'));
  const sock = path.join(dir, 'xds.sock');
  const server = new AdsServer(buildSnapshot(bookinfo()).snapshot, silentLogger());
  await server.listen(sock);
  const pkg = grpc.loadPackageDefinition(packageDefinition()) as any; // eslint-disable-line @typescript-eslint/no-explicit-any
  const client = new pkg.envoy.service.discovery.v3.AggregatedDiscoveryService(`unix:${sock}`, grpc.credentials.createInsecure());
  const call = client.StreamAggregatedResources();
  const got: Resp[] = [];
  const acks: AckEvent[] = [];
  const nacks: NackEvent[] = [];
  call.on('data', (r: Resp) => got.push(r));
  call.on('error', () => undefined);
  server.on('ack', (e: AckEvent) => acks.push(e));
  server.on('nack', (e: NackEvent) => nacks.push(e));
  t.teardown(async () => {
    call.cancel();
    client.close();
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  let sent = 0;
  const send = (req: object) => { sent++; call.write({ node: { id: 'test-node' }, ...req }); };
  /** Wait until n responses arrived in total (bounded), then return them. */
  const responses = async (n: number): Promise<Resp[]> => {
    for (let i = 0; i < 200 && got.length < n; i++) await new Promise((r) => setTimeout(r, 10));
    return got.slice();
  };
  let probes = 0;
  /**
   * Wait until the server has handled every request written so far (its request count), then
   * until anything it wrote in reply has arrived: only then a second stream on the same
   * connection asks for clusters, and its answer comes after every frame the server wrote before
   * (one connection, frames in order). So a negative check ("nothing resent") made after this
   * has seen a later positive event, instead of a guessed sleep.
   */
  const settle = async (): Promise<void> => {
    const want = sent + probes;
    for (let i = 0; i < 500 && server.stats.requests < want; i++) await new Promise((r) => setTimeout(r, 10));
    if (server.stats.requests < want) throw new Error(`settle: the server handled ${server.stats.requests} of ${want} requests within 5 s`);
    const probe = client.StreamAggregatedResources();
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('settle: no answer to the probe stream within 5 s')), 5000);
        probe.on('data', () => { clearTimeout(timer); resolve(); });
        probe.on('error', (e: Error) => { clearTimeout(timer); reject(e); });
        probe.write({ node: { id: 'settle-probe' }, type_url: TypeUrl.cluster });
      });
      probes++;
    } finally {
      probe.on('error', () => undefined);
      probe.cancel();
    }
  };
  /** Pushes to the stream under test (the settle probes' own answers left out). */
  const pushes = (): number => server.stats.pushes - probes;
  return { server, client, sock, send, responses, settle, pushes, got, acks, nacks };
}

test('the socket is mode 0600', async (t) => {
  const h = await harness(t);
  t.is(fs.statSync(h.sock).mode & 0o777, 0o600);
});

test('first request gets the type with its version and a nonce; the ACK is recorded, nothing resent', async (t) => {
  const h = await harness(t);
  h.send({ type_url: TypeUrl.cluster });
  const [r] = await h.responses(1);
  t.is(r.type_url, TypeUrl.cluster);
  t.is(r.version_info, h.server.snapshot.types.get(TypeUrl.cluster)!.version);
  t.truthy(r.nonce);
  t.deepEqual(r.resources.map((x) => (fromAny(x) as { name: string }).name).sort(), ['berth_svc_details_9080', 'berth_svc_productpage_9080']);
  h.send({ type_url: TypeUrl.cluster, version_info: r.version_info, response_nonce: r.nonce });
  await h.settle();
  t.deepEqual(h.acks.map((a) => [a.typeUrl, a.version, a.node]), [[TypeUrl.cluster, r.version_info, 'test-node']]);
  t.is(h.got.length, 1);
  t.is(h.pushes(), 1);
});

test('a NACK is reported with Envoy\'s error, the rejected version is not resent, the next snapshot is', async (t) => {
  const h = await harness(t);
  h.send({ type_url: TypeUrl.endpoint, resource_names: ['berth_svc_details_9080'] });
  const [r] = await h.responses(1);
  h.send({ type_url: TypeUrl.endpoint, version_info: '', response_nonce: r.nonce, resource_names: ['berth_svc_details_9080'], error_detail: { code: 3, message: 'malformed IP address: x' } });
  await h.settle();
  t.deepEqual(h.nacks.map((n) => [n.typeUrl, n.version, n.error]), [[TypeUrl.endpoint, r.version_info, 'malformed IP address: x']]);
  t.is(h.got.length, 1, 'not resent');
  t.false(h.server.isAcked());
  const st = bookinfo();
  st.services[1].backends.pop();
  h.server.setSnapshot(buildSnapshot(st).snapshot);
  const all = await h.responses(2);
  t.is(all.length, 2);
  t.not(all[1].version_info, r.version_info);
  t.not(all[1].nonce, r.nonce);
});

test('a request with a stale nonce is ignored', async (t) => {
  const h = await harness(t);
  h.send({ type_url: TypeUrl.cluster });
  const [r1] = await h.responses(1);
  const st = bookinfo();
  st.services.push({ ...st.services[2], name: 'reviews' });
  st.services[0].routes.push({ host: null, path: '/r', service: 'reviews', port: 9080 }); // a new cluster
  h.server.setSnapshot(buildSnapshot(st).snapshot);
  const [, r2] = await h.responses(2);
  t.not(r2.nonce, r1.nonce);
  // Envoy's (late) ACK of the first response: stale, neither an ACK nor a reason to send.
  h.send({ type_url: TypeUrl.cluster, version_info: r1.version_info, response_nonce: r1.nonce });
  await h.settle();
  t.deepEqual(h.acks, []);
  t.is(h.got.length, 2);
  h.send({ type_url: TypeUrl.cluster, version_info: r2.version_info, response_nonce: r2.nonce });
  await h.settle();
  t.deepEqual(h.acks.map((a) => a.version), [r2.version_info]);
});

test('a new snapshot is pushed CDS, EDS, LDS, RDS and only for subscribed types', async (t) => {
  const h = await harness(t);
  for (const type of [TypeUrl.route, TypeUrl.listener, TypeUrl.endpoint, TypeUrl.cluster]) h.send({ type_url: type });
  const first = await h.responses(4);
  for (const r of first) h.send({ type_url: r.type_url, version_info: r.version_info, response_nonce: r.nonce });
  await h.settle();
  t.true(h.server.isAcked());
  const st = bookinfo();
  st.services[0].ingress!.proxyPort = 15001; // LDS
  st.services[0].routes.reverse(); // order is normalised: RDS unchanged by this alone...
  st.services[0].routes.push({ host: null, path: '/x', service: 'details', port: 9080 }); // ...RDS changed
  st.services[1].backends.pop(); // EDS
  st.services[2].ports[0] = { port: 9080, protocol: 'tcp', targetPort: 1 }; // EDS
  st.services.push({ ...st.services[2], name: 'reviews' });
  st.services[0].routes.push({ host: null, path: '/r', service: 'reviews', port: 9080 }); // CDS
  h.server.setSnapshot(buildSnapshot(st).snapshot);
  const all = await h.responses(8);
  t.deepEqual(all.slice(4).map((r) => r.type_url), PUSH_ORDER.filter((x) => x !== TypeUrl.secret), 'SDS not subscribed: not sent');
  t.false(h.server.isAcked());
});

test('EDS: only the requested load assignments; a changed subscription is answered at the same version', async (t) => {
  const h = await harness(t);
  h.send({ type_url: TypeUrl.endpoint, resource_names: ['berth_svc_details_9080'] });
  const [r1] = await h.responses(1);
  t.deepEqual(r1.resources.map((x) => (fromAny(x) as { cluster_name: string }).cluster_name), ['berth_svc_details_9080']);
  h.send({ type_url: TypeUrl.endpoint, version_info: r1.version_info, response_nonce: r1.nonce, resource_names: ['berth_svc_details_9080', 'berth_svc_productpage_9080'] });
  const [, r2] = await h.responses(2);
  t.is(r2.version_info, r1.version_info);
  t.is(r2.resources.length, 2);
  // Same names again (an ACK): nothing more.
  h.send({ type_url: TypeUrl.endpoint, version_info: r2.version_info, response_nonce: r2.nonce, resource_names: ['berth_svc_productpage_9080', 'berth_svc_details_9080'] });
  await h.settle();
  t.is(h.got.length, 2);
});

test('a type berth does not serve is ignored; delta ADS is refused', async (t) => {
  const h = await harness(t);
  // (Secrets are served since SDS came in for TLS ingresses; scoped routes are not.)
  h.send({ type_url: 'type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration' });
  await h.settle();
  t.is(h.got.length, 0);
  const delta = h.client.DeltaAggregatedResources();
  const err = await new Promise<grpc.ServiceError>((resolve) => {
    delta.on('error', resolve);
    delta.on('data', () => undefined);
    delta.write({ type_url: TypeUrl.cluster });
  });
  t.is(err.code, grpc.status.UNIMPLEMENTED);
});
