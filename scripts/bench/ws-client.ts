/**
 * WebSocket echo load client of the L7 bench (issue 10): N concurrent connections, each doing a
 * handshake (RFC 6455 section 4, the Sec-WebSocket-Accept checked) and then a closed loop of one
 * masked 64-byte text frame out, its echo back, for a fixed time. Prints one JSON line
 * (see WsResult in lib/wsload.ts): messages/s over all connections and the round-trip p50/p99.
 *
 *   node ws-client.js ADDR PORT HOST --connections N --seconds S [--max-count M] [--path P]
 *
 * Run by the bench inside a client container's network namespace (nsenter -n) with the host's
 * node. Bounded in count (--max-count echoes over all connections, at most 2,000,000) and time
 * (--seconds of measurement after the handshakes, which are bounded to 5 s; a message whose echo
 * takes over 2 s fails its connection; the process exits by itself at seconds + 10 s).
 * The frames come from the integration tests' backend helpers, which also serve the echo.
 */
import crypto from 'node:crypto';
import net from 'node:net';
import { wsAccept, wsFrame, wsParse } from '../../test/helpers/l7-backend';
import { percentileSorted, wsClientArgs } from './lib/wsload';

interface Conn {
  sock: net.Socket;
  buf: Buffer;
  sentAt: bigint;
  open: boolean;
}

async function main(): Promise<void> {
  const a = wsClientArgs(process.argv.slice(2));
  const hardStop = setTimeout(() => {
    console.log(JSON.stringify({ error: 'hard time bound reached' }));
    process.exit(2);
  }, (a.seconds + 10) * 1000);
  hardStop.unref();
  // A pool of pre-masked frames (a fresh key each; masking every frame anew would put the
  // client's own crypto in the measurement).
  const pool = Array.from({ length: 64 }, () => wsFrame(Buffer.from(crypto.randomBytes(32).toString('hex')), 1, true));
  const rtts = new Float64Array(a.maxCount);
  let count = 0;
  let errors = 0;
  let firstError = '';
  let measuring = false;
  let deadline = 0n;
  const fail = (c: Conn, why: string) => {
    if (!c.open) return;
    c.open = false;
    errors++;
    firstError ||= why;
    c.sock.destroy();
  };
  const send = (c: Conn) => {
    c.sentAt = process.hrtime.bigint();
    c.sock.write(pool[count % pool.length]);
  };
  const conns = await Promise.all(Array.from({ length: a.connections }, () => new Promise<Conn | null>((resolve) => {
    const key = crypto.randomBytes(16).toString('base64');
    const c: Conn = { sock: net.connect({ host: a.addr, port: a.port, noDelay: true }), buf: Buffer.alloc(0), sentAt: 0n, open: true };
    let upgraded = false;
    const handshakeTimer = setTimeout(() => { fail(c, 'handshake timed out (5 s)'); resolve(null); }, 5000);
    c.sock.on('connect', () => c.sock.write(`GET ${a.path} HTTP/1.1\r\nHost: ${a.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`));
    c.sock.on('error', (e) => { fail(c, e.message); if (!upgraded) { clearTimeout(handshakeTimer); resolve(null); } });
    c.sock.on('close', () => {
      if (!upgraded) {
        clearTimeout(handshakeTimer);
        fail(c, 'connection closed during the handshake');
        return resolve(null);
      }
      if (measuring && process.hrtime.bigint() < deadline) fail(c, 'closed by the peer');
      c.open = false;
    });
    c.sock.on('data', (d: Buffer) => {
      c.buf = c.buf.length ? Buffer.concat([c.buf, d]) : d;
      if (!upgraded) {
        const end = c.buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = c.buf.subarray(0, end).toString();
        c.buf = c.buf.subarray(end + 4);
        clearTimeout(handshakeTimer);
        const status = /^HTTP\/1\.1 (\d+)/.exec(head)?.[1];
        if (status !== '101' || /sec-websocket-accept: *(\S+)/i.exec(head)?.[1] !== wsAccept(key)) {
          fail(c, `handshake answered ${status ?? '?'}: ${head.split('\r\n')[0]}`);
          return resolve(null);
        }
        upgraded = true;
        return resolve(c);
      }
      const r = wsParse(c.buf);
      c.buf = r.rest;
      for (const f of r.frames) {
        if (f.opcode === 8) return fail(c, 'close frame from the peer');
        if (f.opcode !== 1 && f.opcode !== 2) continue;
        if (!measuring || !c.open) continue;
        if (count < a.maxCount) rtts[count] = Number(process.hrtime.bigint() - c.sentAt) / 1e6;
        count++;
        if (process.hrtime.bigint() < deadline && count < a.maxCount) send(c);
      }
    });
  })));
  const live = conns.filter((c): c is Conn => c !== null);
  const start = process.hrtime.bigint();
  deadline = start + BigInt(Math.round(a.seconds * 1e9));
  measuring = true;
  const watchdog = setInterval(() => {
    const now = process.hrtime.bigint();
    for (const c of live) if (c.open && c.sentAt && now - c.sentAt > 2_000_000_000n && now < deadline) fail(c, 'no echo within 2 s');
  }, 250);
  for (const c of live) send(c);
  // Wait until the time is up, the count is reached or every connection failed.
  while (process.hrtime.bigint() < deadline && count < a.maxCount && live.some((c) => c.open)) await new Promise((r) => setTimeout(r, 20));
  const end = process.hrtime.bigint();
  clearInterval(watchdog);
  for (const c of live) if (c.open) c.sock.end(wsFrame(Buffer.alloc(0), 8, true));
  const n = Math.min(count, a.maxCount);
  const sorted = rtts.subarray(0, n).sort();
  const seconds = Number(end - start) / 1e9;
  console.log(JSON.stringify({
    connections: live.length, messages: n, errors, seconds, rate: n / seconds,
    p50_ms: percentileSorted(sorted, 0.5), p99_ms: percentileSorted(sorted, 0.99), first_error: firstError,
  }));
  setTimeout(() => process.exit(0), 200).unref();
}

void main().catch((e: Error) => {
  console.log(JSON.stringify({ error: e.message }));
  process.exit(2);
});
