/**
 * Persisted VIP assignments (/var/lib/berth/vips.json): what keeps a service's VIP stable across
 * restarts even when its derivation collided, and who owns a contested VIP (the earliest
 * assignment, by `seq`).
 *
 * The store is plain data plus two I/O edges, load() and save(). save() writes a temporary file in
 * the same directory, fsyncs it and renames it over the old one, so a crash leaves either the old
 * or the new file, never half of one. save() does nothing when nothing changed, so the daemon may
 * call it after every rebuild.
 *
 * File format (version 1):
 *   { "version": 1, "assignments": [ { "kind": "service", "name": "web", "vip": "10.96.3.4",
 *     "vip6": "fd00:96::3:4", "seq": 1 }, ... ] }
 */
import fs from 'node:fs';
import path from 'node:path';
import { ModelError } from './errors';
import { canonicalIp } from './ip';
import type { ServiceKind } from './vip';

export const DEFAULT_VIPSTORE_PATH = '/var/lib/berth/vips.json';
const VERSION = 1;

export interface VipAssignment {
  kind: ServiceKind;
  name: string;
  vip: string | null;
  vip6: string | null;
  /** Assignment order: lower is earlier; the earlier assignment owns a contested VIP. */
  seq: number;
}

export function storeKey(kind: ServiceKind, name: string): string {
  // join, not a template: a template's result is a V8 rope (~150 B per key instead of ~25 B;
  // measured with --expose-gc), and berthd keeps one per service in several maps.
  return [kind, name].join('/');
}

export class VipStore {
  private readonly byKey = new Map<string, VipAssignment>();
  private nextSeq = 1;
  private changed = false;

  private constructor(readonly path: string | null) {}

  /** A store that is never written (tests, dry runs). */
  static inMemory(assignments: VipAssignment[] = []): VipStore {
    const s = new VipStore(null);
    for (const a of assignments) s.adopt(a);
    return s;
  }

  /**
   * Reads `file`; a missing file is an empty store. Entries that do not make sense (bad kind,
   * address or seq) are dropped and the store is marked changed, so the next save rewrites it.
   * A file that is not JSON at all throws BERTH_VIPSTORE_CORRUPT: silently starting empty would
   * move every VIP that was ever resolved away from its hash.
   */
  static load(file: string = DEFAULT_VIPSTORE_PATH): VipStore {
    const s = new VipStore(file);
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return s;
      throw new ModelError('BERTH_VIPSTORE_CORRUPT', `cannot read VIP assignments ${file}: ${(e as Error).message}`, { cause: e });
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      throw new ModelError(
        'BERTH_VIPSTORE_CORRUPT',
        `VIP assignments ${file} is not JSON (${(e as Error).message}); move it away to start with fresh assignments`,
        { cause: e },
      );
    }
    const list = (doc as { assignments?: unknown })?.assignments;
    if (!Array.isArray(list)) {
      throw new ModelError('BERTH_VIPSTORE_CORRUPT', `VIP assignments ${file} has no "assignments" array; move it away to start with fresh assignments`);
    }
    for (const raw of list) {
      const a = sanitize(raw);
      if (a && !s.byKey.has(storeKey(a.kind, a.name))) s.adopt(a);
      else s.changed = true;
    }
    return s;
  }

  private adopt(a: VipAssignment): void {
    this.byKey.set(storeKey(a.kind, a.name), { ...a });
    this.nextSeq = Math.max(this.nextSeq, a.seq + 1);
  }

  get(kind: ServiceKind, name: string): VipAssignment | undefined {
    const a = this.byKey.get(storeKey(kind, name));
    return a ? { ...a } : undefined;
  }

  /** All assignments, earliest first. */
  list(): VipAssignment[] {
    return [...this.byKey.values()].sort((a, b) => a.seq - b.seq).map((a) => ({ ...a }));
  }

  /** Records the VIPs of `kind/name`; a name seen for the first time gets the next seq. */
  set(kind: ServiceKind, name: string, vip: string | null, vip6: string | null): void {
    const key = storeKey(kind, name);
    const old = this.byKey.get(key);
    if (old && old.vip === vip && old.vip6 === vip6) return;
    this.byKey.set(key, { kind, name, vip, vip6, seq: old ? old.seq : this.nextSeq++ });
    this.changed = true;
  }

  /** Forgets one assignment (the name no longer exists). */
  forget(kind: ServiceKind, name: string): void {
    if (this.byKey.delete(storeKey(kind, name))) this.changed = true;
  }

  /** Forgets every assignment whose key is not in `keep` (the name no longer exists). */
  retain(keep: Set<string>): void {
    for (const key of [...this.byKey.keys()]) {
      if (!keep.has(key)) {
        this.byKey.delete(key);
        this.changed = true;
      }
    }
  }

  /** True when there are changes save() has not written yet. */
  get dirty(): boolean {
    return this.changed;
  }

  toJSON(): { version: number; assignments: VipAssignment[] } {
    return { version: VERSION, assignments: this.list() };
  }

  /** Atomically writes the store when it changed (no-op for an in-memory store). */
  save(): void {
    if (!this.changed || this.path === null) return;
    const file = this.path;
    const tmp = `${file}.tmp-${process.pid}`;
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      const fd = fs.openSync(tmp, 'w', 0o600);
      try {
        fs.writeFileSync(fd, `${JSON.stringify(this.toJSON(), null, 2)}\n`);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(tmp, file);
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      throw new ModelError('BERTH_VIPSTORE_WRITE', `cannot write VIP assignments ${file}: ${(e as Error).message}`, { cause: e });
    }
    this.changed = false;
  }
}

/** One stored entry, checked and canonicalised; null when it cannot be trusted. */
function sanitize(raw: unknown): VipAssignment | null {
  if (typeof raw !== 'object' || raw === null) return null;
  const r = raw as Record<string, unknown>;
  if (r.kind !== 'service' && r.kind !== 'ingress') return null;
  if (typeof r.name !== 'string' || r.name === '') return null;
  if (typeof r.seq !== 'number' || !Number.isSafeInteger(r.seq) || r.seq < 1) return null;
  const addr = (v: unknown): string | null | undefined => {
    if (v === null || v === undefined) return null;
    return typeof v === 'string' ? (canonicalIp(v) ?? undefined) : undefined;
  };
  const vip = addr(r.vip);
  const vip6 = addr(r.vip6);
  if (vip === undefined || vip6 === undefined) return null;
  return { kind: r.kind, name: r.name, vip, vip6, seq: r.seq };
}
