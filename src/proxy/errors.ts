/**
 * The catalogue of the proxy layer's coded errors, in one place so that logs, `berth status` and
 * tests can match on `code` instead of message text.
 */

export const ProxyErrorCode = {
  /** A route names a service or service port that does not exist (the route is skipped). */
  ROUTE_TARGET: 'BERTH_PROXY_ROUTE_TARGET',
  /** The snapshot references a cluster/route that it does not contain (a builder bug). */
  SNAPSHOT_INCONSISTENT: 'BERTH_PROXY_SNAPSHOT_INCONSISTENT',
  /** Every port of `proxyPorts` is assigned or busy. */
  PORTS_EXHAUSTED: 'BERTH_PROXY_PORTS_EXHAUSTED',
  /** A publish port is already bound by another process on the host. */
  PORT_TAKEN: 'BERTH_PROXY_PORT_TAKEN',
  /** Two ingresses claim the same publish port, or the same VIP:listen. */
  PORT_CONFLICT: 'BERTH_PROXY_PORT_CONFLICT',
  /** The Envoy binary cannot be found or does not run. */
  ENVOY_MISSING: 'BERTH_PROXY_ENVOY_MISSING',
  /** Installing or removing redirect rules/programs failed. */
  REDIRECT: 'BERTH_PROXY_REDIRECT',
  /** A TLS host's certificate/key is missing, unreadable or mismatched (its TLS chain is skipped). */
  TLS_CERT: 'BERTH_PROXY_TLS_CERT',
  /** The requested redirect mode is not supported on this host. */
  REDIRECT_UNSUPPORTED: 'BERTH_PROXY_REDIRECT_UNSUPPORTED',
} as const;

export type ProxyErrorCode = (typeof ProxyErrorCode)[keyof typeof ProxyErrorCode];

export class ProxyError extends Error {
  constructor(readonly code: ProxyErrorCode, message: string, readonly detail?: Record<string, unknown>) {
    super(message);
    this.name = 'ProxyError';
  }
}
