/**
 * Forwarding of queries outside the zone to the upstream resolvers (upstreams.ts decides which).
 *
 * UDP: each forwarded query gets a fresh socket (a random source port chosen by the kernel) and a
 * fresh random id, so an off-path spoofer has to guess both (RFC 5452); an answer counts only if
 * it comes from the upstream's address and port and carries that id. The client's id is put back
 * before the answer is relayed. The upstreams are tried in order, each for an equal share of the
 * timeout; after the whole timeout the caller answers SERVFAIL (a silent upstream must not make
 * clients hang until their own timeout). A truncated (TC) upstream answer is relayed as it is:
 * the client then asks again over TCP, which is forwarded over TCP.
 * Bounded: at most maxInFlight forwards at once (each holds a socket and a timer); beyond that a
 * query is dropped and counted, the client retries.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import type { Upstream } from './upstreams';

export type ForwardResult =
  | { result: 'answer'; response: Buffer; upstream: Upstream; ms: number }
  | { result: 'timeout' | 'error'; ms: number; error?: string }
  | { result: 'dropped'; ms: 0 };

export interface ForwarderOptions {
  /** Whole budget of one forward, ms (default 2000): then SERVFAIL. */
  timeoutMs?: number;
  /** Forwards in flight at most (default 512). */
  maxInFlight?: number;
}

/** Largest DNS message over TCP (the 2-byte length prefix). */
const MAX_TCP_MESSAGE = 65535;

export class Forwarder {
  private upstreams: Upstream[] = [];
  private inFlight = 0;
  readonly timeoutMs: number;
  readonly maxInFlight: number;

  constructor(o: ForwarderOptions = {}) {
    this.timeoutMs = o.timeoutMs ?? 2000;
    this.maxInFlight = o.maxInFlight ?? 512;
  }

  setUpstreams(list: Upstream[]): void {
    this.upstreams = [...list];
  }

  get current(): Upstream[] {
    return [...this.upstreams];
  }

  get pending(): number {
    return this.inFlight;
  }

  /** Forwards one query (a whole DNS message) over `transport`. Never throws. */
  async forward(query: Buffer, transport: 'udp' | 'tcp'): Promise<ForwardResult> {
    if (this.upstreams.length === 0) return { result: 'error', ms: 0, error: 'no upstream resolver' };
    if (this.inFlight >= this.maxInFlight) return { result: 'dropped', ms: 0 };
    this.inFlight++;
    const t0 = performance.now();
    try {
      const r = transport === 'udp' ? await this.udp(query) : await this.tcp(query);
      const ms = performance.now() - t0;
      return r.ok ? { result: 'answer', response: r.response, upstream: r.upstream, ms } : { result: r.why, ms, error: r.error };
    } finally {
      this.inFlight--;
    }
  }

  private udp(query: Buffer): Promise<{ ok: true; response: Buffer; upstream: Upstream } | { ok: false; why: 'timeout' | 'error'; error?: string }> {
    const ups = this.upstreams;
    const clientId = query.readUInt16BE(0);
    const id = randomInt(0, 0x10000);
    const q = Buffer.from(query);
    q.writeUInt16BE(id, 0);
    const sockets = new Map<string, dgram.Socket>();
    return new Promise((resolve) => {
      let done = false;
      let tries = 0;
      let lastError: string | undefined;
      const timers: NodeJS.Timeout[] = [];
      const finish = (v: Parameters<typeof resolve>[0]) => {
        if (done) return;
        done = true;
        for (const t of timers) clearTimeout(t);
        for (const s of sockets.values()) s.close();
        resolve(v);
      };
      const socketFor = (family: 'udp4' | 'udp6') => {
        let s = sockets.get(family);
        if (s) return s;
        s = dgram.createSocket(family);
        s.on('error', (e) => {
          lastError = e.message;
        });
        s.on('message', (msg, rinfo) => {
          const from = ups.find((u) => u.port === rinfo.port && sameIp(u.ip, rinfo.address));
          if (!from || msg.length < 12 || msg.readUInt16BE(0) !== id || (msg[2] & 0x80) === 0) return;
          const response = Buffer.from(msg);
          response.writeUInt16BE(clientId, 0);
          finish({ ok: true, response, upstream: from });
        });
        sockets.set(family, s);
        return s;
      };
      const attemptMs = Math.max(1, Math.floor(this.timeoutMs / ups.length));
      const next = () => {
        if (done || tries >= ups.length) return;
        const u = ups[tries++];
        const s = socketFor(net.isIPv6(u.ip) ? 'udp6' : 'udp4');
        s.send(q, u.port, u.ip, (err) => {
          if (err) {
            lastError = err.message;
            next(); // a send that fails at once (no route): the next upstream now
          }
        });
        if (tries < ups.length) timers.push(setTimeout(next, attemptMs));
      };
      timers.push(setTimeout(() => finish(lastError && tries === 0 ? { ok: false, why: 'error', error: lastError } : { ok: false, why: 'timeout', error: lastError }), this.timeoutMs));
      next();
    });
  }

  private async tcp(query: Buffer): Promise<{ ok: true; response: Buffer; upstream: Upstream } | { ok: false; why: 'timeout' | 'error'; error?: string }> {
    const deadline = Date.now() + this.timeoutMs;
    let lastError = 'no upstream tried';
    for (const u of this.upstreams) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      try {
        return { ok: true, response: await tcpExchange(u, query, left), upstream: u };
      } catch (e) {
        lastError = (e as Error).message;
      }
    }
    return { ok: false, why: Date.now() >= deadline ? 'timeout' : 'error', error: lastError };
  }
}

function sameIp(a: string, b: string): boolean {
  return a === b || a === b.replace(/^::ffff:/, '');
}

/** One query over a new TCP connection (RFC 7766 framing: 2-byte big-endian length). */
export function tcpExchange(u: Upstream, query: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: u.ip, port: u.port });
    let buf: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new Error(`no answer from ${u.ip}:${u.port} over TCP within ${timeoutMs} ms`)), timeoutMs);
    const fail = (e: Error) => {
      clearTimeout(timer);
      sock.destroy();
      reject(e);
    };
    sock.on('error', fail);
    sock.on('connect', () => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(query.length);
      sock.write(Buffer.concat([len, query]));
    });
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 2) return;
      const n = buf.readUInt16BE(0);
      if (n > MAX_TCP_MESSAGE) return fail(new Error('oversized TCP answer'));
      if (buf.length < 2 + n) return;
      clearTimeout(timer);
      sock.destroy();
      resolve(buf.subarray(2, 2 + n));
    });
    sock.on('end', () => fail(new Error(`${u.ip}:${u.port} closed the TCP connection without an answer`)));
  });
}
