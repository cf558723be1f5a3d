/**
 * The build's precompiled Envoy definitions (dist/src/proxy/envoy-protos.json) are the .proto
 * files' own: loaded, they equal a fresh parse and encode the same bytes; a file made from other
 * files or versions, or a broken one, is not used.
 */
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FILES, PRECOMPILED, loadPrecompiled, parseProtos, precompile, protoSource, type Precompiled } from '../../../src/proxy/protos';

test('the build wrote a current precompiled file, equal to parsing the .proto files', (t) => {
  const root = loadPrecompiled(PRECOMPILED);
  t.truthy(root, `${PRECOMPILED} missing or stale: npm run build:protos`);
  root!.resolveAll();
  const parsed = parseProtos();
  // protobufjs' Enum.fromJSON drops enum values' options (valuesOptions: deprecation marks and
  // Envoy annotations, nothing the wire format or berth's strict check reads); all else is equal.
  const strip = (x: unknown): unknown => JSON.parse(JSON.stringify(x, (k, v: unknown) => (k === 'valuesOptions' ? undefined : v)));
  t.deepEqual(strip(root!.toJSON()), strip(parsed.toJSON()));
  // The same bytes for a message with nested types, enums, oneofs and an Any.
  const name = 'envoy.config.cluster.v3.Cluster';
  const obj = {
    name: 'svc', type: 'EDS', connect_timeout: { seconds: '5' }, lb_policy: 'LEAST_REQUEST',
    eds_cluster_config: { eds_config: { ads: {}, resource_api_version: 'V3' } },
    typed_extension_protocol_options: { x: { type_url: 'type.googleapis.com/google.protobuf.Empty', value: Buffer.alloc(0) } },
  };
  const a = root!.lookupType(name);
  const b = parsed.lookupType(name);
  const bytes = Buffer.from(a.encode(a.fromObject(obj)).finish());
  t.true(bytes.length > 20);
  t.deepEqual(bytes, Buffer.from(b.encode(b.fromObject(obj)).finish()));
});

test('a precompiled file from other files, other versions, or not JSON is ignored', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bt-protos-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const good = precompile();
  t.is(good.source, protoSource());
  const cases: [string, string][] = [
    ['files', JSON.stringify({ ...good, files: FILES.slice(1) } satisfies Precompiled)],
    ['source', JSON.stringify({ ...good, source: '@grpc/grpc-js-xds@0.0.1 protobufjs@6.0.0' } satisfies Precompiled)],
    ['no root', JSON.stringify({ files: good.files, source: good.source })],
    ['truncated', JSON.stringify(good).slice(0, 1000)],
  ];
  for (const [what, text] of cases) {
    const f = path.join(dir, `${what}.json`);
    fs.writeFileSync(f, text);
    t.is(loadPrecompiled(f), null, what);
  }
  t.is(loadPrecompiled(path.join(dir, 'absent.json')), null);
  const f = path.join(dir, 'good.json');
  fs.writeFileSync(f, JSON.stringify(good));
  t.truthy(loadPrecompiled(f));
});
