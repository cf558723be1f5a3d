/**
 * A minimal DNS client (dns-packet over UDP or TCP) for `berth dns query`, `berth doctor`, tests
 * and the bench: one question, one answer, a timeout. UDP answers with TC set are retried over
 * TCP unless `noTcpFallback` (so callers can see the truncation itself).
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import * as dnsPacket from 'dns-packet';
import { tcpExchange } from './forward';

export interface QueryOptions {
  server: string;
  /** Default 53. */
  port?: number;
  tcp?: boolean;
  /** Default 2000 ms. */
  timeoutMs?: number;
  /** Advertise this EDNS0 UDP size (no OPT record when unset). */
  edns?: number;
  noTcpFallback?: boolean;
}

export interface QueryResult {
  packet: dnsPacket.DecodedPacket;
  /** Transport that gave the final answer. */
  transport: 'udp' | 'tcp';
  /** Size of the final answer in bytes. */
  bytes: number;
}

/** Encodes a query with a random id (RD set). */
export function encodeQuery(name: string, type: string, edns?: number): Buffer {
  return dnsPacket.encode({
    id: randomInt(0, 0x10000), type: 'query', flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type: type as dnsPacket.RecordType, class: 'IN' }],
    additionals: edns ? [{ type: 'OPT', name: '.', udpPayloadSize: edns } as unknown as dnsPacket.Answer] : [],
  });
}

/**
 * Sends one UDP datagram to server:port on a connected socket (as glibc's resolver does: ICMP
 * errors are reported, and only the server's replies arrive) and resolves the first reply with
 * the same id. Connected also matters for the IPv6 DNS VIP: the kernel refuses a sendmsg6
 * rewrite to a v4-mapped backend (udpv6_sendmsg: ENOTSUPP), while connect6 allows it.
 */
export function udpExchange(server: string, port: number, msg: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket(net.isIPv6(server) ? 'udp6' : 'udp4');
    const timer = setTimeout(() => done(new Error(`no answer from ${server}:${port} within ${timeoutMs} ms`)), timeoutMs);
    const done = (e: Error | null, b?: Buffer) => {
      clearTimeout(timer);
      s.close();
      if (e) reject(e);
      else resolve(b!);
    };
    s.on('error', (e) => done(e));
    s.on('message', (m) => {
      if (m.length >= 2 && m.readUInt16BE(0) === msg.readUInt16BE(0)) done(null, m);
    });
    // connect() reports a refusal (e.g. the socket LB's ECONNREFUSED for a VIP without backend)
    // as an 'error' event, which done() turns into the rejection.
    s.connect(port, server, () => s.send(msg));
  });
}

/** Asks `server` for `name`/`type`. Throws on timeout or an undecodable answer. */
export async function query(name: string, type: string, o: QueryOptions): Promise<QueryResult> {
  const port = o.port ?? 53;
  const timeoutMs = o.timeoutMs ?? 2000;
  const msg = encodeQuery(name, type, o.edns);
  if (!o.tcp) {
    const b = await udpExchange(o.server, port, msg, timeoutMs);
    const packet = dnsPacket.decode(b);
    if (!packet.flag_tc || o.noTcpFallback) return { packet, transport: 'udp', bytes: b.length };
  }
  const b = await tcpExchange({ ip: o.server, port }, msg, timeoutMs);
  return { packet: dnsPacket.decode(b), transport: 'tcp', bytes: b.length };
}
