/**
 * Envoy's own statistics, re-exported under berth's names: berthd reads Envoy's Prometheus text
 * from the admin unix socket at scrape time (Envoy has no TCP admin port) and keeps the few series
 * users ask for, labelled by berth's ingress and route names instead of Envoy's internal ones.
 *
 * Sources (Envoy's tag-extracted names):
 * - per ingress: `envoy_http_downstream_rq_xx{envoy_response_code_class, envoy_http_conn_manager_prefix="ingress_<name>"}`
 *   and the histogram `envoy_http_downstream_rq_time` (ms) of the connection manager;
 * - per route: the `vhost.<vhost>.route.<stat_prefix>.upstream_rq_*` stats of each route, whose
 *   stat prefix is `berth_r_<hash>` (resources.ts routeStatPrefix). Envoy's tag extraction stops at
 *   the dots of a host name in the vhost name, so the prefix is found anywhere in the line, and the
 *   same route served in several virtual hosts (any-host routes are copied into each) is summed.
 */

const PREFIX_RE = /envoy_http_conn_manager_prefix="ingress_([a-z0-9-]+)"/;
const CLASS_RE = /envoy_response_code_class="(\d)"/;
const LE_RE = /le="([^"]+)"/;
const ROUTE_RE = /berth_r_[0-9a-f]{12}/;

function esc(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function labels(l: Record<string, string>): string {
  return `{${Object.entries(l).map(([k, v]) => `${k}="${esc(v)}"`).join(',')}}`;
}

/** Split `name{labels} value` (Envoy prints no timestamps). */
function sample(line: string): { name: string; labels: string; value: number } | null {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$/.exec(line);
  if (!m) return null;
  const value = Number(m[3]);
  return Number.isFinite(value) ? { name: m[1], labels: m[2] ?? '', value } : null;
}

/** Bucket bounds sort numerically with +Inf last. */
function leOrder(a: string, b: string): number {
  const n = (x: string) => (x === '+Inf' ? Infinity : Number(x));
  return n(a) - n(b);
}

/**
 * Envoy's Prometheus text -> berth's ingress metrics (Prometheus text). `routes` maps route stat
 * prefixes to berth's ingress and route names; series of unknown prefixes are dropped (a route
 * removed since). Pure.
 */
export function ingressMetrics(envoyText: string, routes: ReadonlyMap<string, { ingress: string; route: string }>): string {
  const ingReq = new Map<string, number>();
  const ingHist = new Map<string, { buckets: Map<string, number>; sum: number; count: number }>();
  const routeReq = new Map<string, number>();
  const routeHist = new Map<string, { buckets: Map<string, number>; sum: number; count: number }>();
  const hist = (m: typeof ingHist, k: string) => {
    let h = m.get(k);
    if (!h) m.set(k, (h = { buckets: new Map(), sum: 0, count: 0 }));
    return h;
  };
  const addHist = (h: ReturnType<typeof hist>, s: { name: string; labels: string; value: number }) => {
    if (s.name.endsWith('_bucket')) {
      const le = LE_RE.exec(s.labels)?.[1];
      if (le) h.buckets.set(le, (h.buckets.get(le) ?? 0) + s.value);
    } else if (s.name.endsWith('_sum')) h.sum += s.value;
    else if (s.name.endsWith('_count')) h.count += s.value;
  };

  for (const line of envoyText.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const s = sample(line);
    if (!s) continue;
    const route = ROUTE_RE.exec(line)?.[0];
    if (route) {
      const r = routes.get(route);
      if (!r) continue;
      const key = JSON.stringify([r.ingress, r.route]);
      if (s.name.endsWith('_upstream_rq_xx')) {
        const cls = CLASS_RE.exec(s.labels)?.[1];
        if (cls) routeReq.set(JSON.stringify([r.ingress, r.route, `${cls}xx`]), (routeReq.get(JSON.stringify([r.ingress, r.route, `${cls}xx`])) ?? 0) + s.value);
      } else if (/_upstream_rq_time_(bucket|sum|count)$/.test(s.name)) {
        addHist(hist(routeHist, key), s);
      }
      continue;
    }
    const ing = PREFIX_RE.exec(s.labels)?.[1];
    if (!ing) continue;
    if (s.name === 'envoy_http_downstream_rq_xx') {
      const cls = CLASS_RE.exec(s.labels)?.[1];
      if (cls) ingReq.set(JSON.stringify([ing, `${cls}xx`]), (ingReq.get(JSON.stringify([ing, `${cls}xx`])) ?? 0) + s.value);
    } else if (/^envoy_http_downstream_rq_time_(bucket|sum|count)$/.test(s.name)) {
      addHist(hist(ingHist, JSON.stringify([ing])), s);
    }
  }

  const out: string[] = [];
  const counter = (name: string, help: string, m: Map<string, number>, keys: string[]) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`);
    for (const [k, v] of [...m].sort(([a], [b]) => a.localeCompare(b))) {
      const vals = JSON.parse(k) as string[];
      out.push(`${name}${labels(Object.fromEntries(keys.map((kk, i) => [kk, vals[i]])))} ${v}`);
    }
  };
  const histogram = (name: string, help: string, m: typeof ingHist, keys: string[]) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
    for (const [k, h] of [...m].sort(([a], [b]) => a.localeCompare(b))) {
      const vals = JSON.parse(k) as string[];
      const base = Object.fromEntries(keys.map((kk, i) => [kk, vals[i]]));
      for (const le of [...h.buckets.keys()].sort(leOrder)) out.push(`${name}_bucket${labels({ ...base, le })} ${h.buckets.get(le)}`);
      out.push(`${name}_sum${labels(base)} ${h.sum}`, `${name}_count${labels(base)} ${h.count}`);
    }
  };
  counter('berth_ingress_requests_total', 'HTTP requests answered by an ingress, by status class (Envoy downstream_rq_xx)', ingReq, ['ingress', 'code_class']);
  histogram('berth_ingress_request_duration_ms', 'Time from first request byte to last response byte at the ingress, ms (Envoy downstream_rq_time)', ingHist, ['ingress']);
  counter('berth_route_requests_total', 'Requests sent to a route\'s backends, by status class, retries included (Envoy route upstream_rq_xx)', routeReq, ['ingress', 'route', 'code_class']);
  histogram('berth_route_upstream_duration_ms', 'Backend response time per route, ms (Envoy route upstream_rq_time)', routeHist, ['ingress', 'route']);
  return out.join('\n') + '\n';
}
