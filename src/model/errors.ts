/**
 * Every error the model reports, in one catalogue: a stable code (tests, `berth status --json`,
 * grep) and the message a user reads. The container and label are not part of the message: the
 * LabelError carries them, and the daemon prints `container C, label L: <message>`.
 */
import type { LabelError } from './types';

const KNOWN = 'berth.service, berth.ports, berth.vip, berth.vip6, berth.http.<ingress>.{path,port,host,listen,publish,protocol,tls,tlsListen,redirectHttps,stripPrefix,timeout,retries}';
const DNS_LABEL = "a DNS label: 1-63 of a-z, 0-9 and '-', not starting or ending with '-'";

/** Message builders by code. Arguments are already-formatted strings or numbers. */
export const LABEL_ERRORS = {
  BERTH_UNKNOWN_LABEL: () => `unknown berth label (known: ${KNOWN})`,
  BERTH_NO_SERVICE: (others: string) => `missing: ${others} need berth.service`,
  BERTH_BAD_SERVICE_NAME: (v: string) => `service name "${v}" is not ${DNS_LABEL}`,
  BERTH_BAD_PORT_SPEC: (item: string) => `"${item}" is not svcPort[:containerPort][/tcp|/udp]`,
  BERTH_BAD_PORT_NUMBER: (item: string, n: string) => `"${item}": port ${n} is not in 1..65535`,
  BERTH_BAD_PROTOCOL: (item: string, p: string) => `"${item}": protocol "${p}" is neither tcp nor udp`,
  BERTH_DUPLICATE_PORT: (svc: string, a: number, b: number) => `service port ${svc} is listed twice with different container ports (${a} and ${b})`,
  BERTH_NO_PORTS: () => 'no ports: set berth.ports (the image exposes none)',
  BERTH_BAD_VIP: (v: string, family: 4 | 6) => `"${v}" is not an IPv${family} address`,
  BERTH_VIP_OUTSIDE_RANGE: (v: string, range: string) => `VIP ${v} is outside the service range ${range}`,
  BERTH_VIP_RESERVED: (v: string, range: string) => `VIP ${v} is the network or broadcast address of the service range ${range}`,
  BERTH_VIP_BERTH_RESERVED: (v: string) => `VIP ${v} is reserved by berth (its DNS VIP, config dnsVip/dnsVip6)`,
  BERTH_VIP_LOOPBACK: (v: string) => `VIP ${v} is a loopback address`,
  BERTH_VIP_HOST_ADDRESS: (v: string) => `VIP ${v} is an address of this host`,
  BERTH_VIP_DOCKER_SUBNET: (v: string, net: string, subnet: string) => `VIP ${v} is inside Docker network ${net}'s subnet ${subnet}`,
  BERTH_VIP_DOCKER_GATEWAY: (v: string, net: string) => `VIP ${v} is the gateway of Docker network ${net}`,
  BERTH_VIP_OWNED: (v: string, owner: string) => `VIP ${v} is already owned by ${owner}`,
  BERTH_VIP_EXHAUSTED: (range: string) => `no free VIP left in the service range ${range}`,
  BERTH_SERVICE_DISAGREE: (service: string, what: string, first: string, mine: string, theirs: string) =>
    `containers of service ${service} disagree on ${what}: this container has ${mine}, the earlier container ${first} has ${theirs}`,
  BERTH_BAD_INGRESS_NAME: (v: string) => `ingress name "${v}" is not ${DNS_LABEL}`,
  BERTH_BAD_PATH: (v: string) => `path "${v}" must start with '/' and contain no spaces, '?' or '#'`,
  BERTH_BAD_HOST: (v: string) => `host "${v}" is not a host name (DNS labels separated by dots, optionally starting with "*.")`,
  BERTH_BAD_ROUTE_PORT: (v: string, service: string, tcp: string) => `port ${v} is not a tcp port of service ${service} (tcp ports: ${tcp || 'none'})`,
  BERTH_NO_TCP_PORT: (service: string) => `service ${service} has no tcp port to route HTTP to`,
  BERTH_BAD_LISTEN_PORT: (attr: string, v: string) => `${attr} "${v}" is not a port in 1..65535`,
  BERTH_BAD_BOOL: (v: string) => `"${v}" is not true or false`,
  BERTH_REDIRECT_WITHOUT_TLS: (ingress: string) => `redirectHttps needs tls=true on ingress ${ingress} (there is no HTTPS to redirect to)`,
  BERTH_BAD_HTTP_PROTOCOL: (v: string) => `protocol "${v}" is neither http nor h2c`,
  BERTH_BAD_TIMEOUT: (v: string) => `timeout "${v}" is not a duration like 500ms, 30s, 5m or 1h (at most 24h; 0 = none)`,
  BERTH_BAD_RETRIES: (v: string, max: number) => `retries "${v}" is not a whole number 0..${max}`,
  BERTH_INGRESS_CONFLICT: (ingress: string, attr: string, mine: string, first: string, theirs: string) =>
    `ingress ${ingress}: ${attr} ${mine} conflicts with ${attr} ${theirs} set by the earlier container ${first}`,
  BERTH_PUBLISH_TAKEN: (port: number, other: string) => `publish port ${port} is already used by ingress ${other}`,
  BERTH_ROUTE_CONFLICT: (ingress: string, route: string, first: string, theirs: string) =>
    `ingress ${ingress}: route ${route} is already routed to ${theirs} by the earlier container ${first}`,
} as const;

export type LabelErrorCode = keyof typeof LABEL_ERRORS;

/** Builds a LabelError from the catalogue; the only way the model creates one. */
export function labelError<C extends LabelErrorCode>(
  container: string,
  label: string,
  code: C,
  ...args: Parameters<(typeof LABEL_ERRORS)[C]>
): LabelError {
  const build = LABEL_ERRORS[code] as (...a: unknown[]) => string;
  return { container, label, code, error: build(...args) };
}

/** Errors that are not about one container's labels: bad configuration or state file. */
export type ModelErrorCode = 'BERTH_BAD_SERVICE_CIDR' | 'BERTH_VIPSTORE_CORRUPT' | 'BERTH_VIPSTORE_WRITE';

export class ModelError extends Error {
  constructor(readonly code: ModelErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ModelError';
  }
}
