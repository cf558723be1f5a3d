/**
 * The build's precompiled Envoy definitions (dist/src/proxy/envoy-protos.json) are the .proto
 * files' own: loaded, they equal a fresh parse and encode the same bytes; a file made from other
 * files or versions, or a broken one, is not used.
 */
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  FILES, PRECOMPILED, STATIC_CODE, TOP_LEVEL_TYPES, TypeUrl, loadPrecompiled, loadStatic, parseProtos, precompile, protoRoot, protoSource, staticCodec, typeClosure, useStaticCode, type Precompiled,
} from '../../../src/proxy/protos';
import { buildSnapshot, type HostCert } from '../../../src/proxy/resources';
import type { DesiredState } from '../../../src/model/types';
import { bookinfo, ingress, route } from './fixtures';

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

test('an unresolved precompiled root (the strict check\'s) has the same types and fields as the resolved one', (t) => {
  const lazy = loadPrecompiled(PRECOMPILED, { resolved: false });
  t.truthy(lazy);
  const full = protoRoot();
  for (const name of typeClosure(full, TOP_LEVEL_TYPES)) {
    const a = lazy!.lookupType(name);
    const b = full.lookupType(name);
    t.deepEqual(a.fieldsArray.map((f) => [f.name, f.resolve().resolvedType?.fullName ?? f.type, f.repeated, f.map]), b.fieldsArray.map((f) => [f.name, f.resolvedType?.fullName ?? f.type, f.repeated, f.map]), name);
  }
});

test('the build wrote current static code for every message berth encodes and all they contain', (t) => {
  t.truthy(loadStatic(), `${STATIC_CODE} missing or stale: npm run build:protos`);
  const names = typeClosure(protoRoot(), TOP_LEVEL_TYPES);
  t.true(names.includes('google.protobuf.Duration') && names.includes('envoy.config.core.v3.Address') && names.length > 100, `${names.length} types`);
  t.deepEqual(names.filter((n) => !staticCodec(n)), [], 'every one has static code');
  t.is(staticCodec('envoy.config.cluster.v3.NoSuchThing'), null);
  t.is(staticCodec('envoy'), null, 'a namespace is no message');
});

test('static code from other files or versions, without the stamp, or not loadable is not used', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bt-static-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const stamp = { files: [...FILES], source: protoSource() };
  const cases: [string, string, boolean][] = [
    ['good', `module.exports = { berthSource: ${JSON.stringify(stamp)} };`, true],
    ['other files', `module.exports = { berthSource: ${JSON.stringify({ ...stamp, files: FILES.slice(1) })} };`, false],
    ['other versions', `module.exports = { berthSource: ${JSON.stringify({ ...stamp, source: 'protobufjs@6.0.0' })} };`, false],
    ['no stamp', 'module.exports = {};', false],
    ['null export', 'module.exports = null;', false],
    ['syntax error', 'module.exports = {;', false],
    ['throws', 'throw new Error("boom");', false],
  ];
  for (const [what, text, ok] of cases) {
    const f = path.join(dir, `${what.replace(/ /g, '-')}.js`);
    fs.writeFileSync(f, text);
    t.is(loadStatic(f) !== null, ok, what);
  }
  t.is(loadStatic(path.join(dir, 'absent.js')), null);
});

const PEM: HostCert = { cert: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n', key: '-----BEGIN PRIVATE KEY-----\nMIIC\n-----END PRIVATE KEY-----\n' };

/** Everything berth's resource builder can emit at once: TLS with redirect, h2c, route options. */
function everything(): DesiredState {
  const st = bookinfo();
  const tls = ingress('secure', [route('/', 'productpage', 9080, 'shop.test'), { ...route('/api', 'details'), protocol: 'h2c', stripPrefix: true, timeoutMs: 1500, retries: 2 }], 15001, 8080);
  tls.ports.push({ port: 443, protocol: 'tcp', targetPort: 443 });
  tls.ingress = { ...tls.ingress!, tls: true, tlsListen: 443, redirectHttps: true };
  st.services.push(tls);
  return st;
}

/* eslint-disable @typescript-eslint/no-explicit-any -- decoded protobuf objects */
test('static code encodes and decodes every resource (and every Any inside) exactly as reflection does', (t) => {
  const root = protoRoot();
  const conv = { longs: String, enums: String, defaults: false };
  const opts = { ipv6: true, reusePort: false, accessLog: '/run/berth/access.log', certs: new Map([['shop.test', PEM]]) };
  useStaticCode(false);
  let reflected;
  try {
    reflected = buildSnapshot(everything(), opts).snapshot;
  } finally {
    useStaticCode(true);
  }
  const { snapshot, errors } = buildSnapshot(everything(), opts);
  t.deepEqual(errors, []);
  // The same objects: the same bytes, so the same versions.
  t.is(snapshot.version, reflected.version);
  for (const [url, { resources }] of snapshot.types) {
    for (const [name, r] of resources) t.deepEqual(r.resource.value, reflected.types.get(url)!.resources.get(name)!.resource.value, `${url} ${name}`);
  }
  let anys = 0;
  const check = (typeName: string, bytes: Buffer, at: string): void => {
    const type = root.lookupType(typeName);
    const obj = type.toObject(type.decode(bytes), conv);
    t.deepEqual(Buffer.from(type.encode(type.fromObject(obj)).finish()), bytes, `${at}: reflection encodes what static code encoded`);
    const s = staticCodec(typeName)!;
    t.deepEqual(s.toObject(s.decode(bytes), conv), obj, `${at}: static code decodes what reflection decodes`);
    anys++;
    const walk = (x: any, where: string): void => {
      if (x === null || typeof x !== 'object' || Buffer.isBuffer(x) || x instanceof Uint8Array) return;
      if (typeof x.type_url === 'string' && x.value instanceof Uint8Array) return check(x.type_url.replace(/^.*\//, ''), Buffer.from(x.value), `${where}(${x.type_url})`);
      for (const [k, v] of Object.entries(x)) walk(v, `${where}.${k}`);
    };
    walk(obj, at);
  };
  for (const [url, { resources }] of snapshot.types) {
    for (const [name, r] of resources) check(url.replace(/^.*\//, ''), r.resource.value, `${url.replace(/^.*\./, '')} ${name}`);
  }
  t.true(anys >= 20, `${anys} messages compared`);
  t.true([...snapshot.types.get(TypeUrl.secret)!.resources.keys()].length === 1);
});
