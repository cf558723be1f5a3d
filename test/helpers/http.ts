/**
 * Plain HTTP/1.1 GETs from three places: the host (node's http), a container and a network
 * namespace of the test's own (both with berth-probe, which sends the request and reads until the
 * server closes), each returning status and body. Not busybox nc: it half-closes the connection
 * after stdin's EOF, and Envoy's HTTP connection manager treats a downstream half-close as the
 * client going away and drops the response.
 */
import http from 'node:http';
import path from 'node:path';
import { run } from '../../src/util/exec';
import { execIn, TEST_BIN_DIR } from './docker';

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

function probeArgs(addr: string, port: number, urlPath: string, host: string): string[] {
  return ['tcp', addr, String(port), '--send', rawRequest(urlPath, host), '--count', '1', '--timeout-ms', '3000'];
}

function fromProbe(stdout: string): HttpResult {
  const line = stdout.split('\n').find((l) => l.startsWith('{'));
  if (!line) throw new Error(`berth-probe printed nothing: ${stdout}`);
  const r = JSON.parse(line) as { ok: boolean; reply: string | null; errno: string | null };
  if (!r.ok) throw new Error(`request failed: ${r.errno}`);
  return parseRaw(r.reply ?? '');
}

export async function httpGetInContainer(container: string, addr: string, port: number, urlPath: string, host = 'berth.test'): Promise<HttpResult> {
  return fromProbe(await execIn(container, ['berth-probe', ...probeArgs(addr, port, urlPath, host)]));
}

export async function httpGetInNetns(ns: string, addr: string, port: number, urlPath: string, host = 'berth.test'): Promise<HttpResult> {
  const r = await run('ip', ['netns', 'exec', ns, path.join(TEST_BIN_DIR, 'berth-probe'), ...probeArgs(addr, port, urlPath, host)], { timeoutMs: 8000 });
  return fromProbe(r.stdout);
}
