/**
 * Listener ports: one per ingress from `proxyPorts`, sticky across restarts
 * (<stateDir>/proxy-ports.json), so a restarted berthd gives Envoy the same ports and the
 * redirect rules/maps that stayed in the kernel keep pointing at the right listener.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ProxyError, ProxyErrorCode } from './errors';

/** TCP ports in LISTEN state in this network namespace (v4 and v6), from /proc/net/tcp{,6}. */
export function listeningPorts(procNet = '/proc/net'): Set<number> {
  const out = new Set<number>();
  for (const f of ['tcp', 'tcp6']) {
    let text = '';
    try {
      text = fs.readFileSync(path.join(procNet, f), 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      // cols[1] = local "ADDR:PORT" (hex), cols[3] = state; 0A = TCP_LISTEN.
      if (cols.length > 3 && cols[3] === '0A') out.add(parseInt(cols[1].split(':').pop()!, 16));
    }
  }
  return out;
}

export class PortAssignments {
  private readonly file: string;
  private ports = new Map<string, number>();

  constructor(stateDir: string, private readonly range: { from: number; to: number }) {
    this.file = path.join(stateDir, 'proxy-ports.json');
    try {
      const saved = JSON.parse(fs.readFileSync(this.file, 'utf8')) as Record<string, number>;
      for (const [k, v] of Object.entries(saved)) if (Number.isInteger(v) && v >= range.from && v <= range.to) this.ports.set(k, v);
    } catch { /* first start, or unreadable: start fresh */ }
  }

  get(ingress: string): number | undefined {
    return this.ports.get(ingress);
  }

  /**
   * Keep the ports of ingresses still present, give new ones the lowest port that is neither
   * assigned nor listened on by anybody, drop the rest. Persists when something changed.
   * Returns the ingresses that could not get a port.
   */
  assign(ingresses: string[], busy: Set<number>): { ingress: string; error: ProxyError }[] {
    const failed: { ingress: string; error: ProxyError }[] = [];
    const next = new Map<string, number>();
    for (const name of ingresses) {
      const p = this.ports.get(name);
      if (p !== undefined) next.set(name, p);
    }
    const used = new Set(next.values());
    for (const name of [...ingresses].sort()) {
      if (next.has(name)) continue;
      let port: number | undefined;
      for (let p = this.range.from; p <= this.range.to; p++) {
        if (!used.has(p) && !busy.has(p)) {
          port = p;
          break;
        }
      }
      if (port === undefined) {
        failed.push({ ingress: name, error: new ProxyError(ProxyErrorCode.PORTS_EXHAUSTED, `no free listener port in proxyPorts ${this.range.from}-${this.range.to}`) });
        continue;
      }
      next.set(name, port);
      used.add(port);
    }
    const changed = next.size !== this.ports.size || [...next].some(([k, v]) => this.ports.get(k) !== v);
    this.ports = next;
    if (changed) this.save();
    return failed;
  }

  /** Forget an ingress's port (it turned out to be taken); the next assign() picks another. */
  release(ingress: string): void {
    this.ports.delete(ingress);
  }

  private save(): void {
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(Object.fromEntries([...this.ports].sort()), null, 2) + '\n');
    fs.renameSync(tmp, this.file);
  }
}
