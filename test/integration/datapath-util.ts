/**
 * Small real-traffic tools for the datapath integration tests: loopback TCP/UDP servers that
 * answer with a tag, clients that report the peer/reply source/errno, and a throwaway network
 * namespace (`bt-dp-*`) driven with python3 (no Node needed inside).
 * Every wait is bounded; every resource has a close().
 */
import net from 'node:net';
import dgram from 'node:dgram';
import { run } from '../../src/util/exec';

export interface Closer { close(): Promise<void> }

/** A TCP server on addr:port answering each connection with "<tag>\n". */
export async function tcpServer(addr: string, port: number, tag: string): Promise<Closer> {
  const socks = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    socks.add(s);
    s.on('close', () => socks.delete(s));
    s.on('error', () => undefined);
    s.end(`${tag}\n`);
  });
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, addr, () => resolve());
  });
  return {
    close: () => new Promise<void>((resolve) => {
      for (const s of socks) s.destroy();
      srv.close(() => resolve());
    }),
  };
}

/** A UDP server on addr:port replying "<tag>|<payload>" to every datagram. */
export async function udpServer(addr: string, port: number, tag: string): Promise<Closer> {
  const s = dgram.createSocket(net.isIPv6(addr) ? 'udp6' : 'udp4');
  s.on('message', (msg, rinfo) => s.send(`${tag}|${msg.toString()}`, rinfo.port, rinfo.address));
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind(port, addr, () => resolve());
  });
  return { close: () => new Promise<void>((resolve) => s.close(() => resolve())) };
}

export interface TcpResult { ok: boolean; tag: string | null; peer: string | null; errno: string | null; ms: number }

/** Connect, read the tag, report getpeername(). */
export function tcpProbe(addr: string, port: number, timeoutMs = 3000): Promise<TcpResult> {
  const started = Date.now();
  return new Promise((resolve) => {
    const c = net.connect({ host: addr, port });
    let peer: string | null = null;
    let data = '';
    const timer = setTimeout(() => { c.destroy(); resolve({ ok: false, tag: null, peer, errno: 'TIMEOUT', ms: Date.now() - started }); }, timeoutMs);
    c.on('connect', () => { peer = `${c.remoteAddress}:${c.remotePort}`; });
    c.on('data', (d) => { data += d.toString(); });
    c.on('end', () => { clearTimeout(timer); resolve({ ok: true, tag: data.trim(), peer, errno: null, ms: Date.now() - started }); });
    c.on('error', (e: NodeJS.ErrnoException) => { clearTimeout(timer); resolve({ ok: false, tag: null, peer, errno: e.code ?? e.message, ms: Date.now() - started }); });
  });
}

export interface UdpResult { ok: boolean; tag: string | null; from: string | null; peer: string | null; errno: string | null }

/** One datagram to addr:port, connected (getpeername checked) or not; the reply's source is reported. */
export function udpProbe(addr: string, port: number, connected: boolean, timeoutMs = 2000): Promise<UdpResult> {
  return new Promise((resolve) => {
    const s = dgram.createSocket(net.isIPv6(addr) ? 'udp6' : 'udp4');
    let peer: string | null = null;
    const done = (r: UdpResult): void => { clearTimeout(timer); try { s.close(); } catch { /* closed */ } resolve(r); };
    const timer = setTimeout(() => done({ ok: false, tag: null, from: null, peer, errno: 'TIMEOUT' }), timeoutMs);
    s.on('error', (e: NodeJS.ErrnoException) => done({ ok: false, tag: null, from: null, peer, errno: e.code ?? e.message }));
    s.on('message', (msg, rinfo) => done({ ok: true, tag: msg.toString().split("|")[0], from: `${rinfo.address}:${rinfo.port}`, peer, errno: null }));
    const send = (): void => {
      const cb = (e: Error | null): void => { if (e) done({ ok: false, tag: null, from: null, peer, errno: (e as NodeJS.ErrnoException).code ?? e.message }); };
      if (connected) s.send('ping', cb); else s.send('ping', port, addr, cb);
    };
    if (connected) {
      s.connect(port, addr, () => {
        try {
          const a = s.remoteAddress();
          peer = `${a.address}:${a.port}`;
        } catch (e) {
          done({ ok: false, tag: null, from: null, peer, errno: (e as NodeJS.ErrnoException).code ?? String(e) });
          return;
        }
        send();
      });
    } else {
      send();
    }
  });
}

/** Run n probes one after the other. */
export async function repeat<T>(n: number, f: () => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(await f());
  return out;
}

/** Poll until f() is truthy (bounded); returns the value or throws naming what was awaited. */
export async function until<T>(what: string, f: () => Promise<T | undefined | false>, timeoutMs = 5000, everyMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A network namespace of the test's own with only loopback. */
export async function createNetns(name: string): Promise<void> {
  if (!/^bt-dp-[a-z0-9-]+$/.test(name)) throw new Error(`bad test netns name ${name}`);
  await run('ip', ['netns', 'del', name]);
  const r = await run('ip', ['netns', 'add', name]);
  if (r.code !== 0) throw new Error(`ip netns add ${name}: ${r.stderr}`);
  await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
}

export async function deleteNetns(name: string): Promise<void> {
  await run('ip', ['netns', 'del', name]);
}

/** Python run inside the namespace (argv after the script are passed through). */
export function inNetns(name: string, script: string, args: string[], timeoutMs = 10000): ReturnType<typeof run> {
  return run('ip', ['netns', 'exec', name, 'python3', '-c', script, ...args], { timeoutMs });
}

/** A TCP server (python, in a netns) answering "<tag>\n" to `count` connections, then exiting. */
export const PY_TCP_SERVER = `
import socket, sys
addr, port, tag, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET6 if ':' in addr else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port)); s.listen(16); s.settimeout(15)
print('ready', flush=True)
for _ in range(count):
    c, _a = s.accept(); c.sendall((tag + '\\n').encode()); c.close()
`;

/** A TCP client (python, in a netns): prints "ok <tag> <peer>" or "err <ERRNO>". */
export const PY_TCP_CLIENT = `
import socket, sys, errno
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ':' in addr else socket.AF_INET); s.settimeout(3)
try:
    s.connect((addr, port))
    peer = s.getpeername()
    print('ok', s.recv(100).decode().strip(), '%s:%d' % (peer[0], peer[1]))
except OSError as e:
    print('err', errno.errorcode.get(e.errno, str(e)))
`;

/**
 * In a netns: a UDP echo server on 127.0.0.1:<port> and a client connected to <vip>:<vport>;
 * prints "connected <tag>" after the first reply, then waits for the socket to fail and prints
 * "error <ERRNO>" (or "no-error" after 20 s).
 */
export const PY_UDP_CONNECTED = `
import socket, sys, errno, threading
vip, vport, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); srv.bind(('127.0.0.1', port))
def echo():
    while True:
        d, a = srv.recvfrom(100); srv.sendto(b'in-netns|' + d, a)
threading.Thread(target=echo, daemon=True).start()
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(3)
c.connect((vip, vport)); c.send(b'hi')
print('connected', c.recv(100).decode().split('|')[0], flush=True)
c.settimeout(20)
try:
    c.recv(100); print('unexpected-data', flush=True)
except socket.timeout:
    print('no-error', flush=True)
except OSError as e:
    print('error', errno.errorcode.get(e.errno, str(e)), flush=True)
`;
