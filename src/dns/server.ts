/**
 * berthd's DNS server: UDP and TCP sockets on the listen addresses (loopback and the Docker
 * bridge gateway, see vips.ts), answering the zone (zone.ts) and forwarding everything else
 * (forward.ts). The wire format is npm dns-packet's; nothing here parses DNS by hand except the
 * fixed 12-byte header fields needed to answer a message dns-packet cannot decode (RFC 1035 4.1.1).
 *
 * Bad input: a message shorter than a header, or one with QR set (a response: answering it could
 * start a loop between two servers), is dropped; one that does not decode is answered FORMERR;
 * an opcode other than QUERY gets NOTIMP; more or fewer than one question FORMERR.
 * UDP answers fit the client's limit (512 bytes, or its EDNS0 size up to 1232, the DNS flag day
 * 2020 value); a bigger zone answer is sent truncated (TC, no records) and the client asks again
 * over TCP (RFC 7766). TCP: connections are capped and time out when idle; several queries per
 * connection are answered.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import * as dnsPacket from 'dns-packet';
import type { Logger } from '../util/log';
import { type Forwarder } from './forward';
import { inZone, lookup, type Answer, type Zone } from './zone';

export type Transport = 'udp' | 'tcp';

/** What the server reports (src/api/metrics.ts implements it with prom-client). */
export interface DnsMetricsSink {
  query(transport: Transport): void;
  response(rcode: string): void;
  dropped(reason: 'malformed' | 'response' | 'flood' | 'tcp-limit'): void;
  forwarded(result: 'answer' | 'timeout' | 'error' | 'dropped', seconds: number): void;
}

export const NULL_SINK: DnsMetricsSink = { query() {}, response() {}, dropped() {}, forwarded() {} };

export interface DnsServerOptions {
  port: number;
  /** The zone apex (dnsDomain): names below it are never forwarded, even before the first zone. */
  domain: string;
  forwarder: Forwarder;
  metrics?: DnsMetricsSink;
  logger: Logger;
  /** TCP connections at once (default 256); more are closed at accept. */
  maxTcpConnections?: number;
  /** Idle TCP connections close after this many ms (default 10000, RFC 7766 suggests seconds). */
  tcpIdleMs?: number;
}

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
type Rcode = keyof typeof RCODE;
const FLAG_QR = 0x8000;
const FLAG_AA = 0x0400;
const FLAG_TC = 0x0200;
const FLAG_RD = 0x0100;
const FLAG_RA = 0x0080;
const OPCODE_MASK = 0x7800;
/** UDP payload limits: RFC 1035 without EDNS0; with it, the client's size capped at 1232. */
const UDP_PLAIN = 512;
const UDP_EDNS_MAX = 1232;

type Question = dnsPacket.Question;

function rcodeName(msg: Buffer): string {
  return msg.length >= 4 ? rcodeOf(msg.readUInt16BE(2) & 0xf) : 'NONE';
}

function rcodeOf(n: number): string {
  return (Object.keys(RCODE) as Rcode[]).find((k) => RCODE[k] === n) ?? `RCODE${n}`;
}

/** A header-only answer to an undecodable or unsupported message: its id and opcode echoed. */
export function headerOnlyAnswer(query: Buffer, rcode: Rcode): Buffer {
  const out = Buffer.alloc(12);
  out.writeUInt16BE(query.readUInt16BE(0), 0);
  const qflags = query.readUInt16BE(2);
  out.writeUInt16BE(FLAG_QR | (qflags & OPCODE_MASK) | (qflags & FLAG_RD) | RCODE[rcode], 2);
  return out;
}

function toPacketRecords(list: Answer['answers']): dnsPacket.Answer[] {
  return list.map((a) => ({ name: a.name, type: a.record.type, ttl: a.ttl, class: 'IN', data: a.record.data }) as dnsPacket.Answer);
}

export class DnsServer {
  private zone: Zone | null = null;
  private readonly udp = new Map<string, dgram.Socket>();
  private readonly tcp = new Map<string, net.Server>();
  private readonly conns = new Set<net.Socket>();
  private readonly metrics: DnsMetricsSink;
  private readonly maxTcp: number;
  private readonly idleMs: number;

  constructor(private readonly o: DnsServerOptions) {
    this.metrics = o.metrics ?? NULL_SINK;
    this.maxTcp = o.maxTcpConnections ?? 256;
    this.idleMs = o.tcpIdleMs ?? 10000;
  }

  /** The zone answers come from from now on (swapped whole on each desired-state change). */
  setZone(z: Zone): void {
    this.zone = z;
  }

  /** Addresses bound now. */
  get addresses(): string[] {
    return [...this.udp.keys()];
  }

  /**
   * Listen on exactly `addrs` (UDP and TCP, this.o.port): binds the new ones, closes the ones no
   * longer wanted. Returns the addresses that failed, with the error (the others still serve).
   */
  async listen(addrs: string[]): Promise<{ address: string; error: string }[]> {
    const errors: { address: string; error: string }[] = [];
    for (const a of [...this.udp.keys()]) if (!addrs.includes(a)) this.unbind(a);
    for (const a of addrs) {
      if (this.udp.has(a)) continue;
      try {
        await this.bind(a);
      } catch (e) {
        this.unbind(a);
        errors.push({ address: a, error: (e as Error).message });
      }
    }
    return errors;
  }

  private async bind(address: string): Promise<void> {
    const family = net.isIPv6(address) ? 'udp6' : 'udp4';
    const u = dgram.createSocket({ type: family });
    this.udp.set(address, u);
    u.on('message', (msg, rinfo) => {
      void this.handle(msg, 'udp').then((reply) => {
        if (!reply) return;
        // The socket may have been closed meanwhile (a forward outlives a listen() change or
        // close()): a throw here would be an unhandled rejection, which stops berthd.
        try {
          u.send(reply, rinfo.port, rinfo.address);
        } catch { /* closed: the client retries */ }
      });
    });
    u.on('error', (e) => this.o.logger.warn({ err: e, address }, 'DNS UDP socket error'));
    await new Promise<void>((resolve, reject) => {
      u.once('error', reject);
      u.bind({ address, port: this.o.port, exclusive: true }, () => {
        u.off('error', reject);
        resolve();
      });
    });
    const t = net.createServer((c) => this.accept(c));
    this.tcp.set(address, t);
    await new Promise<void>((resolve, reject) => {
      t.once('error', reject);
      t.listen({ host: address, port: this.o.port, exclusive: true }, () => {
        t.off('error', reject);
        resolve();
      });
    });
  }

  private unbind(address: string): void {
    const u = this.udp.get(address);
    if (u) {
      try { u.close(); } catch { /* not bound */ }
      this.udp.delete(address);
    }
    const t = this.tcp.get(address);
    if (t) {
      t.close();
      this.tcp.delete(address);
    }
  }

  private accept(c: net.Socket): void {
    if (this.conns.size >= this.maxTcp) {
      this.metrics.dropped('tcp-limit');
      c.destroy();
      return;
    }
    this.conns.add(c);
    c.setTimeout(this.idleMs, () => c.destroy());
    c.on('close', () => this.conns.delete(c));
    c.on('error', () => c.destroy());
    let buf: Buffer = Buffer.alloc(0);
    let busy = 0;
    c.on('data', (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      while (buf.length >= 2) {
        const n = buf.readUInt16BE(0);
        if (buf.length < 2 + n) break;
        const msg = buf.subarray(2, 2 + n);
        buf = buf.subarray(2 + n);
        // A pipelining client gets at most 32 queries in flight; beyond that its connection is
        // closed (the bound on what one connection can make berthd hold).
        if (++busy > 32) {
          this.metrics.dropped('flood');
          c.destroy();
          return;
        }
        void this.handle(Buffer.from(msg), 'tcp').then((reply) => {
          busy--;
          if (!reply || c.destroyed) return;
          const len = Buffer.alloc(2);
          len.writeUInt16BE(reply.length);
          c.write(Buffer.concat([len, reply]));
        });
      }
    });
  }

  /**
   * One query in, the answer out (null: drop it). The whole protocol logic, without sockets;
   * tests call it directly. Never throws.
   */
  async handle(msg: Buffer, transport: Transport): Promise<Buffer | null> {
    this.metrics.query(transport);
    const reply = await this.answer(msg, transport).catch((e: unknown) => {
      this.o.logger.error({ err: e }, 'DNS query handling failed');
      return msg.length >= 12 ? headerOnlyAnswer(msg, 'SERVFAIL') : null;
    });
    if (reply) this.metrics.response(rcodeName(reply));
    return reply;
  }

  private async answer(msg: Buffer, transport: Transport): Promise<Buffer | null> {
    if (msg.length < 12) {
      this.metrics.dropped('malformed');
      return null;
    }
    if (msg.readUInt16BE(2) & FLAG_QR) {
      this.metrics.dropped('response');
      return null;
    }
    let q: dnsPacket.Packet;
    try {
      q = dnsPacket.decode(msg);
    } catch {
      return headerOnlyAnswer(msg, 'FORMERR');
    }
    if (((msg.readUInt16BE(2) & OPCODE_MASK) >> 11) !== 0) return headerOnlyAnswer(msg, 'NOTIMP');
    const questions = q.questions ?? [];
    if (questions.length !== 1) return headerOnlyAnswer(msg, 'FORMERR');
    const question = questions[0];
    const zone = this.zone;
    if (inZone({ domain: this.o.domain }, question.name)) {
      // Before the first Docker list there is no zone yet: SERVFAIL (clients retry), never a
      // forward that would return an upstream's NXDOMAIN for one of our names.
      if (!zone) return this.encodeAnswer(q, question, 'SERVFAIL', null, transport, 0);
      return this.fromZone(zone, q, question, transport);
    }
    const f = await this.o.forwarder.forward(msg, transport);
    this.metrics.forwarded(f.result, f.ms / 1000);
    if (f.result === 'answer') return f.response;
    if (f.result === 'dropped') {
      this.metrics.dropped('flood');
      return null;
    }
    return this.encodeAnswer(q, question, 'SERVFAIL', null, transport, 0);
  }

  private fromZone(zone: Zone, q: dnsPacket.Packet, question: Question, transport: Transport): Buffer {
    if ((question.class ?? 'IN') !== 'IN') return this.encodeAnswer(q, question, 'REFUSED', null, transport, 0);
    const a = lookup(zone, question.name, question.type);
    return this.encodeAnswer(q, question, a.rcode, a, transport, FLAG_AA);
  }

  private encodeAnswer(q: dnsPacket.Packet, question: Question, rcode: Rcode, a: Answer | null, transport: Transport, extraFlags: number): Buffer {
    const opt = (q.additionals ?? []).find((r) => r.type === 'OPT') as dnsPacket.OptAnswer | undefined;
    const limit = transport === 'tcp' ? 65535 : opt ? Math.min(Math.max(opt.udpPayloadSize ?? UDP_PLAIN, UDP_PLAIN), UDP_EDNS_MAX) : UDP_PLAIN;
    const optOut = opt ? [{ type: 'OPT', name: '.', udpPayloadSize: UDP_EDNS_MAX, extendedRcode: 0, ednsVersion: 0, flags: 0, options: [] } as unknown as dnsPacket.Answer] : [];
    const flags = extraFlags | ((q.flags ?? 0) & FLAG_RD) | FLAG_RA | RCODE[rcode];
    const full: dnsPacket.Packet = {
      id: q.id, type: 'response', flags, questions: [question],
      answers: a ? toPacketRecords(a.answers) : [],
      authorities: a ? toPacketRecords(a.authorities) : [],
      additionals: [...(a ? toPacketRecords(a.additionals) : []), ...optOut],
    };
    const out = dnsPacket.encode(full);
    if (out.length <= limit) return out;
    // Too big for this UDP client: the header and question only, TC set (RFC 2181 9).
    return dnsPacket.encode({ id: q.id, type: 'response', flags: flags | FLAG_TC, questions: [question], answers: [], authorities: [], additionals: optOut });
  }

  /** Closes every socket and connection. */
  close(): void {
    for (const a of [...this.udp.keys()]) this.unbind(a);
    for (const c of this.conns) c.destroy();
    this.conns.clear();
  }
}
