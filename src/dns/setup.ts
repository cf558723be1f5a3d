/**
 * `berth dns setup [--apply | --revert]`: the host changes that make clients ask berth.
 *
 *  - systemd-resolved (where it runs: /run/systemd/resolve exists): a drop-in
 *    /etc/systemd/resolved.conf.d/berth.conf with `DNS=<dnsVip>` and `Domains=~<dnsDomain>`, so
 *    resolved sends only names in the zone to berth (a routing-only domain) and everything else
 *    where it did before.
 *  - Docker: the daemon's `dns` setting (/etc/docker/daemon.json) gets the DNS VIP first, so
 *    containers on the default bridge get `nameserver <dnsVip>` and Docker's embedded resolver on
 *    user-defined networks forwards to it. Servers already listed stay after it, as fall-backs.
 *    dockerd reads it at start: berth prints that it needs a restart and does not restart it.
 *
 * What --apply changed is recorded (file, content before, content after) in
 * `<stateDir>/dns-setup.json`; --revert and `berth cleanup` put back the exact previous content
 * (or remove a file berth created), and leave alone a file someone changed since (reported).
 * planSetup() and revertPlan() are pure; applySetup()/revertSetup() do the file I/O.
 */
import fs from 'node:fs';
import path from 'node:path';

export interface SetupPaths {
  dockerDaemonJson: string;
  resolvedDropIn: string;
  /** Where the record of applied changes lives. */
  record: string;
}

export const DEFAULT_DOCKER_DAEMON_JSON = '/etc/docker/daemon.json';
export const DEFAULT_RESOLVED_DROPIN = '/etc/systemd/resolved.conf.d/berth.conf';
export const RESOLVED_RUN_DIR = '/run/systemd/resolve';

export interface FileChange {
  file: string;
  /** Content before (null: the file did not exist). */
  before: string | null;
  /** Content after (null: the file is removed). */
  after: string | null;
  /** One line for humans. */
  why: string;
}

export interface SetupRecord {
  version: 1;
  appliedAt: string;
  changes: FileChange[];
}

export class SetupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SetupError';
  }
}

/** The drop-in text: only `~<domain>` is routed to the DNS VIP(s). */
export function resolvedDropIn(domain: string, vip: string, vip6: string | null): string {
  return [
    '# Written by `berth dns setup --apply`; removed by `berth dns setup --revert` and `berth cleanup`.',
    `# Names under ${domain} go to berth's DNS VIP; everything else goes where it went before.`,
    '[Resolve]',
    `DNS=${vip}${vip6 ? ` ${vip6}` : ''}`,
    `Domains=~${domain}`,
    '',
  ].join('\n');
}

/**
 * daemon.json with the DNS VIP first in `dns` (other keys and servers kept). Returns null when it
 * is already first. Throws SetupError for a file that is not a JSON object (never overwritten).
 */
export function dockerDaemonJson(before: string | null, vip: string): string | null {
  let doc: Record<string, unknown> = {};
  if (before !== null && before.trim() !== '') {
    try {
      doc = JSON.parse(before) as Record<string, unknown>;
    } catch (e) {
      throw new SetupError(`Docker's daemon.json is not valid JSON (${(e as Error).message}); fix it first, berth does not overwrite it`);
    }
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new SetupError("Docker's daemon.json is not a JSON object");
  }
  const dns = doc.dns === undefined ? [] : doc.dns;
  if (!Array.isArray(dns) || !dns.every((d) => typeof d === 'string')) throw new SetupError(`Docker's daemon.json "dns" is not a list of addresses`);
  if (dns[0] === vip) return null;
  doc.dns = [vip, ...dns.filter((d) => d !== vip)];
  return JSON.stringify(doc, null, 2) + '\n';
}

/** What --apply would change, given the files' current contents. Pure. */
export function planSetup(
  o: { domain: string; vip: string; vip6: string | null; resolved: boolean },
  paths: SetupPaths,
  current: { dockerDaemonJson: string | null; resolvedDropIn: string | null },
): FileChange[] {
  const out: FileChange[] = [];
  if (o.resolved) {
    const want = resolvedDropIn(o.domain, o.vip, o.vip6);
    if (current.resolvedDropIn !== want) {
      out.push({ file: paths.resolvedDropIn, before: current.resolvedDropIn, after: want, why: `systemd-resolved: route ~${o.domain} to ${o.vip}` });
    }
  }
  const docker = dockerDaemonJson(current.dockerDaemonJson, o.vip);
  if (docker !== null) out.push({ file: paths.dockerDaemonJson, before: current.dockerDaemonJson, after: docker, why: `Docker: containers ask ${o.vip} first (needs a dockerd restart)` });
  return out;
}

/**
 * How to undo a record, given the files' current contents: restore where the file still holds
 * what berth wrote, otherwise leave it (someone changed it since) and say so. Pure.
 */
export function revertPlan(record: SetupRecord, currentIn: Map<string, string | null>): { restore: FileChange[]; leftAlone: string[] } {
  const current = new Map(currentIn);
  const restore: FileChange[] = [];
  const leftAlone: string[] = [];
  // Newest change first, so that two changes of one file unwind in order.
  for (const c of [...record.changes].reverse()) {
    const now = current.get(c.file) ?? null;
    if (now === c.after) {
      restore.push({ file: c.file, before: now, after: c.before, why: `restore ${c.file}` });
      current.set(c.file, c.before);
    } else leftAlone.push(`${c.file} changed since berth wrote it; left as it is`);
  }
  return { restore, leftAlone };
}

function read(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

function write(file: string, content: string | null): void {
  if (content === null) {
    fs.rmSync(file, { force: true });
    return;
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.berth-tmp`;
  fs.writeFileSync(tmp, content, { mode: 0o644 });
  fs.renameSync(tmp, file);
}

export function readRecord(file: string): SetupRecord | null {
  const t = read(file);
  if (t === null) return null;
  try {
    const r = JSON.parse(t) as SetupRecord;
    if (r.version !== 1 || !Array.isArray(r.changes)) throw new Error('unknown format');
    return r;
  } catch (e) {
    throw new SetupError(`${file}: not a berth DNS setup record (${(e as Error).message})`);
  }
}

/** Current contents, the plan, and (apply) the writes. The record accumulates over applies. */
export function applySetup(o: { domain: string; vip: string; vip6: string | null; resolved: boolean }, paths: SetupPaths, apply: boolean): FileChange[] {
  const changes = planSetup(o, paths, { dockerDaemonJson: read(paths.dockerDaemonJson), resolvedDropIn: read(paths.resolvedDropIn) });
  if (!apply || changes.length === 0) return changes;
  const prev = readRecord(paths.record);
  const record: SetupRecord = { version: 1, appliedAt: new Date().toISOString(), changes: [...(prev?.changes ?? []), ...changes] };
  // The record first: a crash between the two leaves a record of a change not made, which
  // revert then reports as "changed since", never a change without a record.
  write(paths.record, JSON.stringify(record, null, 2) + '\n');
  for (const c of changes) write(c.file, c.after);
  return changes;
}

/** Undoes the recorded changes (see revertPlan) and removes the record. Nothing recorded: no-op. */
export function revertSetup(paths: Pick<SetupPaths, 'record'>): { restored: FileChange[]; leftAlone: string[] } {
  const record = readRecord(paths.record);
  if (!record) return { restored: [], leftAlone: [] };
  const current = new Map(record.changes.map((c) => [c.file, read(c.file)] as const));
  const { restore, leftAlone } = revertPlan(record, current);
  for (const c of restore) write(c.file, c.after);
  fs.rmSync(paths.record, { force: true });
  return { restored: restore, leftAlone };
}

/** True when systemd-resolved runs on this host. */
export function resolvedRuns(runDir = RESOLVED_RUN_DIR): boolean {
  return fs.existsSync(runDir);
}
