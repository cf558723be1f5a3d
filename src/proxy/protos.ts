/**
 * Envoy's own API protos, loaded once from the copy vendored by @grpc/grpc-js-xds, so every xDS
 * resource berth sends is encoded by the real message definitions (a misspelt field is an error
 * here, not a silently ignored JSON key in Envoy).
 *
 * The build parses the .proto files once and writes protobufjs' JSON form of them next to this
 * module (`npm run build:protos`, scripts/envoy-protos.ts); berthd loads that JSON, which takes
 * ~0.2 s where parsing the .proto files took ~0.5 s of every start (measured: fresh node
 * processes, 3 each, on this 2-core machine under load). Without the JSON, or with one made
 * from another list of files, the .proto files are parsed as before.
 *
 * Encoding and decoding use static code the build generates for the messages berth sends and
 * reads (protobufjs-cli's `pbjs -t static-module`, dist/src/proxy/envoy-static.js, see
 * scripts/envoy-protos.ts), not protobufjs' reflection: reflection builds every type's encoder,
 * decoder and converters at run time on first use (source text and `new Function`, which no code
 * cache keeps) and needs the whole root resolved first; together ~0.4 s of CPU at every start on
 * the host and ~8.5 s in an emulated guest, for the first snapshot. Reflection is still loaded
 * for berth's strict field check and the ADS service's method list, but unresolved (each field is
 * resolved when the check first meets it). Without a current static file, reflection does it all.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as protobuf from 'protobufjs';
import type * as protoLoader from '@grpc/proto-loader';
import type * as grpc from '@grpc/grpc-js';
import { distPath } from '../util/root';

/** Type URLs of the four resource types berth serves, in the order they must be pushed. */
export const TypeUrl = {
  cluster: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  endpoint: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
  listener: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  route: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
  secret: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret',
} as const;
export type TypeUrl = (typeof TypeUrl)[keyof typeof TypeUrl];

/**
 * CDS before EDS, SDS before the LDS that needs its secrets, LDS before RDS (the xDS "eventual
 * consistency" ordering). Secrets and routes are only sent once Envoy asks for them by name.
 */
export const PUSH_ORDER: readonly TypeUrl[] = [TypeUrl.cluster, TypeUrl.endpoint, TypeUrl.secret, TypeUrl.listener, TypeUrl.route];

export const HCM_TYPE = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
export const ROUTER_TYPE = 'envoy.extensions.filters.http.router.v3.Router';
export const DOWNSTREAM_TLS_TYPE = 'envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext';
export const TLS_INSPECTOR_TYPE = 'envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector';
export const FILE_ACCESS_LOG_TYPE = 'envoy.extensions.access_loggers.file.v3.FileAccessLog';
export const HTTP_PROTOCOL_OPTIONS_TYPE = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';

export const FILES = [
  'envoy/service/discovery/v3/ads.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls.proto',
  'envoy/extensions/transport_sockets/tls/v3/secret.proto',
  'envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto',
  'envoy/extensions/access_loggers/file/v3/file.proto',
];

/** Field names exactly as in the .proto files (snake_case), the spelling of Envoy's docs. */
const LOAD_OPTIONS: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: false, oneofs: false };
// bytes stay Buffers (Any.value), so a decoded Any can be decoded again.
const CONVERSION: protobuf.IConversionOptions = { longs: String, enums: String, defaults: false };

let cachedRoot: protobuf.Root | null = null;
let cachedSchema: protobuf.Root | null = null;
let cachedDef: protoLoader.PackageDefinition | null = null;

function depsDir(): string {
  // grpc-js-xds does not export its deps/ folder; find it next to its package.json.
  const pkg = require.resolve('@grpc/grpc-js-xds/package.json');
  return path.join(path.dirname(pkg), 'deps');
}

/** Where the build writes the precompiled definitions (dist/src/proxy/envoy-protos.json). */
export const PRECOMPILED = distPath('src/proxy/envoy-protos.json');

/** What the precompiled file holds: what it was made from (the files, and the versions of the
 * package they come from and of protobufjs), and the root's JSON. */
export interface Precompiled {
  files: string[];
  source: string;
  root: protobuf.INamespace;
}

/** The versions the precompiled JSON depends on: another install makes it stale. */
export function protoSource(): string {
  const v = (pkg: string) => (JSON.parse(fs.readFileSync(require.resolve(`${pkg}/package.json`), 'utf8')) as { version: string }).version;
  return `@grpc/grpc-js-xds@${v('@grpc/grpc-js-xds')} protobufjs@${v('protobufjs')}`;
}

/** The precompiled form of parseProtos(), as the build writes it. */
export function precompile(): Precompiled {
  return { files: [...FILES], source: protoSource(), root: parseProtos().toJSON() };
}

/**
 * The precompiled definitions, or null when absent or made from other files or versions.
 * `resolved: false` leaves the types unresolved (no resolveAll: ~0.13 s of CPU less); such a
 * root answers lookups and per-field resolve() (all the strict check needs), but must not encode:
 * proto3's packed and implicit-presence rules (protobufjs' edition features) are only applied by
 * resolveAll.
 */
export function loadPrecompiled(file: string, opts: { resolved?: boolean } = {}): protobuf.Root | null {
  let data: Precompiled;
  try {
    data = JSON.parse(fs.readFileSync(file, 'utf8')) as Precompiled;
  } catch {
    return null;
  }
  if (!Array.isArray(data.files) || data.files.join('\n') !== FILES.join('\n') || data.source !== protoSource() || !data.root) return null;
  if (opts.resolved === false) {
    const root = new protobuf.Root();
    root.addJSON(data.root.nested ?? {});
    return root;
  }
  return protobuf.Root.fromJSON(data.root);
}

/** Envoy's API parsed from the .proto files (protobufjs bundles google/protobuf/*.proto itself). */
export function parseProtos(): protobuf.Root {
  // Envoy's protos import google/protobuf/descriptor.proto (for options), which protobufjs ships
  // as JSON but does not register as a bundled file; @grpc/proto-loader registers it this way
  // when it is loaded (its addCommonProtos), which berthd no longer does.
  const descriptor = require('protobufjs/google/protobuf/descriptor.json') as { nested: { google: { nested: { protobuf: { nested: Record<string, protobuf.AnyNestedObject> } } } } };
  protobuf.common('descriptor', descriptor.nested.google.nested.protobuf.nested);
  const dirs = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((x) => path.join(depsDir(), x));
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    if (path.isAbsolute(target)) return target;
    for (const d of dirs) {
      const f = path.join(d, target);
      if (fs.existsSync(f)) return f;
    }
    return target;
  };
  root.loadSync(FILES, { keepCase: true });
  root.resolveAll();
  return root;
}

/** Envoy's API, loaded once: the build's precompiled JSON when it is current, else parsed. */
export function protoRoot(): protobuf.Root {
  if (!cachedRoot) {
    const root = loadPrecompiled(PRECOMPILED) ?? parseProtos();
    root.resolveAll();
    cachedRoot = root;
  }
  return cachedRoot;
}

/**
 * The messages berth encodes or decodes at the top level: the resources it serves, the Any
 * payloads inside them, and ADS's request and response. The static code covers these and every
 * message reachable from them through fields (typeClosure).
 */
export const TOP_LEVEL_TYPES: readonly string[] = [
  ...Object.values(TypeUrl).map((u) => u.replace(/^.*\//, '')),
  HCM_TYPE, ROUTER_TYPE, DOWNSTREAM_TLS_TYPE, TLS_INSPECTOR_TYPE, FILE_ACCESS_LOG_TYPE, HTTP_PROTOCOL_OPTIONS_TYPE,
  'envoy.service.discovery.v3.DiscoveryRequest', 'envoy.service.discovery.v3.DiscoveryResponse',
];

/** Full names (no leading dot) of `names` and every message type reachable from them by fields, sorted. */
export function typeClosure(root: protobuf.Root, names: readonly string[]): string[] {
  const seen = new Set<string>();
  const queue = names.map((n) => root.lookupType(n));
  for (let t = queue.pop(); t; t = queue.pop()) {
    if (seen.has(t.fullName)) continue;
    seen.add(t.fullName);
    for (const f of t.fieldsArray) {
      f.resolve();
      if (f.resolvedType instanceof protobuf.Type) queue.push(f.resolvedType);
    }
  }
  return [...seen].map((n) => n.slice(1)).sort();
}

/** Where the build writes the static code (dist/src/proxy/envoy-static.js). */
export const STATIC_CODE = distPath('src/proxy/envoy-static.js');

/** What static code offers per message (protobufjs-cli's static-module output; reflection's Type has the same). */
export interface MessageCodec {
  fromObject(obj: Record<string, unknown>): object;
  encode(msg: object): protobuf.Writer;
  decode(buf: Uint8Array): object;
  toObject(msg: object, opts?: protobuf.IConversionOptions): Record<string, unknown>;
}

/** The static module's namespace tree, plus the stamp the build appends (files and versions). */
interface StaticRoot {
  berthSource?: { files: string[]; source: string };
  [name: string]: unknown;
}

let cachedStatic: StaticRoot | null | undefined;

/**
 * The build's static code when it is there and was made from these files and versions, else
 * null (then reflection encodes). `file` for tests.
 */
export function loadStatic(file: string = STATIC_CODE): StaticRoot | null {
  let mod: StaticRoot;
  try {
    mod = require(file) as StaticRoot;
  } catch {
    return null;
  }
  const stamp = mod?.berthSource;
  if (!stamp || !Array.isArray(stamp.files) || stamp.files.join('\n') !== FILES.join('\n') || stamp.source !== protoSource()) return null;
  return mod;
}

function staticRoot(): StaticRoot | null {
  if (cachedStatic === undefined) cachedStatic = loadStatic();
  return cachedStatic;
}

/**
 * Encode with the build's static code (the default, when current) or with reflection only: for
 * tests that compare the two, and for measuring what the static code saves.
 */
export function useStaticCode(on: boolean): void {
  cachedStatic = on ? loadStatic() : null;
}

/** The static codec of a message, if the static code has it. */
export function staticCodec(fullName: string, root: StaticRoot | null = staticRoot()): MessageCodec | null {
  let node: unknown = root;
  for (const part of fullName.split('.')) {
    if (node === null || typeof node !== 'object' && typeof node !== 'function') return null;
    node = Object.prototype.hasOwnProperty.call(node, part) ? (node as Record<string, unknown>)[part] : undefined;
  }
  const c = node as Partial<MessageCodec> | undefined;
  return c && typeof c.encode === 'function' && typeof c.decode === 'function' && typeof c.fromObject === 'function' && typeof c.toObject === 'function' ? c as MessageCodec : null;
}

/**
 * Envoy's API for lookups only (the strict check, ADS's methods): unresolved when static code
 * encodes (see loadPrecompiled), else protoRoot() itself.
 */
function schemaRoot(): protobuf.Root {
  if (!staticRoot()) return protoRoot();
  if (!cachedSchema) cachedSchema = loadPrecompiled(PRECOMPILED, { resolved: false }) ?? protoRoot();
  return cachedSchema;
}

/**
 * The same definitions in @grpc/proto-loader's form (every Envoy message and service), for gRPC
 * clients (the unit tests' ADS client). berthd's server needs one service: adsServiceDefinition.
 */
export function packageDefinition(): protoLoader.PackageDefinition {
  // Required here, not at the top: berthd itself never builds this (a module it need not load).
  const loader = require('@grpc/proto-loader') as typeof protoLoader;
  if (!cachedDef) cachedDef = loader.fromJSON(protoRoot().toJSON(), LOAD_OPTIONS);
  return cachedDef;
}

/**
 * The gRPC definition of envoy.service.discovery.v3.AggregatedDiscoveryService, built from
 * protoRoot() directly: per method what @grpc/proto-loader builds (path, streaming flags, and
 * serializers that convert as LOAD_OPTIONS says), without also building a definition and a file
 * descriptor set for every other Envoy message, which packageDefinition() does and which cost
 * berthd ~0.25 s of its start (node --cpu-prof: proto-loader's fromJSON and
 * createPackageDefinition) to serve this one service. The unit tests' client still uses
 * packageDefinition(), so the two are checked against each other on the wire.
 */
export function adsServiceDefinition(): grpc.ServiceDefinition {
  const svc = schemaRoot().lookupService('envoy.service.discovery.v3.AggregatedDiscoveryService');
  const def: Record<string, grpc.MethodDefinition<object, object>> = {};
  for (const m of svc.methodsArray) {
    m.resolve();
    const req = codec(m.resolvedRequestType!.fullName.slice(1));
    const res = codec(m.resolvedResponseType!.fullName.slice(1));
    const serialize = (t: MessageCodec) => (v: object): Buffer => t.encode(t.fromObject(v as Record<string, unknown>)).finish() as Buffer; // (a Buffer under node: BufferWriter)
    const deserialize = (t: MessageCodec) => (b: Buffer): object => t.toObject(t.decode(b), LOAD_OPTIONS as protobuf.IConversionOptions);
    def[m.name] = {
      path: `/${svc.fullName.slice(1)}/${m.name}`,
      requestStream: !!m.requestStream,
      responseStream: !!m.responseStream,
      requestSerialize: serialize(req),
      requestDeserialize: deserialize(req),
      responseSerialize: serialize(res),
      responseDeserialize: deserialize(res),
      originalName: m.name[0].toLowerCase() + m.name.slice(1),
    };
  }
  return def;
}

function messageType(fullName: string, root: protobuf.Root = protoRoot()): protobuf.Type {
  try {
    return root.lookupType(fullName);
  } catch {
    throw new Error(`unknown protobuf message ${fullName}`);
  }
}

/** The codec of a message: the static code's, else reflection's (which generates it on first use). */
function codec(fullName: string): MessageCodec {
  return staticCodec(fullName) ?? messageType(fullName);
}

/**
 * protobufjs' fromObject silently drops keys it does not know and enum names it cannot map; Envoy
 * would then run with a default instead of what berth meant. Walk the object against the message
 * type first and fail on anything the proto does not define.
 */
function checkStrict(type: protobuf.Type, obj: unknown, at: string): void {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) throw new Error(`${at}: expected a ${type.fullName.slice(1)} object`);
  if (type.fullName === '.google.protobuf.Any') return; // already encoded by toAny()
  for (const [k, v] of Object.entries(obj as Record<string, unknown>)) {
    if (v === undefined || v === null) continue;
    const f = type.fields[k];
    if (!f) throw new Error(`${at}.${k}: no such field in ${type.fullName.slice(1)}`);
    f.resolve();
    if (f.map) continue;
    for (const item of f.repeated ? (v as unknown[]) : [v]) {
      if (f.resolvedType instanceof protobuf.Enum) {
        if (typeof item === 'string' && !(item in f.resolvedType.values)) throw new Error(`${at}.${k}: ${item} is not a ${f.resolvedType.fullName.slice(1)}`);
      } else if (f.resolvedType instanceof protobuf.Type) {
        checkStrict(f.resolvedType, item, `${at}.${k}`);
      }
    }
  }
}

/** Encode a plain object as the named message (field names as in the .proto); unknown names throw. */
export function encode(fullName: string, obj: object): Buffer {
  checkStrict(messageType(fullName, schemaRoot()), obj, fullName.replace(/^.*\./, ''));
  const c = codec(fullName);
  return Buffer.from(c.encode(c.fromObject(obj as Record<string, unknown>)).finish());
}

/** Decode bytes of the named message into a plain object (enums as names, 64-bit ints as strings). */
export function decode(fullName: string, buf: Buffer | Uint8Array): Record<string, unknown> {
  const c = codec(fullName);
  return c.toObject(c.decode(buf), CONVERSION);
}

export interface AnyMessage {
  type_url: string;
  value: Buffer;
}

/** google.protobuf.Any of the named message. */
export function toAny(fullName: string, obj: object): AnyMessage {
  return { type_url: `type.googleapis.com/${fullName}`, value: encode(fullName, obj) };
}

/** Unpack an Any whose message berth knows. */
export function fromAny(a: AnyMessage): Record<string, unknown> {
  const name = a.type_url.replace(/^.*\//, '');
  return decode(name, Buffer.from(a.value));
}
