/**
 * `berth dns query|setup`: ask a DNS server (like a tiny dig), and make/undo the host changes
 * that point resolvers at berth (src/dns/setup.ts says exactly which).
 */
import path from 'node:path';
import { loadConfig, ConfigError } from '../daemon/config';
import { query } from '../dns/client';
import { dnsVips } from '../dns/vips';
import {
  applySetup, revertSetup, resolvedRuns, DEFAULT_DOCKER_DAEMON_JSON, DEFAULT_RESOLVED_DROPIN, type FileChange, type SetupPaths,
} from '../dns/setup';
import { run } from '../util/exec';

export const DNS_USAGE = `  dns query NAME [TYPE] [--server IP] [--port N] [--tcp]
             ask a DNS server (default: berth's DNS VIP) for NAME (TYPE default A)
  dns setup [--apply | --revert]
             print (or make, or undo) the host changes that send names under dnsDomain to
             berth: a systemd-resolved drop-in and Docker's daemon.json "dns"`;

function take(args: string[], name: string, hasValue: boolean): string | null {
  const i = args.findIndex((a) => a === name || (hasValue && a.startsWith(name + '=')));
  if (i < 0) return null;
  if (!hasValue) {
    args.splice(i, 1);
    return '';
  }
  if (args[i].includes('=')) return args.splice(i, 1)[0].split('=').slice(1).join('=');
  if (args[i + 1] === undefined) throw new ConfigError(`flag ${name} needs a value`);
  return args.splice(i, 2)[1];
}

/** Positional arguments: up to the first flag. */
function positionals(args: string[], max: number): string[] {
  const out: string[] = [];
  while (args.length && !args[0].startsWith('--') && out.length < max) out.push(args.shift()!);
  return out;
}

const describe = (c: FileChange) => `${c.before === null ? 'create' : c.after === null ? 'remove' : 'change'} ${c.file}: ${c.why}`;

export async function dnsCommand(argsIn: string[], json: boolean): Promise<number> {
  const args = [...argsIn];
  const sub = args.shift();
  const out = (data: unknown, human: string) => process.stdout.write((json ? JSON.stringify(data, null, 2) : human) + '\n');
  if (sub === 'query') {
    const [name, type = 'A'] = positionals(args, 2);
    if (!name) throw new ConfigError('berth dns query: which name?');
    const server = take(args, '--server', true);
    const port = take(args, '--port', true);
    const tcp = take(args, '--tcp', false) !== null;
    const cfg = loadConfig(args).config;
    const r = await query(name, type.toUpperCase(), { server: server ?? dnsVips(cfg).vip, port: port ? Number(port) : 53, tcp, timeoutMs: 3000 });
    const p = r.packet as typeof r.packet & { rcode: string };
    out({ rcode: p.rcode, transport: r.transport, bytes: r.bytes, answers: p.answers ?? [], authorities: p.authorities ?? [] },
      [`;; ${p.rcode} over ${r.transport}, ${r.bytes} bytes`, ...(p.answers ?? []).map((a) => `${a.name}\t${(a as { ttl?: number }).ttl ?? ''}\t${a.type}\t${JSON.stringify((a as { data?: unknown }).data)}`)].join('\n'));
    return p.rcode === 'NOERROR' ? 0 : 1;
  }
  if (sub === 'setup') {
    const apply = take(args, '--apply', false) !== null;
    const revert = take(args, '--revert', false) !== null;
    const noRestart = take(args, '--no-restart', false) !== null;
    const paths: SetupPaths = {
      dockerDaemonJson: take(args, '--docker-daemon-json', true) ?? DEFAULT_DOCKER_DAEMON_JSON,
      resolvedDropIn: take(args, '--resolved-dropin', true) ?? DEFAULT_RESOLVED_DROPIN,
      record: '',
    };
    const resolvedDir = take(args, '--resolved-run-dir', true);
    const cfg = loadConfig(args).config;
    paths.record = path.join(cfg.stateDir, 'dns-setup.json');
    if (apply && revert) throw new ConfigError('berth dns setup: --apply or --revert, not both');
    const resolved = resolvedRuns(resolvedDir ?? undefined);
    if (revert) {
      const r = revertSetup(paths);
      if (!noRestart && resolved && r.restored.some((c) => c.file === paths.resolvedDropIn)) await run('systemctl', ['restart', 'systemd-resolved']);
      out(r, [...r.restored.map((c) => `restored ${c.file}`), ...r.leftAlone, r.restored.length + r.leftAlone.length ? '' : 'nothing to revert'].filter(Boolean).join('\n') +
        (r.restored.some((c) => c.file === paths.dockerDaemonJson) ? '\nrestart dockerd (systemctl restart docker) for Docker to stop using berth' : ''));
      return 0;
    }
    const v = dnsVips(cfg);
    const changes = applySetup({ domain: cfg.dnsDomain, vip: v.vip, vip6: v.vip6, resolved }, paths, apply);
    const notes: string[] = [];
    if (!resolved) notes.push(`systemd-resolved does not run here: host programs ask berth once ${v.vip} is the first nameserver in /etc/resolv.conf (berth forwards other names to the resolvers listed there now)`);
    if (apply && !noRestart && resolved && changes.some((c) => c.file === paths.resolvedDropIn)) {
      const r = await run('systemctl', ['restart', 'systemd-resolved']);
      notes.push(r.code === 0 ? 'restarted systemd-resolved' : `systemctl restart systemd-resolved failed: ${r.stderr.trim()}`);
    }
    if (changes.some((c) => c.file === paths.dockerDaemonJson)) notes.push(`${apply ? 'now ' : 'then '}restart dockerd (systemctl restart docker): containers created after that ask berth`);
    out({ applied: apply, changes, notes }, [
      changes.length ? (apply ? 'changed:' : 'would change (run with --apply):') : 'nothing to change: this host already asks berth',
      ...changes.map((c) => `  ${describe(c)}`),
      ...(apply || !changes.length ? [] : changes.filter((c) => c.after !== null).flatMap((c) => [`--- ${c.file} would read:`, c.after!.trimEnd()])),
      ...notes,
    ].join('\n'));
    return 0;
  }
  throw new ConfigError(`berth dns: unknown subcommand "${sub ?? ''}" (query, setup)`);
}
