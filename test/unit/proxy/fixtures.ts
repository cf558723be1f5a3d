/** Hand-written desired states for the proxy unit tests. */
import type { DesiredState, Route, Service } from '../../../src/model/types';

export function service(name: string, ports: [number, number][], ips: (string | null)[], ip6s: (string | null)[] = []): Service {
  return {
    name, kind: 'service', vip: '10.96.0.1', vip6: null,
    ports: ports.map(([port, targetPort]) => ({ port, protocol: 'tcp', targetPort })),
    backends: ips.map((ip, i) => ({ container: `${name}-${i}`, id: `${name}${i}`, ip, ip6: ip6s[i] ?? null })),
    routes: [], ingress: null, errors: [],
  };
}

export function ingress(name: string, routes: Route[], proxyPort: number | null = 15000, publish: number | null = null): Service {
  return {
    name, kind: 'ingress', vip: '10.96.0.50', vip6: null, ports: [{ port: 80, protocol: 'tcp', targetPort: 80 }], backends: [],
    routes, ingress: { listen: 80, publish, proxyPort }, errors: [],
  };
}

export function route(path: string, svc: string, port = 9080, host: string | null = null): Route {
  return { host, path, service: svc, port };
}

export function bookinfo(): DesiredState {
  return {
    services: [
      ingress('basic', [route('/details', 'details'), route('/', 'productpage')]),
      service('details', [[9080, 8080]], ['172.17.0.2', '172.17.0.3']),
      service('productpage', [[9080, 9080]], ['172.17.0.4']),
    ],
    labelErrors: [],
  };
}
