/**
 * Human-readable rendering of the admin API's JSON (pure; `--json` prints the JSON as is).
 */

export interface ServiceView {
  name: string;
  kind: 'service' | 'ingress';
  vip: string;
  vip6: string | null;
  ports: { port: number; protocol: string; targetPort: number }[];
  backends: {
    container: string; id: string; ip: string | null; ip6: string | null;
    networks?: { network: string; ip: string | null; ip6: string | null }[];
    reachable?: boolean;
    reason?: string | null;
    /** Cluster mode only: the host the container runs on. */
    node?: string;
  }[];
  routes: { host: string | null; path: string; service: string; port: number }[];
  listenerPort?: number | null;
  listen?: number;
  publish?: number | null;
  connections?: { connects: number; noBackend: number };
  errors: string[];
}

export interface StatusView {
  version: string;
  pid: number;
  ready: boolean;
  docker: string;
  dockerReconnects: number;
  cgroupRoot: string | null;
  cgroupIsHostRoot: boolean;
  attached: string[];
  maps: { services: number; backends: number } | null;
  redirect: string | null;
  envoy: { state: string; pid: number | null; version?: string | null; restarts?: number; lastNack?: string | null; adopted?: boolean; ackedVersion?: string | null };
  /** Problems of the ingresses (publish port taken, TLS host not served, ...), additive. */
  ingressErrors?: { ingress: string; error: string; code?: string }[];
  labelErrors: { container: string; label: string; error: string }[];
  /** berth's DNS (additive: absent from older berthd, null when dnsPort is off). */
  dns?: { domain: string; vip: string; vip6: string | null; port: number; listen: string[]; backend: string | null; upstreams: { ip: string; port: number }[]; upstreamSource: string; errors: string[] } | null;
  /** Cluster mode only (etcdEndpoints set); null or absent on a single host. */
  cluster?: {
    etcd: string; endpoints: string[]; node: string; address: string | null; nodes: string[]; revision: string;
    lease: string | null; compactions: number; disconnects: number; rejectedRecords: number; lastError: string | null;
    remoteBackends: number; overlaps: { message: string }[]; routes: { subnet: string; via: string; node: string }[]; errors: string[];
    /** Additive (absent from older berthd): flows from peers accepted into local subnets. */
    accepts?: { family: number; peer: string; node: string; subnet: string }[];
    peerAccept?: { family: number; dockerUser: boolean; rules: number; error: string | null }[];
  } | null;
  lastReconcile: { at: string; durationMs: number; error: string | null } | null;
  config: Record<string, unknown>;
  configSources: Record<string, string>;
  configFile: string | null;
  crossNetwork?: {
    mode: string;
    how: string | null;
    flows: { matchPin: string | null; recording: boolean; error: string | null } | null;
    chains: { family: number; dockerUser: boolean; isolation: boolean; jumpFirst: boolean; chainOk: boolean }[];
    error: string | null;
  };
  backendWarnings?: { service: string; container: string; reachable: boolean; reason: string }[];
}

/** One line on how VIPs cross Docker networks (status). Pure. */
export function crossNetworkText(x: NonNullable<StatusView['crossNetwork']>): string {
  const how = x.how === 'balanced-flows' ? 'balanced flows pass Docker\'s isolation (xt_bpf + CONNMARK in DOCKER-USER)'
    : x.how === 'open-ports' ? `WEAKER fallback: backends' service ports opened to every network (${x.flows?.error ?? 'flow programs unavailable'})`
      : x.how === 'docker' ? 'Docker\'s isolation decides (clients get backends on a network they share)' : 'not applied yet';
  const v4 = x.chains.find((c) => c.family === 4);
  const chains = !v4 ? '' : !v4.dockerUser ? '; no DOCKER-USER chain (Docker manages no iptables isolation)'
    : x.how === 'docker' ? '' : v4.jumpFirst && v4.chainOk ? '; rules in place' : '; rules NOT in place';
  return `${x.mode}: ${how}${chains}${x.error ? `; ERROR: ${x.error}` : ''}`;
}

/** Left-aligned columns, two spaces apart. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

function portsText(s: ServiceView): string {
  return s.ports.map((p) => (p.port === p.targetPort ? `${p.port}/${p.protocol}` : `${p.port}->${p.targetPort}/${p.protocol}`)).join(',');
}

export function formatServices(services: ServiceView[]): string {
  if (services.length === 0) return 'no services (label containers with berth.service=NAME)';
  const rows = services.map((s) => [
    s.name,
    s.kind,
    s.vip,
    s.vip6 ?? '-',
    portsText(s),
    s.kind === 'ingress'
      ? `listener ${s.listenerPort ?? '-'}${s.publish ? `, publish ${s.publish}` : ''}`
      : s.backends.length === 0
        ? 'none'
        : s.backends.map((b) => (b.reachable === false ? `${b.node ? `${b.node}/` : ''}${b.container}(unreachable)` : `${b.node ? `${b.node}/` : ''}${b.container}(${b.ip ?? b.ip6 ?? '?'})`)).join(' '),
  ]);
  const out = [table(['NAME', 'KIND', 'VIP', 'VIP6', 'PORTS', 'BACKENDS'], rows)];
  for (const s of services) {
    if (s.kind === 'ingress' && s.routes.length) {
      out.push(`\n${s.name} routes:`);
      for (const r of s.routes) out.push(`  ${r.host ?? '*'}${r.path} -> ${r.service}:${r.port}`);
    }
  }
  const notes = services.flatMap((s) => s.backends.filter((b) => b.reason).map((b) => `  ${s.name}: ${b.container}: ${b.reason}`));
  if (notes.length) out.push('\nbackend notes:', ...notes);
  const errs = services.filter((s) => s.errors.length);
  if (errs.length) {
    out.push('\nerrors:');
    for (const s of errs) for (const e of s.errors) out.push(`  ${s.name}: ${e}`);
  }
  return out.join('\n');
}

export function formatStatus(st: StatusView): string {
  const lines = [
    `berthd ${st.version} (pid ${st.pid}): ${st.ready ? 'ready' : 'starting'}`,
    `docker:      ${st.docker} (reconnects ${st.dockerReconnects})`,
    `cgroup root: ${st.cgroupRoot ?? '-'} (${st.cgroupIsHostRoot ? 'host root: yes' : 'host root: NO — only processes below it see VIPs'})`,
    `attached:    ${st.attached.length ? st.attached.join(' ') : 'nothing'}`,
    `maps:        ${st.maps ? `${st.maps.services} service entries, ${st.maps.backends} backends` : '-'}`,
    `redirect:    ${st.redirect ?? '-'}`,
    ...(st.crossNetwork ? [`networks:    ${crossNetworkText(st.crossNetwork)}`] : []),
    `envoy:       ${st.envoy.state}${st.envoy.pid ? ` (pid ${st.envoy.pid})` : ''}${st.envoy.version ? ` ${st.envoy.version}` : ''}${st.envoy.restarts ? `, ${st.envoy.restarts} restarts` : ''}${st.envoy.adopted ? ', adopted from the previous berthd' : ''}`,
  ];
  if (st.envoy.lastNack) lines.push(`             last rejected config: ${st.envoy.lastNack}`);
  if (st.dns) {
    const d = st.dns;
    lines.push(`dns:         *.${d.domain} at ${d.vip}${d.vip6 ? ` and ${d.vip6}` : ''} -> ${d.backend ?? '-'}:${d.port} (listening on ${d.listen.join(', ') || 'nothing'}); ` +
      `other names -> ${d.upstreams.map((u) => `${u.ip}:${u.port}`).join(', ') || 'nowhere (SERVFAIL)'} (from ${d.upstreamSource})`);
    for (const e of d.errors) lines.push(`             ${e}`);
  } else if (st.dns === null) {
    lines.push('dns:         off');
  }
  const c = st.cluster;
  if (c) {
    lines.push(`cluster:     etcd ${c.etcd} (${c.endpoints.join(',')}), revision ${c.revision}${c.lastError && c.etcd !== 'connected' ? `, last error: ${c.lastError}` : ''}`);
    lines.push(`             this node ${c.node} at ${c.address ?? '?'}; nodes seen: ${c.nodes.join(' ') || 'none'}; ${c.remoteBackends} remote backends`);
    if (c.disconnects || c.compactions || c.rejectedRecords) {
      lines.push(`             ${c.disconnects} etcd disconnects, ${c.compactions} compaction re-reads, ${c.rejectedRecords} rejected records`);
    }
    for (const r of c.routes) lines.push(`             route ${r.subnet} via ${r.via} (node ${r.node})`);
    for (const a of c.accepts ?? []) lines.push(`             accept ${a.peer} (node ${a.node}) -> ${a.subnet} (DOCKER-USER -> BERTH_PEERS)`);
    for (const f of c.peerAccept ?? []) if (f.error) lines.push(`             peer accept rules (IPv${f.family}) FAILED: ${f.error}`);
    for (const o of c.overlaps) lines.push(`             ${o.message}`);
    for (const e of c.errors) lines.push(`             ${e}`);
  }
  if (st.lastReconcile) {
    lines.push(`reconcile:   ${st.lastReconcile.at} in ${st.lastReconcile.durationMs.toFixed(1)} ms${st.lastReconcile.error ? `, FAILED: ${st.lastReconcile.error}` : ''}`);
  }
  lines.push(`config:      ${st.configFile ?? 'no config file'}`);
  for (const [k, v] of Object.entries(st.config)) {
    const src = st.configSources[k];
    lines.push(`  ${k}: ${typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}${src && src !== 'default' ? ` (${src})` : ''}`);
  }
  if (st.ingressErrors?.length) {
    lines.push('ingress errors:');
    for (const e of st.ingressErrors) lines.push(`  ingress ${e.ingress}: ${e.error}`);
  }
  if (st.backendWarnings?.length) {
    lines.push('backend warnings:');
    for (const w of st.backendWarnings) lines.push(`  ${w.service}: container ${w.container}${w.reachable ? '' : ' (no traffic)'}: ${w.reason}`);
  }
  if (st.labelErrors.length) {
    lines.push('label errors:');
    for (const e of st.labelErrors) lines.push(`  container ${e.container}, label ${e.label}: ${e.error}`);
  } else {
    lines.push('label errors: none');
  }
  return lines.join('\n');
}
