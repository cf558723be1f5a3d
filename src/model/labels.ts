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
const HTTP_ATTRS = ['path', 'port', 'host', 'listen', 'publish'] as const;
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
    const r = parsePorts(portsValue);
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

  const num = (a: 'listen' | 'publish'): number | null => {
    const l = get(a);
    if (!l) return null;
    const n = parsePortNumber(l.value);
    if (n === null) errors.push(labelError(container, l.label, 'BERTH_BAD_LISTEN_PORT', a, l.value));
    return n;
  };
  const listen = num('listen');
  const publish = num('publish');

  if (errors.length > 0) return { errors };
  return { route: { ingress, path, host, port, listen, publish } };
}
