/**
 * The L7 test backend (issue 10), run with the host's node inside a test container (the test
 * image is busybox; /usr and the checkout are bind-mounted read-only):
 *   :8080  HTTP/1.1 (and 1.0): GET any path -> JSON of what arrived (method, path, HTTP version,
 *          headers, replica); /slow?ms=N answers after N ms; /flaky?key=K&fail=N answers 503 to
 *          the first N requests of key K, then 200; /count?key=K -> how many requests K got;
 *          an `Upgrade: websocket` request is accepted (RFC 6455 handshake) and text frames are
 *          echoed back prefixed with the replica name.
 *   :8081  h2c (HTTP/2 prior knowledge only) -> the same JSON as :8080.
 *   :50051 gRPC (h2c): berth.test.Echo/Unary echoes {msg} with the replica; /Stream sends
 *          {n} messages. JSON-encoded messages (no .proto needed for a test).
 * Usage: node l7-backend.js <replica-name>
 * Client modes (run in a client container, print one JSON line):
 *   node l7-backend.js --ws-client ADDR PORT PATH HOST   WebSocket handshake + one echo
 *   node l7-backend.js --grpc-client ADDR:PORT            one unary call and one server stream
 */
import crypto from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import type net from 'node:net';
import * as grpc from '@grpc/grpc-js';

const replica = process.argv[2] ?? 'backend';
const counts = new Map<string, number>();

function describe(req: http.IncomingMessage | http2.Http2ServerRequest): object {
  return { replica, method: req.method, path: req.url, httpVersion: req.httpVersion, headers: req.headers };
}

/** One unmasked server frame (FIN, opcode). */
export function wsFrame(payload: Buffer, opcode = 1, mask = false): Buffer {
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, (mask ? 0x80 : 0) | len])
    : Buffer.from([0x80 | opcode, (mask ? 0x80 : 0) | 126, len >> 8, len & 0xff]);
  if (!mask) return Buffer.concat([head, payload]);
  const key = crypto.randomBytes(4);
  const body = Buffer.from(payload.map((b, i) => b ^ key[i % 4]));
  return Buffer.concat([head, key, body]);
}

/** Parse whole frames from buf: [{opcode, payload}], and the unused rest. */
export function wsParse(buf: Buffer): { frames: { opcode: number; payload: Buffer }[]; rest: Buffer } {
  const frames: { opcode: number; payload: Buffer }[] = [];
  let off = 0;
  while (buf.length - off >= 2) {
    const opcode = buf[off] & 0x0f;
    const masked = (buf[off + 1] & 0x80) !== 0;
    let len = buf[off + 1] & 0x7f;
    let p = off + 2;
    if (len === 126) {
      if (buf.length - p < 2) break;
      len = buf.readUInt16BE(p);
      p += 2;
    } else if (len === 127) {
      if (buf.length - p < 8) break;
      len = Number(buf.readBigUInt64BE(p));
      p += 8;
    }
    const key = masked ? buf.subarray(p, p + 4) : null;
    if (masked) p += 4;
    if (buf.length - p < len) break;
    const payload = Buffer.from(buf.subarray(p, p + len));
    if (key) for (let i = 0; i < payload.length; i++) payload[i] ^= key[i % 4];
    frames.push({ opcode, payload });
    off = p + len;
  }
  return { frames, rest: buf.subarray(off) };
}

/** Sec-WebSocket-Accept for a key (RFC 6455 section 4.2.2). */
export function wsAccept(key: string): string {
  return crypto.createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
}

function main(): void {
  const h1 = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const key = u.searchParams.get('key') ?? '';
    if (key) counts.set(key, (counts.get(key) ?? 0) + 1);
    const json = (status: number, body: object) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (u.pathname === '/slow') {
      setTimeout(() => json(200, { slept: Number(u.searchParams.get('ms')) }), Number(u.searchParams.get('ms') ?? 0));
    } else if (u.pathname === '/flaky') {
      const n = counts.get(key) ?? 0;
      json(n <= Number(u.searchParams.get('fail') ?? 0) ? 503 : 200, { attempts: n });
    } else if (u.pathname === '/count') {
      json(200, { count: (counts.get(key) ?? 1) - 1 });
    } else {
      json(200, describe(req));
    }
  });
  h1.on('upgrade', (req: http.IncomingMessage, sock: net.Socket) => {
    if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return sock.destroy();
    sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${wsAccept(String(req.headers['sec-websocket-key']))}\r\n\r\n`);
    let buf: Buffer = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      const r = wsParse(Buffer.concat([buf, d]));
      buf = r.rest;
      for (const f of r.frames) {
        if (f.opcode === 8) return sock.end(wsFrame(Buffer.alloc(0), 8));
        if (f.opcode === 1 || f.opcode === 2) sock.write(wsFrame(Buffer.concat([Buffer.from(`${replica}:`), f.payload]), f.opcode));
      }
    });
    sock.on('error', () => undefined);
  });
  h1.listen(8080);

  http2.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(describe(req)));
  }).listen(8081);

  const ser = (o: unknown) => Buffer.from(JSON.stringify(o));
  const de = (b: Buffer) => JSON.parse(b.toString()) as Record<string, unknown>;
  const server = new grpc.Server();
  server.addService({
    Unary: { path: '/berth.test.Echo/Unary', requestStream: false, responseStream: false, requestSerialize: ser, requestDeserialize: de, responseSerialize: ser, responseDeserialize: de },
    Stream: { path: '/berth.test.Echo/Stream', requestStream: false, responseStream: true, requestSerialize: ser, requestDeserialize: de, responseSerialize: ser, responseDeserialize: de },
  }, {
    Unary: (call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>, cb: grpc.sendUnaryData<unknown>) => cb(null, { msg: call.request.msg, replica }),
    Stream: (call: grpc.ServerWritableStream<Record<string, unknown>, unknown>) => {
      const n = Number(call.request.n ?? 3);
      for (let i = 0; i < n; i++) call.write({ i, replica });
      call.end();
    },
  });
  server.bindAsync('0.0.0.0:50051', grpc.ServerCredentials.createInsecure(), (err) => {
    if (err) throw err;
  });
}

/** WebSocket client: handshake, one text frame, its echo, close. */
async function wsClient(addr: string, port: number, path: string, host: string): Promise<object> {
  const netMod = await import('node:net');
  return new Promise((resolve) => {
    const sock = netMod.connect({ host: addr, port });
    const key = crypto.randomBytes(16).toString('base64');
    let buf: Buffer = Buffer.alloc(0);
    let status = 0;
    const timer = setTimeout(() => { sock.destroy(); resolve({ ok: false, status, error: 'timeout' }); }, 5000);
    sock.on('connect', () => sock.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`));
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!status) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString();
        status = Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1] ?? 0);
        const accept = /sec-websocket-accept: (\S+)/i.exec(head)?.[1];
        buf = buf.subarray(end + 4);
        if (status !== 101 || accept !== wsAccept(key)) {
          clearTimeout(timer);
          sock.destroy();
          return resolve({ ok: false, status, head });
        }
        sock.write(wsFrame(Buffer.from('hello over websocket'), 1, true));
      }
      const r = wsParse(buf);
      buf = r.rest;
      const text = r.frames.find((f) => f.opcode === 1);
      if (text) {
        clearTimeout(timer);
        sock.end(wsFrame(Buffer.alloc(0), 8, true));
        resolve({ ok: true, status, echo: text.payload.toString() });
      }
    });
    sock.on('error', (e) => { clearTimeout(timer); resolve({ ok: false, status, error: e.message }); });
  });
}

async function grpcClient(target: string): Promise<object> {
  const ser = (o: unknown) => Buffer.from(JSON.stringify(o));
  const de = (b: Buffer) => JSON.parse(b.toString()) as Record<string, unknown>;
  const Client = grpc.makeGenericClientConstructor({
    Unary: { path: '/berth.test.Echo/Unary', requestStream: false, responseStream: false, requestSerialize: ser, requestDeserialize: de, responseSerialize: ser, responseDeserialize: de },
    Stream: { path: '/berth.test.Echo/Stream', requestStream: false, responseStream: true, requestSerialize: ser, requestDeserialize: de, responseSerialize: ser, responseDeserialize: de },
  }, 'Echo');
  const c = new Client(target, grpc.credentials.createInsecure()) as unknown as {
    Unary(req: object, opts: object, cb: (e: Error | null, r: unknown) => void): void;
    Stream(req: object, opts: object): NodeJS.EventEmitter;
    close(): void;
  };
  const deadline = { deadline: Date.now() + 5000 };
  const unary = await new Promise((resolve) => c.Unary({ msg: 'ping' }, deadline, (e, r) => resolve(e ? { error: e.message } : r)));
  const stream = await new Promise((resolve) => {
    const got: unknown[] = [];
    const s = c.Stream({ n: 5 }, deadline);
    s.on('data', (m: unknown) => got.push(m));
    s.on('error', (e: Error) => resolve({ error: e.message, got }));
    s.on('end', () => resolve(got));
  });
  c.close();
  return { unary, stream };
}

if (require.main === module) {
  if (process.argv[2] === '--ws-client') {
    void wsClient(process.argv[3], Number(process.argv[4]), process.argv[5], process.argv[6]).then((r) => console.log(JSON.stringify(r)));
  } else if (process.argv[2] === '--grpc-client') {
    void grpcClient(process.argv[3]).then((r) => console.log(JSON.stringify(r)));
  } else {
    main();
  }
}
