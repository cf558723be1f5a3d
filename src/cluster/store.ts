/**
 * ClusterStore: berth's connection to etcd (npm `etcd3` over @grpc/grpc-js). It owns
 *   - a lease (TTL LEASE_TTL_S, renewed by keepLeaseAlive) under which this node's record and its
 *     per-service backend records are written: when the host dies or is cut off, etcd deletes
 *     them by itself after the TTL (DESIGN lesson 12; Cilium's kvstore does the same);
 *   - one watch of the prefix. It starts from a full read at revision R (watch from R+1); etcd3
 *     resumes it after a reconnect from the last revision it saw; when that revision has been
 *     compacted etcd cancels the watch, and the store re-reads everything and watches again;
 *   - VIP claims (vipalloc.ts) through etcd transactions.
 *
 * Level-triggered like the rest of berthd: publish() only records what should be in etcd; one
 * loop makes etcd match (puts what differs, deletes what is no longer wanted) and retries after
 * any failure, forever, without touching the view. So with etcd unreachable or without quorum
 * nothing is withdrawn here or on peers (their watches stall too), local changes apply locally
 * (the daemon does not wait for etcd), and everything is published when etcd answers again.
 *
 * Restart without a flap: a new berthd gets a new lease, so before its first Docker list it
 * re-puts its own records found in etcd under that lease (adopt); the old lease then expires
 * owning nothing. Records are replaced by the first full publish.
 *
 * Emits 'change' when the view changed (the daemon reconciles) and 'status' on connection
 * changes. Never throws for etcd being down; start() fails only for unreadable TLS files.
 */
import { EventEmitter } from 'node:events';
import dns from 'node:dns/promises';
import fs from 'node:fs';
import net from 'node:net';
import { Etcd3, EtcdLeaseInvalidError, isRecoverableError, type IOptions, type Lease, type Watcher } from 'etcd3';
import { ConsecutiveBreaker, ExponentialBackoff, circuitBreaker, handleWhen, noop } from 'cockatiel';
import type { Logger } from '../util/log';
import { run } from '../util/exec';
import {
  decodeNode, decodeService, decodeVip, decodeVipOwner, encodeNode, encodeService, type NodeRecord,
  type RecordRules, recordRules, type ServiceRecord, type VipOwnerRecord, type VipRecord,
} from './codec';
import { type KeyLayout, keyLayout, parseKey } from './keys';
import type { ClusterView } from './merge';
import { claimVip, type ClaimRequest, type ClaimResult, type TxnKv } from './vipalloc';
import { ClusterError } from './errors';

/** Lease TTL in seconds: a dead host's backends are gone from its peers after this (+ watch latency). */
export const LEASE_TTL_S = 5;
/** Unary etcd calls give up after this (ms); the loops retry. */
const CALL_DEADLINE_MS = 2000;
/** Retry delay bounds of the publish and watch loops (ms). */
const RETRY_MIN_MS = 200;
const RETRY_MAX_MS = 2000;

export interface ClusterOptions {
  endpoints: string[];
  caFile: string | null;
  certFile: string | null;
  keyFile: string | null;
  prefix: string;
  nodeName: string;
  /** null: the source address of the route to the first endpoint. */
  nodeAddress: string | null;
  serviceCidr: string;
  serviceCidr6: string;
  berthVersion: string;
  logger: Logger;
  /** Lease TTL in whole seconds (berthd: the etcdLeaseTtl key; default LEASE_TTL_S). */
  leaseTtl?: number;
}

/** What this node publishes: its container subnets and its local services. */
export interface Publication {
  subnets: string[];
  /** `pinned`: the VIP comes from a berth.vip/berth.vip6 label (a pin may move an assignment). */
  services: (Omit<ServiceRecord, 'node'> & { pinned?: boolean })[];
}

export type ConnectionState = 'connecting' | 'connected' | 'disconnected';

/** Health of one of the store's two paths to etcd: the watch (reads) and the lease/publish (writes). */
export type PathHealth = 'unknown' | 'up' | 'down';

/**
 * The connection state `berth status` and the metric report, from the health of both paths:
 * `disconnected` when either failed last (an etcd without quorum keeps a watch open but takes
 * no write, and a lease kept alive does not mean the watch on a dead member still delivers);
 * `connected` once the watch is up and the writes have not failed; `connecting` before that.
 */
export function connectionState(watch: PathHealth, publish: PathHealth): ConnectionState {
  if (watch === 'down' || publish === 'down') return 'disconnected';
  return watch === 'up' ? 'connected' : 'connecting';
}

/**
 * etcd's default `--grpc-keepalive-min-time` (ms): a client that pings more often is sent a
 * GOAWAY ("too_many_pings"; measured: etcd 3.4 did so for pings 0.67 s apart), so berth's pings
 * are 6 s apart at least.
 */
const ETCD_MIN_PING_MS = 6000;

/**
 * gRPC keepalive on the etcd channels, from the lease TTL (s): pings every max(6 s, TTL/3), 3 s
 * to answer. A member that stops answering without closing the connection (its host lost
 * power: no FIN, no RST) is then noticed within ~9 s and the watch resumes on another member
 * from its last revision. Without it the watch stays on such a member, open and silent, until
 * TCP gives up (many minutes), and the node never sees its peers' changes again (seen in the VM
 * cluster run of 2026-12-01). The lease does not depend on this (keepLeaseAlive).
 */
export function etcdKeepalive(ttlS: number): { 'grpc.keepalive_time_ms': number; 'grpc.keepalive_timeout_ms': number } {
  return { 'grpc.keepalive_time_ms': Math.max(ETCD_MIN_PING_MS, Math.floor((ttlS * 1000) / 3)), 'grpc.keepalive_timeout_ms': 3000 };
}

/**
 * When berth renews its lease (keepLeaseAlive), from the TTL (s): every TTL/3 (etcd's Go client's
 * cadence), each attempt given TTL/6 (0.3-5 s) to answer, so that after a renewal fails at
 * least three more attempts, each free to go to another member, fit before etcd would expire
 * the lease.
 */
export function keepaliveSchedule(ttlS: number): { everyMs: number; attemptMs: number } {
  const ttl = ttlS * 1000;
  return { everyMs: Math.floor(ttl / 3), attemptMs: Math.min(5000, Math.max(300, Math.floor(ttl / 6))) };
}

export interface ClusterStatus {
  etcd: ConnectionState;
  endpoints: string[];
  node: string;
  address: string | null;
  /** Node names with a live record (this node included once published). */
  nodes: string[];
  /** Last etcd revision this node has seen (watch or read); "0" before the first read. */
  revision: string;
  lease: string | null;
  /** Full re-reads done because the watch's revision was compacted. */
  compactions: number;
  /** Times the etcd connection was lost after being up. */
  disconnects: number;
  /** Records from peers rejected by the codecs (see the log for each). */
  rejectedRecords: number;
  lastError: string | null;
}

interface RawKv {
  value: string;
  modRevision: string;
  createRevision: string;
}

/** The address the kernel would use as source toward `host` (`ip route get`). */
export async function routeSourceTo(host: string): Promise<string> {
  const ip = net.isIP(host) ? host : (await dns.lookup(host)).address;
  const r = await run('ip', ['-j', 'route', 'get', ip]);
  if (r.code !== 0) throw new ClusterError('BERTH_CLUSTER_NODE_ADDRESS', `ip route get ${ip}: ${r.stderr.trim() || `exit ${r.code}`}`);
  const routes = JSON.parse(r.stdout || '[]') as { prefsrc?: string }[];
  const src = routes[0]?.prefsrc;
  if (!src) throw new ClusterError('BERTH_CLUSTER_NODE_ADDRESS', `no source address on the route to ${ip}; set nodeAddress`);
  return src;
}

/** etcd3's transaction builder as the narrow TxnKv that vipalloc.ts needs. */
export class EtcdTxnKv implements TxnKv {
  constructor(private readonly client: Etcd3) {}

  async txn(op: Parameters<TxnKv['txn']>[0]): ReturnType<TxnKv['txn']> {
    const c = this.client;
    const compares: [string, 'Version' | 'Mod', number | string][] = [
      ...op.absent.map((k) => [k, 'Version', 0] as [string, 'Version', number]),
      ...op.unchanged.map(([k, rev]) => [k, 'Mod', rev] as [string, 'Mod', string]),
    ];
    if (compares.length === 0) throw new Error('txn needs at least one compare');
    let b = c.if(compares[0][0], compares[0][1], '==', compares[0][2]);
    for (const [k, col, v] of compares.slice(1)) b = b.and(k, col, '==', v);
    const res = await b
      .then(...op.puts.map(([k, v]) => c.put(k).value(v)), ...op.deletes.map((k) => c.delete().key(k)))
      .else(...op.read.map((k) => c.get(k)))
      .commit();
    const values = new Map<string, { value: string; modRevision: string } | null>();
    if (!res.succeeded) {
      op.read.forEach((k, i) => {
        const kv = res.responses[i]?.response_range?.kvs?.[0];
        values.set(k, kv ? { value: kv.value.toString(), modRevision: String(kv.mod_revision) } : null);
      });
    }
    return { succeeded: res.succeeded, values };
  }
}

export class ClusterStore extends EventEmitter {
  readonly keys: KeyLayout;
  private readonly rules: RecordRules;
  private client: Etcd3 | null = null;
  private kv: EtcdTxnKv | null = null;
  private lease: Lease | null = null;
  /** A lease whose grant is in flight (stop() must release it too, see ensureLease). */
  private granting: Lease | null = null;
  private leaseId: string | null = null;
  private watcher: Watcher | null = null;
  private address: string | null;
  private stopped = false;

  /** Everything under the prefix, as last read/watched: key -> value and revisions. */
  private readonly raw = new Map<string, RawKv>();
  /** Decoded view, rebuilt when raw changes. */
  private cached: { view: ClusterView; vips: Map<string, VipRecord & { createRevision: string }> } | null = null;
  /** Rejected record texts already logged (key -> value), so a bad record is logged once. */
  private readonly rejected = new Map<string, string>();
  private revision = 0n;
  private state: ConnectionState = 'connecting';
  private readonly health: { watch: PathHealth; publish: PathHealth } = { watch: 'unknown', publish: 'unknown' };
  private compactions = 0;
  private disconnects = 0;
  private lastError: string | null = null;

  /** What should be in etcd under our lease (key -> value); null before the first publish(). */
  private wanted: Map<string, string> | null = null;
  /** What is in etcd under the current lease, as we wrote it. */
  private readonly written = new Map<string, string>();
  /** Own records adopted from a previous run (until the first publish). */
  private adopted: Map<string, string> | null = null;
  private pending: Publication | null = null;
  /** Claim outcomes per kind/name from the last publish (conflicts are reported on the service). */
  private readonly claims = new Map<string, ClaimResult>();
  /** Wakes the publish loop's sleep (a new publication, a lost lease, stop()). */
  private kick: (() => void) | null = null;
  /** Wakes the watch loop's retry sleep (stop()). */
  private kickWatch: (() => void) | null = null;
  private publishing: Promise<void> | null = null;
  private watching: Promise<void> | null = null;
  /** Ends the current watchFrom() wait (stop() must not depend on the client's events). */
  private endWatch: (() => void) | null = null;

  constructor(private readonly opts: ClusterOptions) {
    super();
    this.keys = keyLayout(opts.prefix);
    this.rules = recordRules(opts.serviceCidr, opts.serviceCidr6);
    this.address = opts.nodeAddress;
  }

  private get log(): Logger {
    return this.opts.logger;
  }

  private get ttl(): number {
    return this.opts.leaseTtl ?? LEASE_TTL_S;
  }

  /** Connects in the background; resolves once the loops run (not once etcd answers). */
  async start(): Promise<void> {
    const o = this.opts;
    const options: IOptions = {
      hosts: o.endpoints,
      dialTimeout: CALL_DEADLINE_MS,
      grpcOptions: etcdKeepalive(this.ttl),
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + CALL_DEADLINE_MS }),
      // No retries inside the client: berth's own loops retry with a short, bounded delay, so
      // recovery after an outage takes at most RETRY_MAX_MS. With several members, a member
      // that failed a call is set aside for one lease renewal attempt (keepaliveSchedule; a
      // circuit breaker per host that opens on one recoverable failure): the client picks a
      // member at random for every call, and without this a dead member kept getting a third of
      // them, each lost for its deadline. Longer, and a blip on every connection at once (all
      // members set aside) would outlast a short lease. With one endpoint nothing is set aside.
      faultHandling: {
        host: () => (o.endpoints.length > 1
          ? circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: keepaliveSchedule(this.ttl).attemptMs, breaker: new ConsecutiveBreaker(1) })
          : noop),
        global: noop,
        watchBackoff: new ExponentialBackoff({ initialDelay: RETRY_MIN_MS, maxDelay: RETRY_MAX_MS }).next(),
      },
    };
    if (o.caFile || o.certFile) {
      const read = (f: string | null) => (f ? fs.readFileSync(f) : undefined);
      options.credentials = { rootCertificate: read(o.caFile) ?? Buffer.alloc(0), privateKey: read(o.keyFile), certChain: read(o.certFile) };
    }
    this.client = new Etcd3(options);
    this.kv = new EtcdTxnKv(this.client);
    if (!this.address) {
      const host = new URL(o.endpoints[0]).hostname.replace(/^\[|\]$/g, '');
      this.address = await routeSourceTo(host);
      this.log.info({ nodeAddress: this.address }, `nodeAddress: ${this.address} (source of the route to ${host})`);
    }
    this.watching = this.watchLoop();
    this.publishing = this.publishLoop();
  }

  /** Records what this node should have in etcd; the publish loop makes it so. */
  publish(p: Publication): void {
    this.pending = p;
    this.kick?.();
  }

  /** The decoded cluster view (records that failed their codec are left out). */
  view(): ClusterView {
    return this.decode().view;
  }

  /** The cluster's VIP assignments by `kind/name`, with etcd's create revision (ownership order). */
  vipAssignments(): Map<string, VipRecord & { createRevision: string }> {
    return this.decode().vips;
  }

  /** Claim problems of this node's services by `kind/name` (pinned VIP owned by another name). */
  conflicts(): Map<string, string> {
    const out = new Map<string, string>();
    for (const [k, c] of this.claims) if (c.result === 'conflict') out.set(k, c.message);
    return out;
  }

  status(): ClusterStatus {
    return {
      etcd: this.state,
      endpoints: this.opts.endpoints,
      node: this.opts.nodeName,
      address: this.address,
      nodes: [...this.view().nodes.keys()].sort(),
      revision: this.revision.toString(),
      lease: this.leaseId,
      compactions: this.compactions,
      disconnects: this.disconnects,
      rejectedRecords: this.rejected.size,
      lastError: this.lastError,
    };
  }

  /**
   * Stops the loops and closes the client. The lease is NOT revoked: a restarted berthd adopts
   * the records before it expires (no flap); a berthd that stays down loses them after the TTL.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.kick?.();
    this.kickWatch?.();
    this.endWatch?.();
    // Bounded: a watcher whose stream is reconnecting may never answer the cancel.
    const w = this.watcher;
    this.watcher = null;
    const canceled = w ? await Promise.race([w.cancel().then(() => true, () => false), new Promise<boolean>((r) => setTimeout(() => r(false), 1000).unref())]) : true;
    for (const l of [this.lease, this.granting]) {
      // Stop keep-alives without revoking: the server keeps the lease until its TTL runs out.
      l?.removeAllListeners();
      l?.release();
    }
    this.lease = this.granting = null;
    // The loops end at their next await; each etcd call has a 2 s deadline. Bounded anyway: a
    // call the client never settles must not keep berthd from exiting.
    await Promise.race([Promise.allSettled([this.publishing, this.watching]), new Promise((r) => setTimeout(r, CALL_DEADLINE_MS + 1000).unref())]);
    this.client?.close();
    if (w && !canceled) {
      // A watcher still attached to etcd3's WatchManager makes it re-dial on timers forever,
      // also after close() (handleError -> setTimeout -> establishStream -> ClientClosedError
      // -> handleError ...), and those timers keep the process alive: the "all tests passed,
      // then Timed out" hang. Closing the channels errors the stream and leaves the manager
      // idle, and an idle manager drops a canceled watcher at once.
      await Promise.race([new Promise((r) => w.once('disconnected', r)), new Promise((r) => setTimeout(r, 1000).unref())]);
      await w.cancel().catch(() => undefined);
    }
  }

  // ----- state -----

  /** Records one path's health; the reported state follows from both (connectionState). */
  private setHealth(path: 'watch' | 'publish', h: PathHealth, err?: unknown): void {
    this.health[path] = h;
    this.setState(connectionState(this.health.watch, this.health.publish), err);
  }

  private setState(s: ConnectionState, err?: unknown): void {
    if (err) this.lastError = (err as Error).message;
    if (s === this.state) return;
    if (s === 'disconnected' && this.state === 'connected') this.disconnects++;
    this.log[s === 'connected' ? 'info' : 'warn']({ etcd: s, err: err ? (err as Error).message : undefined },
      s === 'connected' ? 'etcd connected' : `etcd ${s}; keeping the services from the last view and retrying`);
    this.state = s;
    this.emit('status', s);
  }

  /**
   * Sleeps `ms`, or until the loop's kick is called. Each loop has its own kick: a shared one
   * was taken over by whichever loop slept last, and a publication then waited for the publish
   * loop's 60 s timer.
   */
  private sleep(ms: number, slot: 'kick' | 'kickWatch' = 'kick'): Promise<void> {
    // After stop() nothing kicks a sleep any more: a loop that gets here must not wait.
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(t);
        if (this[slot] === wake) this[slot] = null;
        resolve();
      };
      const t = setTimeout(wake, ms);
      this[slot] = wake;
    });
  }

  private seen(rev: string | number | undefined): void {
    if (rev === undefined) return;
    const r = BigInt(rev);
    if (r > this.revision) this.revision = r;
  }

  private changed(): void {
    this.cached = null;
    this.emit('change');
  }

  private decode(): NonNullable<ClusterStore['cached']> {
    if (this.cached) return this.cached;
    const nodes = new Map<string, NodeRecord>();
    const services: ServiceRecord[] = [];
    const owners = new Map<string, VipOwnerRecord>();
    const vips = new Map<string, VipRecord & { createRevision: string }>();
    for (const [key, kv] of this.raw) {
      const k = parseKey(this.opts.prefix, key);
      if (!k) continue;
      const d =
        k.type === 'node' ? decodeNode(key, k, kv.value, this.rules)
        : k.type === 'service' ? decodeService(key, k, kv.value, this.rules)
        : k.type === 'vip' ? decodeVip(key, k, kv.value, this.rules)
        : decodeVipOwner(key, k, kv.value, this.rules);
      if (!d.ok) {
        if (this.rejected.get(key) !== kv.value) {
          this.rejected.set(key, kv.value);
          this.log.error({ key }, d.error);
        }
        continue;
      }
      this.rejected.delete(key);
      if (k.type === 'node') nodes.set(k.node, d.record as NodeRecord);
      else if (k.type === 'service') services.push(d.record as ServiceRecord);
      else if (k.type === 'vip') vips.set(`${k.kind}/${k.name}`, { ...(d.record as VipRecord), createRevision: kv.createRevision });
      else owners.set(k.addr, d.record as VipOwnerRecord);
    }
    for (const key of [...this.rejected.keys()]) if (!this.raw.has(key)) this.rejected.delete(key);
    this.cached = { view: { nodes, services, owners }, vips };
    return this.cached;
  }

  // ----- watch: full read, then one watch from its revision; re-read on compaction -----

  private async watchLoop(): Promise<void> {
    let delay = RETRY_MIN_MS;
    while (!this.stopped) {
      try {
        await this.fullRead();
        delay = RETRY_MIN_MS;
        const lost = await this.watchFrom(this.revision + 1n);
        if (lost === 'compacted') {
          this.compactions++;
          this.log.warn({ revision: this.revision.toString() }, 'etcd compacted past the watch revision; re-reading everything');
        }
      } catch (e) {
        if (this.stopped) break;
        this.setHealth('watch', 'down', e);
        await this.sleep(delay, 'kickWatch');
        delay = Math.min(delay * 2, RETRY_MAX_MS);
      }
    }
  }

  /** Replaces the raw view with a consistent read of the whole prefix. */
  private async fullRead(): Promise<void> {
    const res = await this.client!.getAll().prefix(this.keys.prefix).exec();
    this.raw.clear();
    for (const kv of res.kvs) {
      this.raw.set(kv.key.toString(), { value: kv.value.toString(), modRevision: String(kv.mod_revision), createRevision: String(kv.create_revision) });
    }
    this.revision = BigInt(res.header.revision);
    if (this.adopted === null && this.wanted === null) {
      // Own records of a previous run, re-put under our lease by the publish loop.
      const own = new Map<string, string>();
      for (const [key, kv] of this.raw) {
        const k = parseKey(this.opts.prefix, key);
        if ((k?.type === 'node' && k.node === this.opts.nodeName) || (k?.type === 'service' && k.node === this.opts.nodeName)) own.set(key, kv.value);
      }
      this.adopted = own;
      if (own.size) this.log.info({ records: own.size }, 'adopting this node\'s records from the previous run');
      this.kick?.();
    }
    this.setHealth('watch', 'up');
    this.changed();
  }

  /** Watches until the watch is canceled by etcd (compaction) or the store stops. */
  private watchFrom(start: bigint): Promise<'compacted' | 'stopped'> {
    return new Promise((resolve, reject) => {
      this.endWatch = () => resolve('stopped');
      if (this.stopped) return resolve('stopped');
      // watcher(), not create(): the Watcher exists (and is attached to etcd3's WatchManager)
      // from now on, also while it is connecting, and stop() must be able to cancel it then;
      // create() hands it out only once connected. Its 'error' before 'connected' is handled
      // below like create()'s rejection.
      const w = this.client!.watch().prefix(this.keys.prefix).startRevision(start.toString()).watcher();
      this.watcher = w;
      w.on('data', (res) => {
        for (const ev of res.events) {
          const key = ev.kv.key.toString();
          if (ev.type === 'Put') {
            this.raw.set(key, { value: ev.kv.value.toString(), modRevision: String(ev.kv.mod_revision), createRevision: String(ev.kv.create_revision) });
          } else {
            this.raw.delete(key);
          }
        }
        this.seen(res.header.revision);
        if (res.events.length) {
          // Debug: when a peer's change reached this node (the cross-host latency's middle leg).
          this.log.debug({ revision: String(res.header.revision), events: res.events.length, keys: res.events.slice(0, 4).map((e) => e.kv.key.toString()) }, 'etcd watch: records changed');
          this.changed();
        }
      });
      // Not seen(header.revision) here: a (re)created watch answers with etcd's current
      // revision before it delivers the events from its start revision.
      w.on('connected', () => this.setHealth('watch', 'up'));
      w.on('disconnected', (err: Error) => this.setHealth('watch', 'down', err));
      w.on('error', (err: Error) => {
        this.watcher = null;
        void w.cancel().catch(() => undefined);
        // etcd cancels a watch whose start revision was compacted. etcd 3.4 leaves
        // cancel_reason empty (only compact_revision says why, and etcd3 drops it), so ask
        // etcd directly whether the revision we wanted is still readable. Either way the loop
        // reads everything again.
        const wanted = this.revision + 1n;
        this.isCompacted(wanted).then((c) => (c ? resolve('compacted') : reject(err)), reject);
      });
      w.on('end', () => {
        if (this.stopped) resolve('stopped');
      });
    });
  }

  /** Has etcd compacted away revision `rev` (a range read at it fails with "compacted")? */
  private async isCompacted(rev: bigint): Promise<boolean> {
    try {
      await this.client!.getAll().prefix(this.keys.prefix).revision(rev.toString()).limit(1).exec();
      return false;
    } catch (e) {
      if (/compacted/i.test((e as Error).message)) return true;
      throw e;
    }
  }

  // ----- publish: make etcd hold exactly `wanted` under our lease -----

  private async publishLoop(): Promise<void> {
    let delay = RETRY_MIN_MS;
    while (!this.stopped) {
      try {
        if (await this.publishOnce()) this.setHealth('publish', 'up');
        delay = RETRY_MIN_MS;
        // Sleep until the next publish() (or a lost lease kicks us).
        if (!this.pending && this.lease) await this.sleep(60_000);
      } catch (e) {
        if (this.stopped) break;
        this.setHealth('publish', 'down', e);
        await this.sleep(delay);
        delay = Math.min(delay * 2, RETRY_MAX_MS);
      }
    }
  }

  private async ensureLease(): Promise<Lease> {
    if (this.lease) return this.lease;
    // Keep-alives are berth's own (keepLeaseAlive), not etcd3's stream: see there why.
    const lease = this.client!.lease(this.ttl, { autoKeepAlive: false });
    this.granting = lease;
    lease.on('lost', (err: Error) => this.leaseLost(lease, err));
    try {
      this.leaseId = await lease.grant();
      // Granted after stop() (which released it): its keep-alives must not start a loop.
      if (this.stopped) throw new Error('cluster store stopped');
    } catch (e) {
      lease.removeAllListeners();
      lease.release();
      throw e;
    } finally {
      if (this.granting === lease) this.granting = null;
    }
    this.lease = lease;
    this.log.info({ lease: this.leaseId, ttl: this.ttl }, 'etcd lease granted');
    void this.keepLeaseAlive(lease);
    return lease;
  }

  /** The lease is gone (etcd said so, or it went unrenewed for a TTL): publish under a new one. */
  private leaseLost(lease: Lease, err: unknown): void {
    if (this.lease !== lease) return;
    this.log.warn({ err: (err as Error).message }, 'etcd lease lost; re-publishing under a new lease');
    this.lease = null;
    this.leaseId = null;
    this.written.clear();
    lease.removeAllListeners();
    lease.release();
    this.setHealth('publish', 'down', err);
    this.kick?.();
  }

  /**
   * Renews `lease` every TTL/3 until it is replaced or the store stops, each renewal one short
   * keep-alive stream with its own deadline (keepaliveSchedule), on a member the client picks
   * for that call. etcd3's built-in keep-alive holds ONE stream open and notices a member that
   * went silent (powered off: no FIN, no RST) only after a whole TTL without an answer, when
   * etcd has already expired the lease: every peer then saw this host's backends vanish and
   * come back (a flap). Here a renewal that gets no answer fails within its deadline, the
   * client's per-host circuit breaker sets that member aside, and the next renewal goes to
   * another member, several times within one TTL. The lease counts as lost when etcd says so
   * or when no renewal succeeded for a whole TTL (re-putting under a new lease is harmless if
   * etcd had in fact kept the old one: the keys move to the new lease).
   */
  private async keepLeaseAlive(lease: Lease): Promise<void> {
    const { everyMs, attemptMs } = keepaliveSchedule(this.ttl);
    const pause = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());
    let lastOk = Date.now();
    while (!this.stopped && this.lease === lease) {
      try {
        await lease.keepaliveOnce({ deadline: Date.now() + attemptMs });
        lastOk = Date.now();
        if (this.lease !== lease) return;
        // Renewals are writes too: while etcd takes none (no quorum) status says so.
        this.setHealth('publish', 'up');
        await pause(everyMs);
      } catch (e) {
        if (this.stopped || this.lease !== lease) return;
        if (e instanceof EtcdLeaseInvalidError || Date.now() - lastOk >= this.ttl * 1000) return this.leaseLost(lease, e);
        this.setHealth('publish', 'down', e);
        await pause(RETRY_MIN_MS / 4);
      }
    }
  }

  /** One pass of making etcd hold `wanted`; false when there was nothing to publish yet. */
  private async publishOnce(): Promise<boolean> {
    if (this.adopted === null && this.pending === null && this.wanted === null) {
      await this.sleep(RETRY_MIN_MS);
      return false;
    }
    if (this.pending) {
      const p = this.pending;
      this.pending = null;
      try {
        this.wanted = await this.build(p);
      } catch (e) {
        if (!this.pending) this.pending = p;
        throw e;
      }
    }
    const want = this.wanted ?? this.adopted ?? new Map<string, string>();
    const lease = await this.ensureLease();
    const t0 = Date.now();
    let puts = 0;
    let deletes = 0;
    for (const [k, v] of want) {
      if (this.written.get(k) === v) continue;
      await lease.put(k).value(v).exec();
      this.written.set(k, v);
      puts++;
    }
    if (this.wanted) {
      // Own records no longer wanted, also those adopted from a previous run.
      const own = new Set([...this.written.keys(), ...(this.adopted?.keys() ?? [])]);
      for (const k of own) {
        if (want.has(k)) continue;
        await this.client!.delete().key(k).exec();
        this.written.delete(k);
        this.adopted?.delete(k);
        deletes++;
      }
      this.adopted = new Map();
    }
    // Debug: how long this node's changes took to reach etcd (the cross-host latency's first leg).
    if (puts || deletes) this.log.debug({ puts, deletes, ms: Date.now() - t0 }, 'published to etcd');
    return true;
  }

  /** Key/values for a publication; claims the VIPs of names the cluster has not agreed yet. */
  private async build(p: Publication): Promise<Map<string, string>> {
    const me = this.opts.nodeName;
    const out = new Map<string, string>();
    out.set(this.keys.node(me), encodeNode({
      name: me, address: this.address!, subnets: [...p.subnets].sort(), berth: this.opts.berthVersion, startedAt: STARTED_AT,
    }));
    const agreed = this.vipAssignments();
    const claims = new Map<string, ClaimResult>();
    for (const s of p.services) {
      const key = `${s.kind}/${s.name}`;
      const a = agreed.get(key);
      let ok = a !== undefined && a.vip === s.vip && a.vip6 === s.vip6;
      if (!ok) {
        const req: ClaimRequest = { kind: s.kind, name: s.name, vip: s.vip, vip6: s.vip6, pinned: s.pinned ?? false, node: me };
        const c = await claimVip(this.kv!, this.keys, req);
        claims.set(key, c);
        if (c.result === 'conflict') this.log.error({ service: s.name }, c.message);
        ok = c.result === 'created' || (c.result === 'exists' && c.record.vip === s.vip && c.record.vip6 === s.vip6);
      } else {
        claims.set(key, { result: 'exists', record: a! });
      }
      // A service is published only under the VIP the cluster agreed; otherwise the next
      // reconcile takes the cluster's VIP (daemon seeds the model with vipAssignments()).
      if (ok && s.kind === 'service') {
        const { pinned: _pinned, ...rec } = s;
        out.set(this.keys.service(s.kind, s.name, me), encodeService({ ...rec, node: me }));
      }
    }
    // A claim that changed something (created, taken, a new conflict) is news for the model;
    // an unchanged outcome is not (else a lasting conflict would re-trigger reconciles forever).
    const outcome = (m: Map<string, ClaimResult>) => JSON.stringify([...m].map(([k, c]) => [k, c.result === 'exists' ? 'exists' : c]).sort());
    const news = [...claims.values()].some((c) => c.result === 'created') || outcome(claims) !== outcome(this.claims);
    this.claims.clear();
    for (const [k, c] of claims) this.claims.set(k, c);
    if (news) this.emit('change');
    return out;
  }
}

const STARTED_AT = new Date().toISOString();
