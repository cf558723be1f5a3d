/**
 * Envoy's own API protos, loaded once from the copy vendored by @grpc/grpc-js-xds, so every xDS
 * resource berth sends is encoded by the real message definitions (a misspelt field is an error
 * here, not a silently ignored JSON key in Envoy).
 */
import path from 'node:path';
import * as protoLoader from '@grpc/proto-loader';

/** Type URLs of the four resource types berth serves, in the order they must be pushed. */
export const TypeUrl = {
  cluster: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  endpoint: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
  listener: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  route: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
} as const;
export type TypeUrl = (typeof TypeUrl)[keyof typeof TypeUrl];

/** CDS before EDS, LDS before RDS (the xDS "eventual consistency" ordering). */
export const PUSH_ORDER: readonly TypeUrl[] = [TypeUrl.cluster, TypeUrl.endpoint, TypeUrl.listener, TypeUrl.route];

export const HCM_TYPE = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
export const ROUTER_TYPE = 'envoy.extensions.filters.http.router.v3.Router';

const FILES = [
  'envoy/service/discovery/v3/ads.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
];

/** Field names exactly as in the .proto files (snake_case), the spelling of Envoy's docs. */
const LOAD_OPTIONS: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: false, oneofs: false };

let cached: protoLoader.PackageDefinition | null = null;

function depsDir(): string {
  // grpc-js-xds does not export its deps/ folder; find it next to its package.json.
  const pkg = require.resolve('@grpc/grpc-js-xds/package.json');
  return path.join(path.dirname(pkg), 'deps');
}

export function packageDefinition(): protoLoader.PackageDefinition {
  if (!cached) {
    const d = depsDir();
    cached = protoLoader.loadSync(FILES, {
      ...LOAD_OPTIONS,
      includeDirs: ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((x) => path.join(d, x)),
    });
  }
  return cached;
}

function messageType(fullName: string): protoLoader.MessageTypeDefinition<object, object> {
  const t = packageDefinition()[fullName] as protoLoader.MessageTypeDefinition<object, object> | undefined;
  if (!t || typeof (t as { serialize?: unknown }).serialize !== 'function') throw new Error(`unknown protobuf message ${fullName}`);
  return t;
}

/** Encode a plain object as the named message (field names as in the .proto). */
export function encode(fullName: string, obj: object): Buffer {
  return messageType(fullName).serialize(obj);
}

/** Decode bytes of the named message into a plain object (enums as names, 64-bit ints as strings). */
export function decode(fullName: string, buf: Buffer): Record<string, unknown> {
  return messageType(fullName).deserialize(buf) as Record<string, unknown>;
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
