/**
 * The fixed cost of berthd's first xDS snapshot, in this fresh node process (no kernel, Docker or
 * Envoy: no lock needed): CPU ms of loading the proxy modules, building the ADS service
 * definition, and building the same snapshot twice (bookinfo plus a TLS ingress with an h2c
 * route, HTTPS redirect, IPv6 and the access log), as one JSON line.
 *
 *   node dist/scripts/bench/first-snapshot.js [--dist OTHER_CHECKOUT/dist] [--reflection]
 *
 * --dist measures another checkout's build (e.g. main in a scratch clone); --reflection encodes
 * without the build's static code (src/proxy/protos.ts useStaticCode(false)). Run it several
 * times, alternating variants: one process is one sample.
 */
import path from 'node:path';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const dist = path.resolve(arg('dist') ?? path.join(__dirname, '../..'));
const reflection = process.argv.includes('--reflection');
const cpuMs = (c: NodeJS.CpuUsage): number => Math.round((c.user + c.system) / 1000);

/* eslint-disable @typescript-eslint/no-require-imports, @typescript-eslint/no-explicit-any -- another checkout's build, loaded by path */
const out: Record<string, unknown> = { dist, reflection };
let c0 = process.cpuUsage();
const { buildSnapshot } = require(path.join(dist, 'src/proxy/resources')) as { buildSnapshot(st: unknown, o: unknown): unknown };
const protos = require(path.join(dist, 'src/proxy/protos')) as { adsServiceDefinition(): unknown; useStaticCode?(on: boolean): void };
require(path.join(dist, 'src/proxy/ads'));
if (reflection) {
  if (!protos.useStaticCode) throw new Error(`${dist} has no static code to switch off`);
  protos.useStaticCode(false);
}
out.loadMs = cpuMs(process.cpuUsage(c0));
c0 = process.cpuUsage();
protos.adsServiceDefinition();
out.adsMs = cpuMs(process.cpuUsage(c0));

const { bookinfo, ingress, route } = require(path.join(dist, 'test/unit/proxy/fixtures')) as any;
const state = bookinfo();
const tls = ingress('secure', [route('/', 'productpage', 9080, 'shop.test'), { ...route('/api', 'details'), protocol: 'h2c' }], 15001);
tls.ingress = { ...tls.ingress, tls: true, tlsListen: 443, redirectHttps: true };
state.services.push(tls);
const pem = { cert: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n', key: '-----BEGIN PRIVATE KEY-----\nMIIC\n-----END PRIVATE KEY-----\n' };
const opts = { ipv6: true, accessLog: '/run/berth/access.log', certs: new Map([['shop.test', pem]]) };
c0 = process.cpuUsage();
buildSnapshot(state, opts);
out.firstMs = cpuMs(process.cpuUsage(c0));
c0 = process.cpuUsage();
buildSnapshot(state, opts);
out.secondMs = cpuMs(process.cpuUsage(c0));
out.totalMs = (out.loadMs as number) + (out.adsMs as number) + (out.firstMs as number);
console.log(JSON.stringify(out));
