/**
 * Plain HTTP/1.1 GETs from three places: the host (node's http), a container (busybox nc) and a
 * network namespace of the test's own (busybox nc from the host's busybox-static), each returning
 * status and body. `Connection: close` lets nc end when Envoy closes.
 */
import http from 'node:http';
import { run } from '../../src/util/exec';
import { execIn } from './docker';

export interface HttpResult {
  status: number;
  body: string;
}

export function httpGet(addr: string, port: number, path: string, host = 'berth.test', timeoutMs = 3000): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: addr, port, path, headers: { host, connection: 'close' }, timeout: timeoutMs, family: addr.includes(':') ? 6 : 4 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${addr}:${port}${path} timed out`)));
    req.on('error', reject);
  });
}

function rawRequest(path: string, host: string): string {
  return `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;
}

export function parseRaw(raw: string): HttpResult {
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(raw);
  if (!m) throw new Error(`not an HTTP response: ${JSON.stringify(raw.slice(0, 200))}`);
  const i = raw.indexOf('\r\n\r\n');
  return { status: Number(m[1]), body: i >= 0 ? raw.slice(i + 4) : '' };
}

export async function httpGetInContainer(container: string, addr: string, port: number, path: string, host = 'berth.test'): Promise<HttpResult> {
  const req = rawRequest(path, host).replace(/\r/g, '\\r').replace(/\n/g, '\\n');
  const out = await execIn(container, ['sh', '-c', `printf '${req}' | timeout 5 nc ${addr} ${port}`]);
  return parseRaw(out);
}

export async function httpGetInNetns(ns: string, addr: string, port: number, path: string, host = 'berth.test'): Promise<HttpResult> {
  const r = await run('ip', ['netns', 'exec', ns, 'timeout', '5', 'busybox', 'nc', addr, String(port)], { input: rawRequest(path, host), timeoutMs: 8000 });
  return parseRaw(r.stdout);
}
