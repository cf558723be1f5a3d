/**
 * Decodes one container's `berth.*` labels (SPEC "Container labels") into a typed spec.
 *
 * Keys are dispatched by prefix into one typed value each; every problem becomes a LabelError
 * naming the container, the label and the reason. Two severities:
 *   - service, ports, vip, vip6 (and unknown keys): the container cannot be placed, it is skipped;
 *   - berth.http.<ingress>.*: only that ingress's route from this container is dropped, the
 *     container still backs its service.
 * Checks that need more than the container itself (VIP range and ownership, agreement between
 * containers, route conflicts) live in vip.ts and desired.ts. Pure: no I/O.
 */
import type { ContainerInfo, LabelError, Protocol, ServicePort } from './types';
import { labelError } from './errors';
import { formatIp, parseIp } from './ip';

export const LABEL_PREFIX = 'berth.';
export const LABEL_SERVICE = 'berth.service';
export const LABEL_PORTS = 'berth.ports';
export const LABEL_VIP = 'berth.vip';
export const LABEL_VIP6 = 'berth.vip6';
const HTTP_PREFIX = 'berth.http.';
const HTTP_ATTRS = ['path', 'port', 'host', 'listen', 'publish', 'protocol', 'tls', 'tlsListen', 'redirectHttps', 'stripPrefix', 'timeout', 'retries'] as const;
type HttpAttr = (typeof HTTP_ATTRS)[number];

export function httpLabel(ingress: string, attr: HttpAttr): string {
  return `${HTTP_PREFIX}${ingress}.${attr}`;
}

/** One container's wish to be routed by one ingress. */
export interface HttpRouteSpec {
  ingress: string;
  /** Path prefix; '/' when the container gave none. */
  path: string;
  /** Lower-cased Host header, or null for any. */
  host: string | null;
  /** The service port the route targets (resolved: explicit, else the first tcp port). */
  port: number;
  /** Explicit `listen`/`publish`, null when this container does not say (no opinion). */
  listen: number | null;
  publish: number | null;
  /** `tlsListen`, `tls`, `redirectHttps`: ingress-wide, null when this container does not say. */
  tlsListen: number | null;
  tls: boolean | null;
  redirectHttps: boolean | null;
  /** Per route: protocol to the backend, strip the matched prefix, timeout (ms), retries. */
  protocol: 'http' | 'h2c';
  stripPrefix: boolean;
  timeoutMs: number | null;
  retries: number | null;
}

/** What one container's labels ask for, syntactically valid. */
export interface ContainerSpec {
  container: string;
  service: string;
  /** In label order (the first tcp port is the default route port); exposed ports sorted. */
  ports: ServicePort[];
  /** True when the ports came from berth.ports (false: the image's exposed ports). */
  portsFromLabel: boolean;
  /** Canonical pinned VIPs, or null. */
  vip: string | null;
  vip6: string | null;
  routes: HttpRouteSpec[];
}

export interface DecodeResult {
  /** Null when the container has no berth labels, or must be skipped (see errors). */
  spec: ContainerSpec | null;
  errors: LabelError[];
}

// RFC 1123 label, lower case only: service and ingress names become map keys, Envoy names and
// DNS-like identifiers, where "Web" and "web" must not be two things.
const DNS_LABEL_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function isDnsLabel(s: string): boolean {
  return DNS_LABEL_RE.test(s);
}

type PortsResult = { ports: ServicePort[] } | { error: (container: string) => LabelError };

/** Parses `svcPort[:containerPort][/tcp|/udp]`, comma separated. */
export function parsePorts(value: string): PortsResult {
  const ports: ServicePort[] = [];
  const items = value.split(',').map((s) => s.trim());
  for (const item of items) {
    const m = /^([^:/]*)(?::([^:/]*))?(?:\/(.*))?$/.exec(item);
    if (!m || item === '') return { error: (c) => labelError(c, LABEL_PORTS, 'BERTH_BAD_PORT_SPEC', item) };
    const nums: number[] = [];
    for (const raw of [m[1], m[2] ?? m[1]]) {
      if (!/^\d+$/.test(raw)) return { error: (c) => labelError(c, LABEL_PORTS, 'BERTH_BAD_PORT_SPEC', item) };
      const n = Number(raw);
      if (n < 1 || n > 65535) return { error: (c) => labelError(c, LABEL_PORTS, 'BERTH_BAD_PORT_NUMBER', item, raw) };
      nums.push(n);
    }
    const proto = (m[3] ?? 'tcp').toLowerCase();
    if (proto !== 'tcp' && proto !== 'udp') {
      return { error: (c) => labelError(c, LABEL_PORTS, 'BERTH_BAD_PROTOCOL', item, m[3] ?? '') };
    }
    const p: ServicePort = { port: nums[0], protocol: proto as Protocol, targetPort: nums[1] };
    const same = ports.find((q) => q.port === p.port && q.protocol === p.protocol);
    if (same) {
      if (same.targetPort !== p.targetPort) {
        return { error: (c) => labelError(c, LABEL_PORTS, 'BERTH_DUPLICATE_PORT', `${p.port}/${p.protocol}`, same.targetPort, p.targetPort) };
      }
      continue; // an exact repeat says nothing new
    }
    ports.push(p);
  }
  return { ports };
}

/**
 * parsePorts, memoized by label value (bounded): the containers of one service carry the same
 * `berth.ports`, so 40,000 containers of 10,000 services parse 10,000 values, and share one frozen
 * port list per value instead of holding 40,000 copies (npm run bench, cold start at 10,000 × 4).
 */
function parsePortsShared(value: string): PortsResult {
  let r = portsMemo.get(value);
  if (r === undefined) {
    r = parsePorts(value);
    if ('ports' in r) {
      for (const p of r.ports) Object.freeze(p);
      r = { ports: Object.freeze(r.ports.slice()) as ServicePort[] };
    }
    if (portsMemo.size >= 16384) portsMemo.clear();
    portsMemo.set(value, r);
  }
  return r;
}
const portsMemo = new Map<string, PortsResult>();

/** Upper bound of `retries` (more only multiplies load on a failing backend). */
export const MAX_RETRIES = 10;
/** Upper bound of `timeout`: one day, in ms. */
export const MAX_TIMEOUT_MS = 86_400_000;

/** `true`/`false` (also 1/0, yes/no, on/off, any case), else null. */
export function parseBool(v: string): boolean | null {
  const s = v.trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(s)) return true;
  if (['false', '0', 'no', 'off'].includes(s)) return false;
  return null;
}

/**
 * A duration like Go's time.ParseDuration subset Traefik labels use: `250ms`, `30s`, `5m`, `1h`,
 * or combinations (`1m30s`); `0` disables the timeout. Returns ms, or null when malformed or over
 * a day.
 */
export function parseDuration(v: string): number | null {
  const s = v.trim();
  if (s === '0') return 0;
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(s)) return null;
  const unit: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let ms = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) ms += Number(m[1]) * unit[m[2]];
  ms = Math.round(ms);
  return ms <= MAX_TIMEOUT_MS ? ms : null;
}

/** A label value that must be a port number 1..65535, or null. */
function parsePortNumber(v: string): number | null {
  if (!/^\d{1,5}$/.test(v.trim())) return null;
  const n = Number(v.trim());
  return n >= 1 && n <= 65535 ? n : null;
}

function isHttpPath(p: string): boolean {
  return p.startsWith('/') && !/[\s?#]/.test(p);
}

function isHostName(h: string): boolean {
  const name = h.startsWith('*.') ? h.slice(2) : h;
  return name.length > 0 && name.length <= 253 && name.split('.').every(isDnsLabel);
}

function sortedExposed(c: Pick<ContainerInfo, 'exposedPorts'>): ServicePort[] {
  const seen = new Set<string>();
  return [...c.exposedPorts]
    .sort((a, b) => a.port - b.port || a.protocol.localeCompare(b.protocol))
    .filter((p) => !seen.has(`${p.port}/${p.protocol}`) && !!seen.add(`${p.port}/${p.protocol}`))
    .map((p) => ({ port: p.port, protocol: p.protocol, targetPort: p.port }));
}

function parsePin(container: string, label: string, value: string, family: 4 | 6): { vip: string | null; error?: LabelError } {
  const a = parseIp(value);
  if (!a || a.family !== family) return { vip: null, error: labelError(container, label, 'BERTH_BAD_VIP', value, family) };
  return { vip: formatIp(a) };
}

/** Decodes one container's berth labels. */
export function decodeLabels(c: Pick<ContainerInfo, 'name' | 'labels' | 'exposedPorts'>): DecodeResult {
  const container = c.name;
  const keys = Object.keys(c.labels).filter((k) => k.startsWith(LABEL_PREFIX)).sort();
  if (keys.length === 0) return { spec: null, errors: [] };

  const fatal: LabelError[] = [];
  const http = new Map<string, Map<HttpAttr, { label: string; value: string }>>();
  const badIngress: LabelError[] = [];
  for (const key of keys) {
    if (key === LABEL_SERVICE || key === LABEL_PORTS || key === LABEL_VIP || key === LABEL_VIP6) continue;
    const parts = key.startsWith(HTTP_PREFIX) ? key.slice(HTTP_PREFIX.length).split('.') : [];
    if (parts.length !== 2 || !(HTTP_ATTRS as readonly string[]).includes(parts[1])) {
      fatal.push(labelError(container, key, 'BERTH_UNKNOWN_LABEL'));
      continue;
    }
    const [ingress, attr] = parts as [string, HttpAttr];
    if (!isDnsLabel(ingress)) {
      badIngress.push(labelError(container, key, 'BERTH_BAD_INGRESS_NAME', ingress));
      continue;
    }
    if (!http.has(ingress)) http.set(ingress, new Map());
    http.get(ingress)!.set(attr, { label: key, value: c.labels[key] });
  }

  const serviceValue = c.labels[LABEL_SERVICE];
  let service: string | null = null;
  if (serviceValue === undefined) {
    fatal.push(labelError(container, LABEL_SERVICE, 'BERTH_NO_SERVICE', keys.join(', ')));
  } else if (!isDnsLabel(serviceValue.trim())) {
    fatal.push(labelError(container, LABEL_SERVICE, 'BERTH_BAD_SERVICE_NAME', serviceValue));
  } else {
    service = serviceValue.trim();
  }

  let ports: ServicePort[] = [];
  const portsValue = c.labels[LABEL_PORTS];
  if (portsValue !== undefined) {
    const r = parsePortsShared(portsValue);
    if ('error' in r) fatal.push(r.error(container));
    else ports = r.ports;
  } else {
    ports = sortedExposed(c);
    if (ports.length === 0 && service !== null) fatal.push(labelError(container, LABEL_PORTS, 'BERTH_NO_PORTS'));
  }

  let vip: string | null = null;
  let vip6: string | null = null;
  if (c.labels[LABEL_VIP] !== undefined) {
    const r = parsePin(container, LABEL_VIP, c.labels[LABEL_VIP], 4);
    if (r.error) fatal.push(r.error);
    vip = r.vip;
  }
  if (c.labels[LABEL_VIP6] !== undefined) {
    const r = parsePin(container, LABEL_VIP6, c.labels[LABEL_VIP6], 6);
    if (r.error) fatal.push(r.error);
    vip6 = r.vip;
  }

  const routeErrors: LabelError[] = [...badIngress];
  const routes: HttpRouteSpec[] = [];
  if (fatal.length === 0 && service !== null) {
    for (const [ingress, attrs] of [...http.entries()].sort(([a], [b]) => a.localeCompare(b))) {
      const r = decodeRoute(container, service, ports, ingress, attrs);
      if ('errors' in r) routeErrors.push(...r.errors);
      else routes.push(r.route);
    }
  }

  if (fatal.length > 0 || service === null) return { spec: null, errors: [...fatal, ...routeErrors] };
  return {
    spec: { container, service, ports, portsFromLabel: portsValue !== undefined, vip, vip6, routes },
    errors: routeErrors,
  };
}

function decodeRoute(
  container: string,
  service: string,
  ports: ServicePort[],
  ingress: string,
  attrs: Map<HttpAttr, { label: string; value: string }>,
): { route: HttpRouteSpec } | { errors: LabelError[] } {
  const errors: LabelError[] = [];
  const get = (a: HttpAttr) => attrs.get(a);

  const pathL = get('path');
  const path = pathL ? pathL.value.trim() : '/';
  if (pathL && !isHttpPath(path)) errors.push(labelError(container, pathL.label, 'BERTH_BAD_PATH', pathL.value));

  const hostL = get('host');
  let host: string | null = null;
  if (hostL) {
    const h = hostL.value.trim().toLowerCase();
    if (!isHostName(h)) errors.push(labelError(container, hostL.label, 'BERTH_BAD_HOST', hostL.value));
    else host = h;
  }

  const tcp = ports.filter((p) => p.protocol === 'tcp').map((p) => p.port);
  const portL = get('port');
  let port = tcp[0] ?? 0;
  if (portL) {
    const n = parsePortNumber(portL.value);
    if (n === null || !tcp.includes(n)) errors.push(labelError(container, portL.label, 'BERTH_BAD_ROUTE_PORT', portL.value, service, tcp.join(', ')));
    else port = n;
  } else if (tcp.length === 0) {
    errors.push(labelError(container, httpLabel(ingress, 'port'), 'BERTH_NO_TCP_PORT', service));
  }

  const num = (a: 'listen' | 'publish' | 'tlsListen'): number | null => {
    const l = get(a);
    if (!l) return null;
    const n = parsePortNumber(l.value);
    if (n === null) errors.push(labelError(container, l.label, 'BERTH_BAD_LISTEN_PORT', a, l.value));
    return n;
  };
  const listen = num('listen');
  const publish = num('publish');
  const tlsListen = num('tlsListen');

  const bool = (a: 'tls' | 'redirectHttps' | 'stripPrefix'): boolean | null => {
    const l = get(a);
    if (!l) return null;
    const v = parseBool(l.value);
    if (v === null) errors.push(labelError(container, l.label, 'BERTH_BAD_BOOL', l.value));
    return v;
  };
  const tls = bool('tls');
  const redirectHttps = bool('redirectHttps');
  const stripPrefix = bool('stripPrefix') ?? false;
  if (redirectHttps && !tls) errors.push(labelError(container, get('redirectHttps')!.label, 'BERTH_REDIRECT_WITHOUT_TLS', ingress));

  let protocol: 'http' | 'h2c' = 'http';
  const protoL = get('protocol');
  if (protoL) {
    const v = protoL.value.trim().toLowerCase();
    if (v === 'http' || v === 'h2c') protocol = v;
    else errors.push(labelError(container, protoL.label, 'BERTH_BAD_HTTP_PROTOCOL', protoL.value));
  }

  let timeoutMs: number | null = null;
  const timeoutL = get('timeout');
  if (timeoutL) {
    timeoutMs = parseDuration(timeoutL.value);
    if (timeoutMs === null) errors.push(labelError(container, timeoutL.label, 'BERTH_BAD_TIMEOUT', timeoutL.value));
  }
  let retries: number | null = null;
  const retriesL = get('retries');
  if (retriesL) {
    const v = retriesL.value.trim();
    retries = /^\d{1,2}$/.test(v) && Number(v) <= MAX_RETRIES ? Number(v) : null;
    if (retries === null) errors.push(labelError(container, retriesL.label, 'BERTH_BAD_RETRIES', retriesL.value, MAX_RETRIES));
  }

  if (errors.length > 0) return { errors };
  return { route: { ingress, path, host, port, listen, publish, tlsListen, tls, redirectHttps, protocol, stripPrefix, timeoutMs, retries } };
}
