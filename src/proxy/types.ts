import type { Logger } from '../util/log';
import type { DesiredState } from '../model/types';

export type RedirectMode = 'ebpf' | 'iptables';

export interface ProxyOptions {
  /** Envoy binary; 'envoy' means look it up on PATH. */
  envoyPath: string;
  /** /run/berth: Envoy bootstrap, admin and xDS unix sockets live here. */
  runDir: string;
  /** /var/lib/berth: persisted listener-port assignments. */
  stateDir: string;
  /** Inclusive range listener ports are picked from. */
  proxyPorts: { from: number; to: number };
  /** 'auto' resolves to ebpf where the kernel allows, else iptables. */
  redirect: RedirectMode | 'auto';
  serviceCidr: string;
  serviceCidr6: string;
  logger: Logger;
  /** bpffs directory for the ebpf redirect's pins (additive; default /sys/fs/bpf/berth). */
  bpfPinDir?: string;
  /**
   * ebpf redirect: the interfaces to attach the tc program to (additive; default: every
   * interface that is not loopback and not enslaved to a bridge, i.e. the Docker bridges and the
   * host's external interfaces, re-evaluated on each update).
   */
  redirectInterfaces?: string[];
  /**
   * Names of the redirect's kernel objects (additive; default DEFAULT_REDIRECT_NAMES in
   * redirect-types.ts: chain BERTH_PREROUTING, table 2004, rule pref 9, tc pref 47104). Tests and
   * scratch instances set their own so they never touch another berthd's.
   */
  redirectNames?: Partial<import('./redirect-types').RedirectNames>;
  /** `<host>.crt` / `<host>.key` for TLS ingresses (additive; default /etc/berth/tls). */
  tlsDir?: string;
  /** false: no access log (additive; default: on, into berthd's log via <runDir>/access.log). */
  accessLog?: boolean;
  /** Asks the daemon for a reconcile soon (additive): TLS files changed. */
  requestReconcile?: () => void;
}

export interface EnvoyStatus {
  state: 'missing' | 'starting' | 'running' | 'restarting' | 'stopped';
  pid: number | null;
  version: string | null;
  restarts: number;
  /** Last xDS version Envoy ACKed, and the last NACK reason if any. */
  ackedVersion: string | null;
  lastNack: string | null;
  /** This berthd adopted an Envoy that the previous one had started (additive). */
  adopted?: boolean;
}

/** The contract of src/proxy/index.ts (class Proxy implements it). */
export interface ProxyApi {
  /** Resolve the redirect mode, remove the other mode's rules/programs, start the xDS server and Envoy. */
  start(): Promise<void>;
  /**
   * Take a new desired state: assign (persisted) listener ports to ingresses, writing them into
   * each ingress service's `ingress.proxyPort` (mutates the given state), push a new xDS snapshot,
   * and install/remove the redirect rules for the ingress VIPs and publish ports.
   * Errors (port taken, bad route) are returned per ingress and do not affect the others.
   */
  update(state: DesiredState): Promise<{ ingress: string; error: string }[]>;
  status(): { envoy: EnvoyStatus; redirect: RedirectMode; ingressErrors?: { ingress: string; error: string; code?: string }[] };
  /** Stop the xDS server and Envoy (unless keepEnvoy); redirect rules stay (like the datapath). */
  stop(opts?: { keepEnvoy?: boolean }): Promise<void>;
  /** Envoy's ingress stats as berth metrics (Prometheus text), additive. */
  metricsText?(): Promise<string>;
}
