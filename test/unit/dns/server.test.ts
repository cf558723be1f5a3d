import test from 'ava';
import dgram from 'node:dgram';
import net from 'node:net';
import * as dnsPacket from 'dns-packet';
import { DnsServer, type DnsMetricsSink } from '../../../src/dns/server';
import { Forwarder } from '../../../src/dns/forward';
import { buildZone, type Zone } from '../../../src/dns/zone';
import { encodeQuery } from '../../../src/dns/client';
import { silentLogger } from '../../../src/util/log';
import type { Service } from '../../../src/model/types';

const WEB: Service = {
  name: 'web', kind: 'service', vip: '10.96.1.1', vip6: 'fd00:96::101', ports: [{ port: 80, protocol: 'tcp', targetPort: 80 }],
  backends: [], routes: [], ingress: null, errors: [],
};

function counting(): DnsMetricsSink & { log: string[] } {
  const log: string[] = [];
  return { log, query: (t) => log.push(`q:${t}`), response: (r) => log.push(`r:${r}`), dropped: (r) => log.push(`d:${r}`), forwarded: (r) => log.push(`f:${r}`) };
}

function server(forwarder = new Forwarder(), zone: Zone | null = buildZone([WEB], 'berth', 1)) {
  const metrics = counting();
  const s = new DnsServer({ port: 0, domain: 'berth', forwarder, logger: silentLogger(), metrics });
  if (zone) s.setZone(zone);
  return { s, metrics };
}

type Decoded = dnsPacket.DecodedPacket & { rcode: string; answers?: (dnsPacket.Answer & { ttl?: number })[] };
const decode = (b: Buffer | null) => dnsPacket.decode(b!) as Decoded;

test('zone answers: authoritative, id and RD echoed, NXDOMAIN inside the zone', async (t) => {
  const { s, metrics } = server();
  const q = encodeQuery('Web.Berth', 'A');
  const a = decode(await s.handle(q, 'udp'));
  t.is(a.id, q.readUInt16BE(0));
  t.is(a.type, 'response');
  t.true(a.flag_aa);
  t.true(a.flag_rd);
  t.is(a.rcode, 'NOERROR');
  t.deepEqual(a.answers!.map((x) => [x.name, x.type, (x as { data: unknown }).data, (x as { ttl?: number }).ttl]), [['Web.Berth', 'A', '10.96.1.1', 5]]);
  const n = decode(await s.handle(encodeQuery('gone.berth', 'AAAA'), 'udp'));
  t.is(n.rcode, 'NXDOMAIN');
  t.is(n.authorities![0].type, 'SOA');
  t.deepEqual(metrics.log, ['q:udp', 'r:NOERROR', 'q:udp', 'r:NXDOMAIN']);
});

test('malformed and unsupported messages (table): dropped or answered, never thrown', async (t) => {
  const { s, metrics } = server();
  const good = encodeQuery('web.berth', 'A');
  const withFlags = (f: number) => { const b = Buffer.from(good); b.writeUInt16BE(f, 2); return b; };
  const twoQuestions = dnsPacket.encode({ id: 9, type: 'query', questions: [{ name: 'a.berth', type: 'A' }, { name: 'b.berth', type: 'A' }] });
  const noQuestion = dnsPacket.encode({ id: 9, type: 'query', questions: [] });
  const header = good.subarray(0, 12);
  const cases: [string, Buffer, string | null][] = [
    ['empty', Buffer.alloc(0), null],
    ['short of a header', Buffer.from([1, 2, 3]), null],
    ['a response (QR set)', withFlags(0x8000), null],
    ['question count says 1, no question', header, 'FORMERR'],
    ['question cut in the middle', good.subarray(0, good.length - 3), 'FORMERR'],
    ['label length pointing past the end', Buffer.concat([header, Buffer.from([63, 0x61])]), 'FORMERR'],
    ['two questions', twoQuestions, 'FORMERR'],
    ['no question', noQuestion, 'FORMERR'],
    ['opcode STATUS', withFlags(2 << 11), 'NOTIMP'],
    ['opcode UPDATE', withFlags(5 << 11), 'NOTIMP'],
  ];
  for (const [what, msg, want] of cases) {
    const r = await s.handle(msg, 'udp');
    if (want === null) {
      t.is(r, null, what);
      continue;
    }
    const a = decode(r);
    t.is(a.rcode, want, what);
    t.is(a.id, msg.readUInt16BE(0), `${what}: id echoed`);
    t.is(a.type, 'response', what);
  }
  t.true(metrics.log.includes('d:malformed'));
  t.true(metrics.log.includes('d:response'));
});

test('fuzz: 3000 random and mutated messages never throw and get nothing or a decodable response', async (t) => {
  const { s } = server();
  const good = encodeQuery('_80._tcp.web.berth', 'SRV', 1232);
  let seed = 42;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  for (let i = 0; i < 3000; i++) {
    let msg: Buffer;
    if (i % 2) {
      msg = Buffer.from(good);
      for (let k = 0; k < 3; k++) msg[Math.floor(rnd() * msg.length)] = Math.floor(rnd() * 256);
    } else {
      msg = Buffer.from(Array.from({ length: Math.floor(rnd() * 64) }, () => Math.floor(rnd() * 256)));
    }
    const r = await s.handle(msg, 'udp');
    if (r) t.notThrows(() => dnsPacket.decode(r), `message ${i}`);
  }
});

test('UDP answers fit 512 bytes (or the EDNS size, at most 1232): bigger ones are truncated; TCP gets all', async (t) => {
  // A hand-made zone with a big RRset (the zone builder never makes one this big).
  const zone = buildZone([], 'berth', 1);
  zone.records.set('big.berth', Array.from({ length: 40 }, (_, i) => ({ type: 'A' as const, data: `10.96.9.${i}` })));
  const { s } = server(new Forwarder(), zone);
  const plain = (await s.handle(encodeQuery('big.berth', 'A'), 'udp'))!;
  t.true(plain.length <= 512);
  const p = decode(plain);
  t.true(p.flag_tc);
  t.is(p.answers!.length, 0);
  t.is(p.questions![0].name, 'big.berth');
  const edns = (await s.handle(encodeQuery('big.berth', 'A', 4096), 'udp'))!;
  t.true(edns.length <= 1232 && edns.length > 512);
  t.false(decode(edns).flag_tc);
  t.is(decode(edns).answers!.filter((a) => a.type === 'A').length, 40);
  const tcp = decode(await s.handle(encodeQuery('big.berth', 'A'), 'tcp'));
  t.false(tcp.flag_tc);
  t.is(tcp.answers!.length, 40);
});

test('before the first zone, names in the zone get SERVFAIL, never a forward', async (t) => {
  const f = new Forwarder();
  f.setUpstreams([{ ip: '127.0.0.1', port: 9 }]);
  const { s, metrics } = server(f, null);
  t.is(decode(await s.handle(encodeQuery('web.berth', 'A'), 'udp')).rcode, 'SERVFAIL');
  t.false(metrics.log.some((l) => l.startsWith('f:')));
});

/** A stub upstream on loopback: answers every A query with `n` addresses (UDP: TC when over 512). */
async function stubUpstream(t: import('ava').ExecutionContext, n = 1, silent = false) {
  const udp = dgram.createSocket('udp4');
  const seen: { id: number; port: number }[] = [];
  const answer = (q: Buffer, tcp: boolean) => {
    const p = dnsPacket.decode(q);
    const full = dnsPacket.encode({
      id: p.id, type: 'response', flags: dnsPacket.RECURSION_AVAILABLE, questions: p.questions,
      answers: Array.from({ length: n }, (_, i) => ({ type: 'A' as const, name: p.questions![0].name, ttl: 60, data: `192.0.2.${i + 1}` })),
    });
    if (tcp || full.length <= 512) return full;
    return dnsPacket.encode({ id: p.id, type: 'response', flags: dnsPacket.TRUNCATED_RESPONSE, questions: p.questions });
  };
  udp.on('message', (m, r) => {
    seen.push({ id: m.readUInt16BE(0), port: r.port });
    if (!silent) udp.send(answer(m, false), r.port, r.address);
  });
  await new Promise<void>((res) => udp.bind(0, '127.0.0.1', res));
  const tcp = net.createServer((c) => {
    c.on('data', (d) => {
      const a = answer(d.subarray(2), true);
      const len = Buffer.alloc(2);
      len.writeUInt16BE(a.length);
      c.end(Buffer.concat([len, a]));
    });
  });
  const port = udp.address().port;
  await new Promise<void>((res) => tcp.listen(port, '127.0.0.1', res));
  t.teardown(() => { udp.close(); tcp.close(); });
  return { port, seen };
}

test('names outside the zone are forwarded with a fresh id, and the client id is put back', async (t) => {
  const up = await stubUpstream(t);
  const f = new Forwarder({ timeoutMs: 1000 });
  f.setUpstreams([{ ip: '127.0.0.1', port: up.port }]);
  const { s, metrics } = server(f);
  const q = encodeQuery('example.com', 'A');
  const a = decode(await s.handle(q, 'udp'));
  t.is(a.id, q.readUInt16BE(0));
  t.deepEqual(a.answers!.map((x) => (x as { data: string }).data), ['192.0.2.1']);
  t.is(up.seen.length, 1);
  t.true(metrics.log.includes('f:answer'));
  t.is(f.pending, 0);
});

test('a truncated upstream UDP answer is relayed with TC; the TCP retry is forwarded over TCP', async (t) => {
  const up = await stubUpstream(t, 60);
  const f = new Forwarder({ timeoutMs: 1000 });
  f.setUpstreams([{ ip: '127.0.0.1', port: up.port }]);
  const { s } = server(f);
  const u = decode(await s.handle(encodeQuery('big.example', 'A'), 'udp'));
  t.true(u.flag_tc);
  const c = decode(await s.handle(encodeQuery('big.example', 'A'), 'tcp'));
  t.false(c.flag_tc);
  t.is(c.answers!.length, 60);
});

test('a silent upstream gives SERVFAIL within the timeout; a second upstream is tried', async (t) => {
  const silent = await stubUpstream(t, 1, true);
  const good = await stubUpstream(t, 1);
  const f = new Forwarder({ timeoutMs: 400 });
  f.setUpstreams([{ ip: '127.0.0.1', port: silent.port }]);
  const { s, metrics } = server(f);
  const t0 = Date.now();
  t.is(decode(await s.handle(encodeQuery('example.com', 'A'), 'udp')).rcode, 'SERVFAIL');
  const ms = Date.now() - t0;
  t.true(ms >= 390 && ms < 1500, `${ms} ms`);
  t.true(metrics.log.includes('f:timeout'));
  f.setUpstreams([{ ip: '127.0.0.1', port: silent.port }, { ip: '127.0.0.1', port: good.port }]);
  t.is(decode(await s.handle(encodeQuery('example.com', 'A'), 'udp')).rcode, 'NOERROR');
  t.is(good.seen.length, 1);
  // No upstream at all: SERVFAIL at once.
  f.setUpstreams([]);
  t.is(decode(await s.handle(encodeQuery('example.com', 'A'), 'tcp')).rcode, 'SERVFAIL');
});

test('a flood is bounded: forwards beyond maxInFlight are dropped, not queued', async (t) => {
  const silent = await stubUpstream(t, 1, true);
  const f = new Forwarder({ timeoutMs: 300, maxInFlight: 4 });
  f.setUpstreams([{ ip: '127.0.0.1', port: silent.port }]);
  const { s, metrics } = server(f);
  const replies = await Promise.all(Array.from({ length: 20 }, () => s.handle(encodeQuery('example.com', 'A'), 'udp')));
  t.is(replies.filter((r) => r === null).length, 16);
  t.is(replies.filter((r) => r && decode(r).rcode === 'SERVFAIL').length, 4);
  t.is(metrics.log.filter((l) => l === 'd:flood').length, 16);
  t.is(f.pending, 0);
});

test('an answer from another port than the upstream\'s is ignored (spoofing)', async (t) => {
  const silent = await stubUpstream(t, 1, true);
  const f = new Forwarder({ timeoutMs: 500 });
  f.setUpstreams([{ ip: '127.0.0.1', port: silent.port }]);
  const { s } = server(f);
  // A spoofer that even knows the id and the forwarder's port, but sends from another port.
  const spoofer = dgram.createSocket('udp4');
  t.teardown(() => spoofer.close());
  const q = encodeQuery('example.com', 'A');
  const pending = s.handle(q, 'udp');
  while (silent.seen.length === 0) await new Promise((r) => setTimeout(r, 10));
  const { id, port } = silent.seen[0];
  t.not(id, q.readUInt16BE(0), 'the forwarded query has an id of its own');
  const forged = dnsPacket.encode({ id, type: 'response', questions: [{ name: 'example.com', type: 'A' }], answers: [{ type: 'A', name: 'example.com', data: '203.0.113.66' }] });
  spoofer.send(forged, port, '127.0.0.1');
  t.is(decode(await pending).rcode, 'SERVFAIL');
});

test('a forward that completes after its socket closed is dropped quietly (no throw, no unhandled rejection)', async (t) => {
  const up = await stubUpstream(t);
  const f = new Forwarder({ timeoutMs: 1000 });
  f.setUpstreams([{ ip: '127.0.0.1', port: up.port }]);
  const s = new DnsServer({ port: 0, domain: 'berth', forwarder: f, logger: silentLogger() });
  s.setZone(buildZone([WEB], 'berth', 1));
  t.deepEqual(await s.listen(['127.0.0.1']), []);
  const client = dgram.createSocket('udp4');
  t.teardown(() => client.close());
  // Port 0 bound: find it from the server's socket through a query answered by the zone.
  const port = (s as unknown as { udp: Map<string, dgram.Socket> }).udp.get('127.0.0.1')!.address().port;
  const answered = new Promise<Buffer>((res) => client.once('message', res));
  client.send(encodeQuery('web.berth', 'A'), port, '127.0.0.1');
  t.is(decode(await answered).rcode, 'NOERROR');
  client.send(encodeQuery('outside.example', 'A'), port, '127.0.0.1');
  s.close();
  await new Promise((r) => setTimeout(r, 300));
  t.is(f.pending, 0);
  t.deepEqual(s.addresses, []);
});
