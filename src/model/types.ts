/**
 * The plain-data types that flow between berth's layers (see README "How it works"):
 *
 *   docker/  --DockerSnapshot-->  model/  --DesiredState-->  datapath/ and proxy/
 *
 * Nothing here does I/O. IP addresses are strings in their usual text form; ports are
 * host-order numbers. Byte order exists only in src/datapath/codec.ts.
 */

export type Protocol = 'tcp' | 'udp';

/** One container as the Docker watcher saw it in its last full list. */
export interface ContainerInfo {
  /** Full 64-hex container id. */
  id: string;
  /** Container name without Docker's leading slash. */
  name: string;
  labels: Record<string, string>;
  /** Docker's State.Status: running, created, restarting, exited, paused, dead, removing. */
  state: string;
  /** Docker's health status; 'none' when the image has no HEALTHCHECK. */
  health: 'none' | 'starting' | 'healthy' | 'unhealthy';
  /**
   * True once a kill/stop event was seen for the current run of the container: it leaves the
   * backend set at once, before it dies. Cleared when the container starts again.
   */
  stopping: boolean;
  /** Ports the image exposes (Config.ExposedPorts), the default for `berth.ports`. */
  exposedPorts: { port: number; protocol: Protocol }[];
  /** Networks the container is attached to, with its addresses there. */
  networks: ContainerNetwork[];
  /**
   * Creation time in ms since epoch (`Date.parse` of inspect's `Created`; the list's `Created` is
   * only whole seconds), when the watcher knows it (additive: optional). The model orders
   * containers by it, then by the given order, to decide which container of a service came first
   * and so wins a disagreement. Without it, the given order is taken as creation order.
   */
  created?: number;
  /**
   * Docker's HostConfig.NetworkMode (additive: optional): 'default', 'bridge' or a network name
   * (the container has its own netns on those networks), 'host' (it shares the host's),
   * 'none' (loopback only), 'container:<id>' (it shares another container's netns).
   */
  networkMode?: string;
}

export interface ContainerNetwork {
  name: string;
  id: string;
  ip: string | null;
  ip6: string | null;
}

/** A Docker network (from the network list), used to reject VIPs inside Docker subnets. */
export interface NetworkInfo {
  id: string;
  name: string;
  /** CIDRs, IPv4 and IPv6. */
  subnets: string[];
  /** Gateway addresses. */
  gateways: string[];
  /** Docker's network driver: bridge, host, null, macvlan, ipvlan, overlay, or a plugin's name
   * (additive: optional; unknown = treated as reachable). */
  driver?: string;
}

/** Everything the model needs from Docker, taken from one full list. */
export interface DockerSnapshot {
  containers: ContainerInfo[];
  networks: NetworkInfo[];
  /** When the list was taken (ms since epoch). */
  takenAt: number;
  /**
   * Containers (full or short ids, as events name them) whose events were waiting to be fetched
   * when this list began or arrived while it ran: a change of theirs in this list is the event
   * path's, late, not a missed event (IncrementalModel.resync does not count it as drift). Under
   * load a full list often gets to a change first: in the emulated cluster guests a list took
   * seconds, and each `docker run` was logged as "missed events" until this was told apart.
   */
  pending?: ReadonlySet<string>;
}

/** Host facts the model checks VIPs against (host addresses, loopback). */
export interface HostInfo {
  /** Addresses configured on the host's interfaces (`ip -j addr`). */
  addresses: string[];
}

export interface ServicePort {
  /** Port on the VIP. */
  port: number;
  protocol: Protocol;
  /** Port on each backend container. */
  targetPort: number;
}

/** One network a backend container is on, with its addresses there (SPEC `networks`). */
export interface BackendNetwork {
  /** Docker network name ('host' for a host-network container). */
  network: string;
  ip: string | null;
  ip6: string | null;
}

export interface Backend {
  /** Container name. */
  container: string;
  /** Container id. */
  id: string;
  /** The address clients are sent to (see model/network.ts for the choice); null = none. */
  ip: string | null;
  ip6: string | null;
  /** Every network the container is on, by name (additive: optional; the model always sets it). */
  networks?: BackendNetwork[];
  /** False when berth cannot send clients to this container (then ip and ip6 are null). */
  reachable?: boolean;
  /** Why it is unreachable, or what is notable about how it is reached (host network,
   * networks skipped); null when there is nothing to say. */
  reason?: string | null;
  /**
   * Cluster mode only: the node (nodeName) the container runs on, set by src/cluster's merge for
   * local and remote backends alike (additive: absent on a single host).
   */
  node?: string;
}

export interface Route {
  /** Host header to match, or null for any. */
  host: string | null;
  /** Path prefix, starting with '/'. */
  path: string;
  /** Target service name. */
  service: string;
  /** Target service port (the service's VIP port). */
  port: number;
  // The fields below are additive (optional; the model always sets them): absent = default.
  /** Protocol Envoy speaks to the backend: HTTP/1.1 (`http`) or HTTP/2 cleartext (`h2c`, gRPC). */
  protocol?: 'http' | 'h2c';
  /** Remove the matched path prefix before forwarding (`/api/x` -> `/x`). */
  stripPrefix?: boolean;
  /** Per-request timeout in ms (0 = none), or null for Envoy's default (15 s). */
  timeoutMs?: number | null;
  /** Retries on connect failure, reset and 5xx (gateway errors), or null for none. */
  retries?: number | null;
}

export interface IngressSpec {
  /** Port the ingress VIP listens on (label `listen`, default 80). */
  listen: number;
  /** Port on the host's own addresses for outside clients, or null. */
  publish: number | null;
  /**
   * Envoy listener port picked from `proxyPorts` by proxy/ (persisted); null until assigned.
   * The datapath sends host clients of the ingress VIP straight to 127.0.0.1:proxyPort.
   */
  proxyPort: number | null;
  // Additive (optional; the model always sets them): absent = no TLS, no redirect.
  /** Terminate TLS (cert/key per route host from tlsDir) on the VIP's `tlsListen` port. */
  tls?: boolean;
  /** The VIP port that takes TLS when `tls` (label `tlsListen`, default 443), else null. */
  tlsListen?: number | null;
  /** Answer plain HTTP for hosts that have a served certificate with a redirect to HTTPS. */
  redirectHttps?: boolean;
}

export interface Service {
  name: string;
  kind: 'service' | 'ingress';
  vip: string;
  vip6: string | null;
  ports: ServicePort[];
  /** Backends that are up (running, healthy if it has a healthcheck, not stopping), sorted by
   * id; those berth cannot reach are listed with reachable false and a reason, and get no traffic. */
  backends: Backend[];
  /** Ingress only: its routes, longest path first. Empty for services. */
  routes: Route[];
  /** Ingress only. */
  ingress: IngressSpec | null;
  /** Problems with this service (e.g. a full map); label problems are in labelErrors. */
  errors: string[];
}

export interface LabelError {
  /** Container name. */
  container: string;
  /** The offending label key, e.g. `berth.ports`. */
  label: string;
  error: string;
  /** Stable code from src/model/errors.ts, e.g. `BERTH_BAD_PORT_SPEC` (additive: optional). */
  code?: string;
}

/** The whole desired state, computed from one DockerSnapshot. Services sorted by name. */
export interface DesiredState {
  services: Service[];
  labelErrors: LabelError[];
}
