/**
 * cluster/: services shared by several Docker hosts through etcd (README "Several hosts").
 *
 * The daemon sees one narrow interface, Cluster, used once per reconcile after the incremental
 * model's local step (DESIGN lesson 12: remote and local meet in the model, not the datapath;
 * daemon.ts mergeCluster):
 *   1. modelInputs(localStore): the VIP store to place with (the cluster's assignments, in etcd's
 *      creation order, ahead of this host's own) and the cluster's assignments; when these
 *      change the daemon hands them to IncrementalModel.setClusterVips (a global placement);
 *   2. persistLocal() keeps /var/lib/berth/vips.json for local names;
 *   3. merge(local, containers and networks): publishes the local services (level-triggered,
 *      never waits for etcd) and returns local + remote backends as one DesiredState, plus routes
 *      to peers. The daemon marks every service whose merged result changed dirty.
 * With no etcdEndpoints berthd never constructs a Cluster: the single-host daemon is unchanged.
 */
import { EventEmitter } from 'node:events';
import type { DesiredState, DockerSnapshot } from '../model/types';
import { storeKey, VipStore, type VipAssignment } from '../model/vipstore';
import type { ServiceKind } from '../model/vip';
import { ClusterStore, type ClusterOptions, type ClusterStatus, type Publication } from './store';
import { mergeRemote, type SubnetOverlap } from './merge';
import { type PeerRoute, peerRoutes } from './routes';
import { type PeerAccept, peerAccepts } from './firewall';

export { ClusterStore, LEASE_TTL_S } from './store';
export type { ClusterOptions, ClusterStatus } from './store';

/** Seq offset for this host's own assignments: after every cluster assignment (etcd revisions). */
const LOCAL_SEQ_BASE = 2 ** 48;

export interface ClusterView extends ClusterStatus {
  overlaps: SubnetOverlap[];
  remoteBackends: number;
  routes: PeerRoute[];
  /** (peer, local subnet) pairs BERTH_PEERS accepts (firewall.ts). */
  accepts: PeerAccept[];
  errors: string[];
}

export class Cluster extends EventEmitter {
  readonly store: ClusterStore;
  private last: { overlaps: SubnetOverlap[]; remoteBackends: number; routes: PeerRoute[]; accepts: PeerAccept[]; errors: string[] } = { overlaps: [], remoteBackends: 0, routes: [], accepts: [], errors: [] };
  private reported = new Set<string>();

  constructor(private readonly opts: ClusterOptions) {
    super();
    this.store = new ClusterStore(opts);
    this.store.on('change', () => this.emit('change'));
    this.store.on('status', () => this.emit('change'));
  }

  start(): Promise<void> {
    return this.store.start();
  }

  stop(): Promise<void> {
    return this.store.stop();
  }

  /** Inputs for buildDesiredState in cluster mode (see the module comment). */
  modelInputs(local: VipStore): { store: VipStore; reserved: { kind: ServiceKind; name: string; vip: string | null; vip6: string | null }[] } {
    const agreed = this.store.vipAssignments();
    const list: VipAssignment[] = [];
    for (const a of agreed.values()) list.push({ kind: a.kind, name: a.name, vip: a.vip, vip6: a.vip6, seq: Number(a.createRevision) });
    for (const a of local.list()) if (!agreed.has(storeKey(a.kind, a.name))) list.push({ ...a, seq: LOCAL_SEQ_BASE + a.seq });
    return {
      store: VipStore.inMemory(list),
      reserved: [...agreed.values()].map((a) => ({ kind: a.kind, name: a.name, vip: a.vip, vip6: a.vip6 })),
    };
  }

  /** Records the local services' VIPs in the host's own store (the caller saves it). */
  persistLocal(local: VipStore, state: DesiredState): void {
    const keep = new Set<string>();
    for (const s of state.services) {
      local.set(s.kind, s.name, s.vip, s.vip6);
      keep.add(storeKey(s.kind, s.name));
    }
    local.retain(keep);
  }

  /**
   * Publishes `local` and returns it merged with the peers' backends. Claim conflicts (a pinned
   * VIP the cluster gave another name) are added to that service's errors; overlaps and record
   * problems are logged once each.
   */
  merge(local: DesiredState, snap: Pick<DockerSnapshot, 'containers' | 'networks'>): DesiredState {
    const subnets = [...new Set(snap.networks.flatMap((n) => n.subnets))];
    const pinned = new Set<string>();
    for (const c of snap.containers) {
      const svc = c.labels['berth.service'];
      if (svc && (c.labels['berth.vip'] || c.labels['berth.vip6'])) pinned.add(svc);
    }
    const pub: Publication = {
      subnets,
      services: local.services.map((s) => ({
        kind: s.kind, name: s.name, vip: s.vip, vip6: s.vip6, ports: s.ports,
        backends: s.backends.map((b) => ({ container: b.container, id: b.id, ip: b.ip, ip6: b.ip6 })),
        pinned: s.kind === 'service' && pinned.has(s.name),
      })),
    };
    this.store.publish(pub);
    const view = this.store.view();
    const m = mergeRemote(local, view, this.opts.nodeName, subnets);
    const conflicts = this.store.conflicts();
    for (const s of m.state.services) {
      const c = conflicts.get(storeKey(s.kind, s.name));
      if (c) s.errors.push(c);
    }
    const address = this.status().address;
    const routes = peerRoutes(this.opts.nodeName, view.nodes, m.overlaps, address);
    const accepts = peerAccepts(this.opts.nodeName, view.nodes, address, subnets);
    for (const text of [...m.overlaps.map((o) => o.message), ...m.errors]) {
      if (!this.reported.has(text)) this.opts.logger.error(text);
    }
    this.reported = new Set([...m.overlaps.map((o) => o.message), ...m.errors]);
    this.last = { overlaps: m.overlaps, remoteBackends: m.remoteBackends, routes, accepts, errors: m.errors };
    return m.state;
  }

  /** Routes this host should have to its peers' container subnets (from the last merge). */
  routes(): PeerRoute[] {
    return this.last.routes;
  }

  /** What BERTH_PEERS should accept: flows from each peer to this host's container subnets (from the last merge). */
  accepts(): PeerAccept[] {
    return this.last.accepts;
  }

  status(): ClusterView {
    return { ...this.store.status(), ...this.last };
  }
}
