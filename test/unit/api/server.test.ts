/**
 * The admin API answers a client that closes its sending side right after the request (as
 * `printf 'GET /services HTTP/1.0\r\n\r\n' | socat - UNIX-CONNECT:...` does), also when the
 * handler takes time (/services waits for a running reconcile).
 */
import test from 'ava';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { AdminApi } from '../../../src/api/server';

/** Send `request`, half-close, and collect everything the server sends until it closes. */
function halfCloseGet(socket: string, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(socket, () => c.end(request));
    let out = '';
    c.setEncoding('utf8');
    c.on('data', (d: string) => { out += d; });
    c.on('close', () => resolve(out));
    c.on('error', reject);
    c.setTimeout(5000, () => c.destroy(new Error('no close within 5 s')));
  });
}

test('a slow handler still answers a client that half-closed after its request', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bt-api-'));
  const sock = path.join(dir, 'api.sock');
  const api = new AdminApi(pino({ level: 'silent' }));
  t.teardown(async () => {
    await api.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await api.listenUnix(sock, {
    '/slow': () => new Promise((r) => setTimeout(() => r({ ok: true }), 300)),
    '/fast': () => ({ ok: 'fast' }),
  }, { text: async () => '', contentType: 'text/plain' });
  for (const [p, want] of [['/slow', { ok: true }], ['/fast', { ok: 'fast' }]] as const) {
    const reply = await halfCloseGet(sock, `GET ${p} HTTP/1.0\r\n\r\n`);
    t.regex(reply, /^HTTP\/1\.1 200 /, `${p}: status line`);
    t.deepEqual(JSON.parse(reply.slice(reply.indexOf('\r\n\r\n') + 4)), want, `${p}: body`);
  }
});
