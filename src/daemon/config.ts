/**
 * berthd configuration: defaults < /etc/berth/config.yaml < BERTH_* env < --flags (SPEC "Config keys").
 *
 * Every key has one spec entry below; flags are the kebab-case of the key and env vars its
 * UPPER_SNAKE form with a BERTH_ prefix. Validation names the key and where the bad value came
 * from, and berthd refuses to start on any error (an unknown key or flag included): silently
 * ignoring a typo in a daemon that rewrites every connect() on the host is worse than not starting.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
// `yaml` is required where a config file is read, not at load: it is ~80 ms of CPU on every
// start (72 modules; `require('yaml')` in a fresh node 20), and berthd often runs with no file.
import type YAMLModule from 'yaml';
import { dnsVips } from '../dns/vips';

export interface Config {
  serviceCidr: string;
  serviceCidr6: string;
  cgroupRoot: string;
  redirect: 'auto' | 'ebpf' | 'iptables';
  envoyPath: string;
  proxyPorts: { from: number; to: number };
  hostProc: string;
  dockerHost: string;
  logLevel: string;
  /** Extension: optional TCP address for Prometheus metrics (host:port); off by default. */
  metricsAddress: string | null;
  /** Extension: runtime dir (admin socket, Envoy files, cgroupv2 mount). */
  runDir: string;
  /** Extension: state dir (VIP and listener-port assignments). */
  stateDir: string;
  /** Extension: bpffs directory for berth's pins. */
  bpfPinDir: string;
  /** Extension: seconds between full Docker resyncs. */
  resyncInterval: number;
  /** DNS zone berthd answers (`<service>.<dnsDomain>`), lower case, no trailing dot. */
  dnsDomain: string;
  /** VIP of berth's DNS server: 'auto' (the range's .10) or an address inside serviceCidr. */
  dnsVip: string;
  /** Its IPv6 twin: 'auto' (the range's ::a), an address inside serviceCidr6, or 'off'. */
  dnsVip6: string;
  /** Extension: port berthd's DNS server listens on (loopback, Docker bridge gateway); null = no DNS. */
  dnsPort: number | null;
  /** Extension: 'auto' (the host's resolv.conf) or upstream resolvers `ip[:port]`, comma separated. */
  dnsUpstreams: string;
  /**
   * Which clients reach which backends across Docker networks (SPEC): 'allow' = every client
   * reaches every VIP (only balanced flows pass Docker's isolation); 'docker' = Docker's
   * isolation is the policy.
   */
  crossNetwork: 'allow' | 'docker';
  /** `<host>.crt` / `<host>.key` for TLS ingresses (SPEC). */
  tlsDir: string;
  /** Extension: write Envoy's JSON access log lines into berthd's log (part "access"). */
  accessLog: boolean;
  /**
   * Extension: seconds between periodic reconciles (repairs of what someone else removed: flushed
   * iptables rules, a detached tc program, a deleted map entry). Fractions allowed (tests use 0.2).
   */
  reconcileInterval: number;
  /** etcd v3 endpoints (URLs `http(s)://host:port`); empty = single-host mode (the default). */
  etcdEndpoints: string[];
  /** PEM CA bundle that signs etcd's server certificate; null = system CAs (only with https). */
  etcdCaFile: string | null;
  /** PEM client certificate for etcd; given together with etcdKeyFile. */
  etcdCertFile: string | null;
  /** PEM private key of etcdCertFile. */
  etcdKeyFile: string | null;
  /** berth's key prefix in etcd (no trailing slash); berth reads and writes only below it. */
  etcdPrefix: string;
  /**
   * TTL in whole seconds of the etcd lease this node's records live under (kept alive at a third
   * of it); a host that dies is dropped by its peers TTL + a reconcile later. etcd raises a TTL
   * below its own minimum (1.5 × the election timeout) to that minimum.
   */
  etcdLeaseTtl: number;
  /** This host's name in the cluster (default: the hostname). */
  nodeName: string;
  /** The address peers reach this host at; null = auto (source of the route to the first endpoint). */
  nodeAddress: string | null;
}

export type Source = 'default' | 'file' | 'env' | 'flag';

export class ConfigError extends Error {
  readonly code = 'BERTH_CONFIG';
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

type Parser<T> = (raw: unknown) => T;

interface KeySpec<T> {
  default: () => T;
  parse: Parser<T>;
  help: string;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function str(raw: unknown): string {
  if (typeof raw !== 'string' || raw.trim() === '') throw new Error('must be a non-empty string');
  return raw.trim();
}

function cidr(family: 4 | 6): Parser<string> {
  return (raw) => {
    const s = str(raw);
    const m = /^([^/]+)\/(\d{1,3})$/.exec(s);
    if (!m || net.isIP(m[1]) !== family) throw new Error(`must be an IPv${family} CIDR like ${family === 4 ? '10.96.0.0/16' : 'fd00:96::/112'}`);
    const hostBits = (family === 4 ? 32 : 128) - Number(m[2]);
    if (hostBits < 2 || hostBits > 24) throw new Error('prefix must leave between 2 and 24 host bits');
    return s;
  };
}

function port(s: string): number {
  if (!/^\d+$/.test(s)) throw new Error(`"${s}" is not a port number`);
  const n = Number(s);
  if (n < 1 || n > 65535) throw new Error(`port ${n} is outside 1-65535`);
  return n;
}

function portRange(raw: unknown): { from: number; to: number } {
  const s = str(String(raw));
  const m = /^(\d+)(?:-(\d+))?$/.exec(s);
  if (!m) throw new Error('must be a port range like 15000-15999');
  const from = port(m[1]);
  const to = m[2] ? port(m[2]) : from;
  if (to < from) throw new Error('range end is below its start');
  return { from, to };
}

function hostPort(raw: unknown): string | null {
  if (raw === null || raw === '' || raw === 'off') return null;
  const s = str(String(raw));
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]+)):(\d+)$/.exec(s);
  if (!m) throw new Error('must be host:port, e.g. 127.0.0.1:9963 or [::1]:9963, or "off"');
  const host = m[1] ?? m[2];
  if (m[1] && net.isIPv6(host) === false) throw new Error(`"${host}" is not an IPv6 address`);
  port(m[3]);
  return s;
}

function absPath(raw: unknown): string {
  const s = str(raw);
  if (!s.startsWith('/')) throw new Error('must be an absolute path');
  return s.replace(/\/+$/, '') || '/';
}

function dnsName(raw: unknown): string {
  const s = str(raw).toLowerCase().replace(/\.$/, '');
  const label = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
  if (s.length > 200 || !s.split('.').every((l) => label.test(l))) throw new Error('must be a DNS name: labels of a-z, 0-9 and \'-\' separated by dots');
  return s;
}

function ipOr(family: 4 | 6, words: string[]): Parser<string> {
  return (raw) => {
    const s = str(String(raw));
    if (words.includes(s) || net.isIP(s) === family) return s;
    throw new Error(`must be ${words.map((w) => `'${w}'`).join(' or ')} or an IPv${family} address`);
  };
}

function upstreams(raw: unknown): string {
  const s = str(String(raw));
  if (s === 'auto') return s;
  for (const item of s.split(',')) {
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)|([0-9a-fA-F:]+))(?::(\d+))?$/.exec(item.trim());
    const host = m ? (m[1] ?? m[2] ?? m[3]) : '';
    if (!m || net.isIP(host) === 0 || (m[3] && m[4])) throw new Error(`"${item}" is not ip, ip:port or [ip6]:port`);
    if (m[4]) port(m[4]);
  }
  return s;
}

/** Comma-separated (or a YAML list of) etcd endpoints; a bare host:port means http://host:port. */
function endpoints(raw: unknown): string[] {
  if (raw === null || raw === '' || raw === 'off') return [];
  const items = Array.isArray(raw) ? raw.map((x) => String(x)) : String(raw).split(',');
  const out: string[] = [];
  for (const item of items.map((x) => x.trim()).filter(Boolean)) {
    const withScheme = /^[a-z]+:\/\//i.test(item) ? item : `http://${item}`;
    let u: URL;
    try {
      u = new URL(withScheme);
    } catch {
      throw new Error(`"${item}" is not an endpoint like https://10.0.0.1:2379`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`"${item}": scheme must be http or https`);
    if (!u.port) throw new Error(`"${item}" has no port (etcd's client port is usually 2379)`);
    if (u.pathname !== '/' || u.search || u.hash || u.username) throw new Error(`"${item}" must be scheme://host:port only`);
    out.push(`${u.protocol}//${u.host}`);
  }
  if (out.length === 0) throw new Error('must name at least one endpoint, or be "off"');
  const schemes = new Set(out.map((e) => e.split(':')[0]));
  if (schemes.size > 1) throw new Error('all endpoints must use the same scheme (http or https)');
  return out;
}

/** An absolute path to a readable file, or null for off. */
function fileOrOff(raw: unknown): string | null {
  if (raw === null || raw === '' || raw === 'off') return null;
  const p = absPath(raw);
  try {
    fs.accessSync(p, fs.constants.R_OK);
  } catch (e) {
    throw new Error(`cannot read ${p}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return p;
}

function etcdPrefix(raw: unknown): string {
  const s = str(raw).replace(/\/+$/, '');
  if (!/^(\/[A-Za-z0-9_.-]+)+$/.test(s)) throw new Error('must look like /berth (slash-separated names of letters, digits, _ . -)');
  return s;
}

function nodeName(raw: unknown): string {
  const s = str(String(raw));
  if (!/^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$/.test(s)) throw new Error('must be 1-63 letters, digits, . _ - starting with a letter or digit');
  return s;
}

const SPECS: { [K in keyof Config]: KeySpec<Config[K]> } = {
  serviceCidr: { default: () => '10.96.0.0/16', parse: cidr(4), help: 'IPv4 VIP range' },
  serviceCidr6: { default: () => 'fd00:96::/112', parse: cidr(6), help: 'IPv6 VIP range' },
  cgroupRoot: {
    default: () => 'auto',
    parse: (raw) => (str(raw) === 'auto' ? 'auto' : absPath(raw)),
    help: "'auto' (host root cgroup v2) or a cgroup2 directory",
  },
  redirect: {
    default: () => 'auto',
    parse: (raw) => {
      const s = str(raw);
      if (s !== 'auto' && s !== 'ebpf' && s !== 'iptables') throw new Error("must be 'auto', 'ebpf' or 'iptables'");
      return s;
    },
    help: 'how ingress traffic reaches Envoy',
  },
  crossNetwork: {
    default: () => 'allow',
    parse: (raw) => {
      const s = str(raw);
      if (s !== 'allow' && s !== 'docker') throw new Error("must be 'allow' or 'docker'");
      return s;
    },
    help: 'VIPs across Docker networks: allow (every client) or docker (Docker isolation decides)',
  },
  envoyPath: { default: () => 'envoy', parse: str, help: 'Envoy binary (PATH lookup for a bare name)' },
  tlsDir: { default: () => '/etc/berth/tls', parse: absPath, help: 'directory of <host>.crt and <host>.key (PEM) for TLS ingresses' },
  accessLog: {
    default: () => true,
    parse: (raw) => {
      if (typeof raw === 'boolean') return raw; // YAML true/false
      const s = str(raw).toLowerCase();
      if (['true', '1', 'yes', 'on'].includes(s)) return true;
      if (['false', '0', 'no', 'off'].includes(s)) return false;
      throw new Error('must be true or false');
    },
    help: "log one JSON line per ingress request in berthd's log (part \"access\")",
  },
  proxyPorts: { default: () => ({ from: 15000, to: 15999 }), parse: portRange, help: 'Envoy listener port range' },
  hostProc: { default: () => '/proc', parse: absPath, help: "where the host's /proc is visible" },
  dockerHost: {
    default: () => process.env.DOCKER_HOST || 'unix:///var/run/docker.sock',
    parse: (raw) => {
      const s = str(raw);
      if (!/^(unix:\/\/\/|tcp:\/\/|\/)/.test(s)) throw new Error('must be unix:///path, tcp://host:port or an absolute socket path');
      return s;
    },
    help: 'Docker engine to watch',
  },
  logLevel: {
    default: () => 'info',
    parse: (raw) => {
      const s = str(raw);
      if (!LOG_LEVELS.includes(s)) throw new Error(`must be one of ${LOG_LEVELS.join(', ')}`);
      return s;
    },
    help: 'pino log level',
  },
  metricsAddress: { default: () => null, parse: hostPort, help: 'TCP host:port for /metrics (off by default)' },
  runDir: { default: () => '/run/berth', parse: absPath, help: 'runtime directory' },
  stateDir: { default: () => '/var/lib/berth', parse: absPath, help: 'state directory' },
  bpfPinDir: { default: () => '/sys/fs/bpf/berth', parse: absPath, help: 'bpffs pin directory' },
  resyncInterval: {
    default: () => 30,
    parse: seconds(1, 3600),
    help: 'seconds between full Docker resyncs',
  },
  dnsDomain: { default: () => 'berth', parse: dnsName, help: 'DNS zone berthd answers: <service>.<dnsDomain>' },
  dnsVip: { default: () => 'auto', parse: ipOr(4, ['auto']), help: "VIP of berth's DNS server ('auto': the range's .10)" },
  dnsVip6: { default: () => 'auto', parse: ipOr(6, ['auto', 'off']), help: "IPv6 VIP of berth's DNS server ('auto': the range's ::a; 'off')" },
  dnsPort: {
    default: () => 10053,
    parse: (raw) => (String(raw).trim() === 'off' ? null : port(String(raw).trim())),
    help: "port of berthd's DNS socket on loopback and the Docker bridge gateway ('off': no DNS)",
  },
  dnsUpstreams: { default: () => 'auto', parse: upstreams, help: "resolvers for names outside the zone ('auto': the host's resolv.conf)" },
  reconcileInterval: {
    default: () => 5,
    parse: seconds(0.1, 3600),
    help: 'seconds between periodic reconciles (repairs)',
  },
  etcdEndpoints: { default: () => [], parse: endpoints, help: 'comma-separated etcd v3 endpoints; set = cluster mode (off by default)' },
  etcdCaFile: { default: () => null, parse: fileOrOff, help: "PEM CA of etcd's server certificate" },
  etcdCertFile: { default: () => null, parse: fileOrOff, help: 'PEM client certificate for etcd' },
  etcdKeyFile: { default: () => null, parse: fileOrOff, help: 'PEM key of the etcd client certificate' },
  etcdPrefix: { default: () => '/berth', parse: etcdPrefix, help: "berth's key prefix in etcd" },
  etcdLeaseTtl: {
    default: () => 5,
    parse: seconds(2, 600, { whole: true }),
    help: "seconds a dead host's services stay before peers drop them (etcd lease TTL)",
  },
  nodeName: { default: () => safeHostname(), parse: nodeName, help: "this host's name in the cluster" },
  nodeAddress: {
    default: () => null,
    parse: (raw) => {
      if (raw === null || raw === '' || raw === 'auto') return null;
      const s = str(String(raw));
      if (net.isIP(s) === 0) throw new Error('must be an IP address or "auto"');
      return s;
    },
    help: 'address peers reach this host at (auto: source of the route to the first etcd endpoint)',
  },
};

/** A parser of a duration in seconds within [min, max] (whole seconds only with `whole`). */
function seconds(min: number, max: number, o: { whole?: boolean } = {}): (raw: unknown) => number {
  return (raw) => {
    const n = Number(raw);
    const ok = o.whole ? Number.isInteger(n) : Number.isFinite(n);
    if (!ok || n < min || n > max) throw new Error(`must be a ${o.whole ? 'whole ' : ''}number of seconds between ${min} and ${max}`);
    return n;
  };
}

/** The hostname cut to what nodeName accepts (a hostname may be an FQDN longer than 63). */
function safeHostname(): string {
  const h = os.hostname().replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 63);
  return h || 'node';
}

/**
 * Checks that involve more than one key, after each key parsed on its own. Throws ConfigError
 * naming the keys and where they came from.
 */
function crossCheck(config: Config, where: (k: keyof Config) => string): void {
  const cert = config.etcdCertFile !== null;
  const key = config.etcdKeyFile !== null;
  if (cert !== key) {
    const given: keyof Config = cert ? 'etcdCertFile' : 'etcdKeyFile';
    const missing: keyof Config = cert ? 'etcdKeyFile' : 'etcdCertFile';
    throw new ConfigError(`${where(given)}: ${given} needs ${missing} too (a client certificate and its key)`);
  }
  const tlsKeys = (['etcdCaFile', 'etcdCertFile', 'etcdKeyFile'] as const).filter((k) => config[k] !== null);
  if (tlsKeys.length > 0) {
    if (config.etcdEndpoints.length === 0) throw new ConfigError(`${where(tlsKeys[0])}: ${tlsKeys[0]} is set but etcdEndpoints is off`);
    if (config.etcdEndpoints.some((e) => e.startsWith('http://'))) {
      throw new ConfigError(`${where(tlsKeys[0])}: ${tlsKeys[0]} is set but etcdEndpoints use http://; use https:// endpoints for TLS`);
    }
  }
}

export const CONFIG_KEYS = Object.keys(SPECS) as (keyof Config)[];
export const DEFAULT_CONFIG_FILE = '/etc/berth/config.yaml';

export function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (m, off: number) => (off > 0 ? '-' : '') + m.toLowerCase());
}

export function envName(key: string): string {
  return 'BERTH_' + kebab(key).replace(/-/g, '_').toUpperCase();
}

const FLAG_TO_KEY = new Map(CONFIG_KEYS.map((k) => [kebab(k), k] as const));
const ENV_TO_KEY = new Map(CONFIG_KEYS.map((k) => [envName(k), k] as const));

export interface LoadedConfig {
  config: Config;
  /** Where each key's effective value came from (shown by `berth status`). */
  sources: Record<keyof Config, Source>;
  configFile: string | null;
}

/** Parse `--key value` / `--key=value` flags. `--config PATH` names the file. */
export function parseFlags(argv: string[]): { values: Map<keyof Config, string>; configFile: string | null; help: boolean } {
  const values = new Map<keyof Config, string>();
  let configFile: string | null = null;
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      help = true;
      continue;
    }
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/.exec(arg);
    if (!m) throw new ConfigError(`unexpected argument "${arg}" (flags look like --service-cidr 10.96.0.0/16)`);
    const name = m[1];
    // Unknown before missing value: `--bogus` alone is a misspelt flag, not one that lacks a value.
    const key = FLAG_TO_KEY.get(name);
    if (!key && name !== 'config') throw new ConfigError(`unknown flag --${name} (known: --config, ${[...FLAG_TO_KEY.keys()].map((f) => '--' + f).join(', ')})`);
    let value = m[2];
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new ConfigError(`flag --${name} needs a value`);
      value = argv[++i];
    }
    if (!key) {
      configFile = value;
      continue;
    }
    values.set(key, value);
  }
  return { values, configFile, help };
}

/**
 * Load the effective configuration. The file is optional when it is the default path and
 * absent; a file named explicitly (--config or BERTH_CONFIG) must exist.
 */
export function loadConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const flags = parseFlags(argv);
  const explicitFile = flags.configFile ?? env.BERTH_CONFIG ?? null;
  const file = explicitFile ?? DEFAULT_CONFIG_FILE;
  const raw: Partial<Record<keyof Config, { value: unknown; source: Source; where: string }>> = {};

  let fileUsed: string | null = null;
  if (fs.existsSync(file)) {
    let doc: unknown;
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const YAML = require('yaml') as typeof YAMLModule;
      doc = YAML.parse(fs.readFileSync(file, 'utf8'));
    } catch (e) {
      throw new ConfigError(`config file ${file}: ${(e as Error).message}`);
    }
    if (doc !== null && doc !== undefined) {
      if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError(`config file ${file}: must be a mapping of keys to values`);
      for (const [k, v] of Object.entries(doc as Record<string, unknown>)) {
        if (!(k in SPECS)) throw new ConfigError(`config file ${file}: unknown key "${k}" (known: ${CONFIG_KEYS.join(', ')})`);
        raw[k as keyof Config] = { value: v, source: 'file', where: `config file ${file}, key ${k}` };
      }
    }
    fileUsed = file;
  } else if (explicitFile) {
    throw new ConfigError(`config file ${explicitFile} does not exist`);
  }

  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith('BERTH_') || name === 'BERTH_CONFIG' || value === undefined) continue;
    const key = ENV_TO_KEY.get(name);
    // Unknown BERTH_* variables are ignored, not fatal: the environment is shared with other
    // tools (the CLI reads BERTH_SOCKET, tests set BERTH_TEST_*), unlike flags and the file.
    if (key) raw[key] = { value, source: 'env', where: `environment variable ${name}` };
  }
  for (const [key, value] of flags.values) raw[key] = { value, source: 'flag', where: `flag --${kebab(key)}` };

  const config = {} as Record<keyof Config, unknown>;
  const sources = {} as Record<keyof Config, Source>;
  for (const key of CONFIG_KEYS) {
    const spec = SPECS[key] as KeySpec<unknown>;
    const given = raw[key];
    if (!given) {
      config[key] = spec.default();
      sources[key] = 'default';
      continue;
    }
    try {
      config[key] = spec.parse(given.value);
    } catch (e) {
      throw new ConfigError(`${given.where}: invalid ${key} ${JSON.stringify(given.value)}: ${(e as Error).message}`);
    }
    sources[key] = given.source;
  }
  // Cross-key check: the DNS VIPs must lie in the ranges (named by the key that is wrong).
  try {
    dnsVips(config as unknown as Config);
  } catch (e) {
    const key = (e as { key?: keyof Config }).key ?? 'dnsVip';
    const given = raw[key];
    throw new ConfigError(`${given ? given.where : `default of ${key}`}: invalid ${key}: ${(e as Error).message}`);
  }
  crossCheck(config as unknown as Config, (k) => raw[k]?.where ?? `default of ${k}`);
  return { config: config as unknown as Config, sources, configFile: fileUsed };
}

export function usage(): string {
  const lines = ['usage: berthd [--config FILE] [--key value ...]', '', 'keys (flag / env / meaning / default):'];
  for (const key of CONFIG_KEYS) {
    const spec = SPECS[key] as KeySpec<unknown>;
    lines.push(`  --${kebab(key)}  ${envName(key)}  ${spec.help} (default ${JSON.stringify(spec.default())})`);
  }
  return lines.join('\n');
}
