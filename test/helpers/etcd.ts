/**
 * A real etcd (Debian's etcd-server) for integration tests: one member on 127.0.0.1 with random
 * ports and a temporary data directory, optionally with TLS and client-certificate auth from
 * certificates the test generates with openssl. stop() kills it and removes the directory, so
 * no etcd process or file is left behind; restart() keeps the data (an outage, not a wipe).
 *
 * PausableProxy is a loopback TCP proxy a client can be pointed at, to cut ONE client off etcd
 * (its watch stalls, its lease expires on the server) while etcd and other clients go on, or to
 * stall its open connections without closing them (a member that was powered off: no RST, no
 * FIN, nothing answers).
 *
 * etcdCluster() starts several members on 127.0.0.1 as one cluster (quorum tests).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const ETCD = '/usr/bin/etcd';
export const ETCDCTL = '/usr/bin/etcdctl';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

export interface TlsFiles {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A client cert signed by a CA etcd does not trust. */
  strangerCert: string;
  strangerKey: string;
}

/** CA, server cert (SAN 127.0.0.1) and client certs, made with openssl in `dir`. */
export function makeCerts(dir: string): TlsFiles {
  const o = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ca = (name: string) => {
    o(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.crt`]);
  };
  const leaf = (name: string, caName: string, ext: string) => {
    fs.writeFileSync(path.join(dir, `${name}.ext`), ext);
    o(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.csr`]);
    o(['x509', '-req', '-in', `${name}.csr`, '-CA', `${caName}.crt`, '-CAkey', `${caName}.key`, '-CAcreateserial', '-days', '1', '-extfile', `${name}.ext`, '-out', `${name}.crt`]);
  };
  ca('ca');
  ca('otherca');
  leaf('server', 'ca', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  leaf('client', 'ca', 'extendedKeyUsage=clientAuth\n');
  leaf('stranger', 'otherca', 'extendedKeyUsage=clientAuth\n');
  const f = (n: string) => path.join(dir, n);
  return {
    ca: f('ca.crt'), serverCert: f('server.crt'), serverKey: f('server.key'),
    clientCert: f('client.crt'), clientKey: f('client.key'), strangerCert: f('stranger.crt'), strangerKey: f('stranger.key'),
  };
}

export class EtcdServer {
  readonly dir: string;
  clientPort = 0;
  peerPort = 0;
  tls: TlsFiles | null = null;
  private proc: ChildProcess | null = null;

  /** Member name; `--initial-cluster` (name=peerURL,...) when this member is one of several. */
  name = 'test';
  initialCluster: string | null = null;

  constructor(opts: { tls?: boolean } = {}) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-etcd-'));
    if (opts.tls) this.tls = makeCerts(this.dir);
  }

  get peerUrl(): string {
    return `http://127.0.0.1:${this.peerPort}`;
  }

  /** Assigns the client and peer ports now (a cluster's members must know each other's). */
  async ports(): Promise<void> {
    if (this.clientPort) return;
    this.clientPort = await freePort();
    this.peerPort = await freePort();
  }

  get endpoint(): string {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.clientPort}`;
  }

  async start(): Promise<void> {
    await this.ports();
    const t = this.tls;
    const args = [
      '--name', this.name, '--data-dir', path.join(this.dir, 'data'),
      '--listen-client-urls', this.endpoint, '--advertise-client-urls', this.endpoint,
      '--listen-peer-urls', this.peerUrl, '--initial-advertise-peer-urls', this.peerUrl,
      '--initial-cluster', this.initialCluster ?? `${this.name}=${this.peerUrl}`,
      // A member of several: short elections, so that tests of a lost leader take seconds.
      ...(this.initialCluster ? ['--heartbeat-interval', '100', '--election-timeout', '1000'] : []),
      // No auto compaction: the tests compact by hand.
      '--auto-compaction-retention', '0',
      ...(t ? ['--cert-file', t.serverCert, '--key-file', t.serverKey, '--client-cert-auth', '--trusted-ca-file', t.ca] : []),
    ];
    const log = fs.openSync(path.join(this.dir, 'etcd.log'), 'a');
    // ETCD_UNSUPPORTED_ARCH is not needed on amd64; a clean env keeps ETCD_* from the machine out.
    // setpriv --pdeathsig: etcd dies with the test process even when ava kills it on a timeout
    // (teardowns do not run then), so no etcd is ever left behind.
    this.proc = spawn('setpriv', ['--pdeathsig', 'KILL', ETCD, ...args], { stdio: ['ignore', log, log], env: { PATH: process.env.PATH } });
    fs.closeSync(log);
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null) throw new Error(`etcd exited ${this.proc.exitCode}: ${this.logTail()}`);
      try {
        // A member of several is healthy only with a quorum: start them together (etcdCluster).
        this.ctl(['endpoint', 'health']);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    throw new Error(`etcd did not become healthy: ${this.logTail()}`);
  }

  /** etcdctl against this server; returns stdout. */
  ctl(args: string[]): string {
    const t = this.tls;
    const tlsArgs = t ? ['--cacert', t.ca, '--cert', t.clientCert, '--key', t.clientKey] : [];
    return execFileSync(ETCDCTL, ['--endpoints', this.endpoint, '--dial-timeout', '2s', ...tlsArgs, ...args], {
      env: { PATH: process.env.PATH, ETCDCTL_API: '3' }, stdio: 'pipe', timeout: 10000,
    }).toString();
  }

  /** The current revision (from a read of a key that need not exist). */
  revision(): number {
    const out = JSON.parse(this.ctl(['get', '/', '-w', 'json'])) as { header: { revision: number } };
    return out.header.revision;
  }

  compact(): number {
    const rev = this.revision();
    this.ctl(['compact', String(rev)]);
    return rev;
  }

  async stop(): Promise<void> {
    const p = this.proc;
    this.proc = null;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  logTail(): string {
    try {
      return fs.readFileSync(path.join(this.dir, 'etcd.log'), 'utf8').split('\n').slice(-15).join('\n');
    } catch {
      return '';
    }
  }

  async destroy(): Promise<void> {
    await this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Loopback TCP proxy to `target` that can drop every connection and refuse new ones. */
export class PausableProxy {
  port = 0;
  private server: net.Server | null = null;
  private readonly conns = new Set<net.Socket>();
  private paused = false;
  private readonly pipes = new Map<net.Socket, net.Socket>();

  constructor(private readonly targetPort: number) {}

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.server = net.createServer((c) => {
      if (this.paused) return void c.destroy();
      const up = net.connect(this.targetPort, '127.0.0.1');
      this.conns.add(c);
      this.conns.add(up);
      const close = () => {
        c.destroy();
        up.destroy();
        this.conns.delete(c);
        this.conns.delete(up);
        this.pipes.delete(c);
      };
      c.on('error', close).on('close', close);
      up.on('error', close).on('close', close);
      c.pipe(up);
      up.pipe(c);
      this.pipes.set(c, up);
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    // Never what keeps a test process alive (a client reconnecting through it at teardown).
    this.server.unref();
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  pause(): void {
    this.paused = true;
    for (const c of this.conns) c.destroy();
    this.conns.clear();
  }

  resume(): void {
    this.paused = false;
  }

  /**
   * The connections open now stop carrying bytes either way and stay open (no FIN, no RST):
   * what a client sees of a member whose host lost power. New connections work.
   */
  stallOpen(): void {
    for (const [c, up] of this.pipes) {
      c.unpipe(up);
      up.unpipe(c);
      c.pause();
      up.pause();
    }
    this.pipes.clear();
  }

  async close(): Promise<void> {
    this.pause();
    const s = this.server;
    if (!s) return;
    // Bounded: close() waits for accepted connections, and a client may reconnect meanwhile.
    await Promise.race([new Promise((r) => s.close(r)), new Promise((r) => setTimeout(r, 1000).unref())]);
  }
}

/**
 * `n` etcd members on 127.0.0.1 forming one cluster, started together (a member alone has no
 * quorum and never reports healthy). destroy() every member when the test ends.
 */
export async function etcdCluster(n: number): Promise<EtcdServer[]> {
  const members = Array.from({ length: n }, (_, i) => Object.assign(new EtcdServer(), { name: `m${i + 1}` }));
  await Promise.all(members.map((m) => m.ports()));
  const initial = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  for (const m of members) m.initialCluster = initial;
  await Promise.all(members.map((m) => m.start()));
  return members;
}
