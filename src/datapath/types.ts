import type { Logger } from '../util/log';
import type { Service } from '../model/types';

export interface DatapathOptions {
  /** bpffs directory for berth's pins (maps and links). Default /sys/fs/bpf/berth. */
  pinDir: string;
  /** 'auto' or an explicit cgroup2 directory. */
  cgroupRoot: string;
  /** Where the host's /proc is visible (PID 1's namespaces are entered through it). */
  hostProc: string;
  /** Runtime dir (/run/berth); cgroupv2/ is mounted below it when berth mounts cgroup2 itself. */
  runDir: string;
  serviceCidr: string;
  serviceCidr6: string;
  /** crossNetwork (SPEC); default 'allow': load and attach the balanced-flow programs (flows.ts). */
  crossNetwork?: 'allow' | 'docker';
  logger: Logger;
}

export interface DatapathStatus {
  /** The cgroup2 directory the socket programs are attached to. */
  cgroupRoot: string;
  /** Verified (not assumed): the attach point is the host's root cgroup. */
  cgroupIsHostRoot: boolean;
  /** Names of the attached hooks, e.g. ['connect4', 'connect6', ...]. */
  attached: string[];
  /** Entries currently in the maps. */
  counts: { services: number; backends: number };
  /** crossNetwork `allow`'s balanced-flow programs (additive: optional). */
  flows?: { matchPin: string | null; recording: boolean; error: string | null };
}

export interface SyncResult {
  /** Map writes and deletes done by this sync. */
  updates: number;
  deletes: number;
  /** Per-service failures (e.g. E2BIG/ENOSPC on a full map); other services were applied. */
  errors: { service: string; error: string }[];
  durationMs: number;
  /**
   * Full syncs after the first: where the kernel's maps differed from berth's view (entries
   * someone else changed), and the writes the full plan still needed once the view was the
   * kernel's (a missed or failed incremental update). All zero in a healthy run.
   */
  drift?: { serviceEntries: number; backends: number; plan: number };
}

export interface ServiceCounters {
  /** Connections (and unconnected UDP sends) balanced to a backend. */
  connects: number;
  /** Attempts refused because the service had no backend. */
  noBackend: number;
}

/** The contract of src/datapath/index.ts (class Datapath implements it). */
export interface DatapathApi {
  /**
   * Make the desired services the content of the maps, applying only the difference.
   * prune=false (before berthd's first full Docker list) only adds/updates, never removes.
   * Ingress services are programmed for host-netns sockets only: VIP:listen -> 127.0.0.1:proxyPort.
   * Backends that disappear get their connected UDP sockets destroyed (TCP left alone).
   */
  sync(services: Service[], opts: { prune: boolean; nets?: import('./netlists').NetContext }): Promise<SyncResult>;
  /**
   * Incremental: plan and write only these services (their current state) and remove the named
   * ones, against berth's in-memory view of the maps (no dump). Same ordering and failure rules
   * as sync(); a write that fails leaves the view equal to the kernel, and the next sync retries.
   * `nets`: the per-client-network lists (netlists.ts), as in sync(); the caller makes a full sync
   * when the network numbers change (every service's lists may change then).
   */
  update(changed: Service[], removed: string[], opts?: { nets?: import('./netlists').NetContext }): Promise<SyncResult>;
  /** berth_netns := these client containers' netns cookies -> network numbers (additive: optional). */
  syncClients?(clients: { id: string; nets: number[] }[]): { written: number; deleted: number; unresolved: string[]; drift: number };
  /**
   * Incremental syncClients (additive: optional): only these containers, against berth's view of
   * berth_netns (no dump). `nets` null: no longer a client (stopped, gone, host/none/container:
   * mode, on no numbered network), its entry is deleted. Unresolved ids are returned (retry later).
   */
  updateClients?(clients: { id: string; nets: number[] | null }[]): { written: number; deleted: number; unresolved: string[] };
  status(): DatapathStatus;
  /** Per service name, from the BPF counters. */
  counters(): Map<string, ServiceCounters>;
  /** Release fds; pinned maps and links (and so every VIP) stay in the kernel. */
  close(): void;
}
