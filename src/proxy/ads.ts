/**
 * The ADS server Envoy connects to over /run/berth/xds.sock: state-of-the-world xDS on
 * envoy.service.discovery.v3.AggregatedDiscoveryService.
 *
 * Protocol points that matter (xDS REST/gRPC protocol doc, "ACK/NACK and resource type instance
 * version"):
 * - every response carries the type's snapshot version and a fresh nonce; a request whose
 *   response_nonce is not the last one sent for its type is stale and ignored;
 * - a request echoing the last nonce is an ACK (version_info = what we sent) or, with error_detail,
 *   a NACK: Envoy keeps its last good config; we log Envoy's error and do NOT resend the rejected
 *   version (that would loop) - the next new snapshot is sent as usual;
 * - on a new snapshot, types are pushed in the order CDS, EDS, LDS, RDS so that no resource
 *   arrives before what it refers to; a type is only sent on a stream that subscribed to it.
 */
import fs from 'node:fs';
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../util/log';
import { PUSH_ORDER, adsServiceDefinition, type AnyMessage, type TypeUrl } from './protos';
import type { Snapshot } from './resources';

interface DiscoveryRequest {
  version_info?: string;
  node?: { id?: string };
  resource_names?: string[];
  type_url?: string;
  response_nonce?: string;
  error_detail?: { code?: number; message?: string };
}

interface DiscoveryResponse {
  version_info: string;
  resources: AnyMessage[];
  type_url: string;
  nonce: string;
}

type Stream = grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>;

/** What one stream knows about one resource type. */
interface TypeState {
  /** Requested resource names; null = wildcard (all of the type). */
  names: Set<string> | null;
  sentVersion: string | null;
  sentNonce: string | null;
  sentNames: Set<string> | null;
  ackedVersion: string | null;
}

export interface AckEvent {
  node: string;
  typeUrl: string;
  version: string;
}

export interface NackEvent extends AckEvent {
  error: string;
}

function sameNames(a: Set<string> | null, b: Set<string> | null): boolean {
  if (a === null || b === null) return a === b;
  return a.size === b.size && [...a].every((x) => b.has(x));
}

class AdsStream {
  readonly types = new Map<string, TypeState>();
  node = '';

  constructor(readonly call: Stream, private readonly server: AdsServer, private readonly log: Logger) {}

  onRequest(req: DiscoveryRequest): void {
    const type = req.type_url ?? '';
    if (req.node?.id) this.node = req.node.id;
    if (!(PUSH_ORDER as readonly string[]).includes(type)) {
      this.log.warn({ typeUrl: type }, 'Envoy asked for a resource type berth does not serve');
      return;
    }
    let ts = this.types.get(type);
    if (!ts) {
      ts = { names: null, sentVersion: null, sentNonce: null, sentNames: null, ackedVersion: null };
      this.types.set(type, ts);
    }
    const nonce = req.response_nonce ?? '';
    if (nonce && nonce !== ts.sentNonce) {
      this.log.debug({ typeUrl: type, nonce }, 'stale request ignored');
      return;
    }
    if (nonce) {
      if (req.error_detail && (req.error_detail.message || req.error_detail.code)) {
        const ev: NackEvent = { node: this.node, typeUrl: type, version: ts.sentVersion ?? '', error: req.error_detail.message ?? `code ${req.error_detail.code}` };
        this.log.error({ typeUrl: type, rejected: ev.version, kept: req.version_info, error: ev.error }, 'Envoy rejected a config (NACK); its last good config stays in force');
        this.server.stats.nacks++;
        this.server.emit('nack', ev);
      } else {
        ts.ackedVersion = req.version_info ?? '';
        this.log.debug({ typeUrl: type, version: ts.ackedVersion }, 'ACK');
        this.server.stats.acks++;
        this.server.emit('ack', { node: this.node, typeUrl: type, version: ts.ackedVersion } satisfies AckEvent);
      }
    }
    const names = req.resource_names ?? [];
    ts.names = names.length ? new Set(names) : null;
    this.maybeSend(type as TypeUrl);
  }

  /** Send the type if Envoy subscribed and has not been sent this version for these names. */
  maybeSend(type: TypeUrl): void {
    const ts = this.types.get(type);
    const snap = this.server.snapshot.types.get(type);
    if (!ts || !snap || this.server.held) return;
    if (ts.sentVersion === snap.version && sameNames(ts.sentNames, ts.names)) return;
    const resources = [...snap.resources.values()]
      .filter((r) => ts.names === null || ts.names.has(r.name))
      .map((r) => r.resource);
    const nonce = this.server.nextNonce();
    ts.sentVersion = snap.version;
    ts.sentNonce = nonce;
    ts.sentNames = ts.names === null ? null : new Set(ts.names);
    this.log.debug({ typeUrl: type, version: snap.version, nonce, count: resources.length }, 'xDS push');
    this.server.stats.pushes++;
    this.call.write({ version_info: snap.version, resources, type_url: type, nonce });
  }
}

export class AdsServer extends EventEmitter {
  private server: grpc.Server | null = null;
  private readonly streams = new Set<AdsStream>();
  private nonce = 0;
  /**
   * Responses sent, ACKs and NACKs received, and discovery requests handled (whatever they were),
   * over all streams since start.
   */
  readonly stats = { pushes: 0, acks: 0, nacks: 0, requests: 0 };
  snapshot: Snapshot;
  /**
   * True until the first setSnapshot() when constructed with `hold`: requests are recorded but not
   * answered. A restarted berthd must not answer the Envoy it adopted with its empty start-up
   * snapshot (Envoy would drop every listener); it answers once it has computed the real state,
   * which is then the very version Envoy already runs (versions are content hashes).
   */
  held: boolean;

  constructor(initial: Snapshot, private readonly log: Logger, opts: { hold?: boolean } = {}) {
    super();
    this.snapshot = initial;
    this.held = opts.hold ?? false;
  }

  nextNonce(): string {
    return String(++this.nonce);
  }

  get streamCount(): number {
    return this.streams.size;
  }

  /** Listen on a unix socket, mode 0600 (only root's Envoy may take config from us). */
  async listen(socketPath: string): Promise<void> {
    fs.rmSync(socketPath, { force: true });
    const server = new grpc.Server();
    server.addService(adsServiceDefinition(), {
      StreamAggregatedResources: (call: Stream) => this.onStream(call),
      DeltaAggregatedResources: (call: grpc.ServerDuplexStream<unknown, unknown>) => {
        call.emit('error', { code: grpc.status.UNIMPLEMENTED, details: 'berth serves state-of-the-world ADS only' });
      },
    });
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix:${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
    fs.chmodSync(socketPath, 0o600);
    this.server = server;
  }

  private onStream(call: Stream): void {
    const s = new AdsStream(call, this, this.log);
    this.streams.add(s);
    this.log.info({ streams: this.streams.size }, 'Envoy connected to ADS');
    call.on('data', (req: DiscoveryRequest) => {
      try {
        s.onRequest(req);
      } catch (e) {
        this.log.error({ err: e }, 'handling a discovery request failed');
      }
      this.stats.requests++;
    });
    const end = () => {
      if (this.streams.delete(s)) this.log.info({ node: s.node }, 'ADS stream closed');
    };
    call.on('end', () => {
      end();
      call.end();
    });
    call.on('error', end);
    call.on('close', end);
  }

  /** Swap in a new snapshot and push what changed to every stream, in CDS, EDS, LDS, RDS order. */
  setSnapshot(s: Snapshot): void {
    this.snapshot = s;
    this.held = false;
    for (const st of this.streams) for (const t of PUSH_ORDER) st.maybeSend(t);
  }

  /**
   * True when some stream has ACKed the current version of every type it subscribed to (Envoy
   * runs this snapshot).
   */
  isAcked(): boolean {
    for (const st of this.streams) {
      if (!st.types.size) continue;
      let all = true;
      for (const [t, ts] of st.types) if (ts.ackedVersion !== this.snapshot.types.get(t as TypeUrl)?.version) all = false;
      if (all) return true;
    }
    return false;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return;
    for (const s of this.streams) s.call.end();
    this.streams.clear();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => { server.forceShutdown(); resolve(); }, 2000);
      server.tryShutdown(() => { clearTimeout(timer); resolve(); });
    });
  }
}
