/**
 * Names, not numbers (issue 13): berthd's DNS server behind the DNS VIP, for real — from host
 * programs (our client, and glibc's getaddrinfo via `getent` in a private mount namespace whose
 * /etc/resolv.conf names the VIP: the host's own file is never touched), from containers on the
 * default bridge and on a user-defined network (busybox nslookup; Docker's embedded resolver on
 * the latter), a service appearing and going, forwarding to a stub upstream on loopback (nothing
 * leaves the machine), truncation and TCP fallback, malformed packets, a silent upstream, metrics,
 * a restart of berthd, `berth dns setup` and `berth cleanup`, and `berth doctor`.
 */
import test from 'ava';
import { hostAsBefore } from '../helpers/cleanup';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as dnsPacket from 'dns-packet';
import { Berthd, runCli, waitFor, sleep } from '../helpers/berthd';
import { createTestNetwork, docker, ensureTestImage, execInFull, removeTestContainers, removeTestNetwork, runContainer } from '../helpers/docker';
import { query, udpExchange, encodeQuery } from '../../src/dns/client';
import { run } from '../../src/util/exec';

/** Prometheus text -> name{labels} -> value. */
function parseProm(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)/.exec(line);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}

const SUITE = 'dns';
const NET = 'bt-dns-net';
const RANGE = '10.214.0.0/16';
const RANGE6 = 'fd00:214::/112';
const DNS_VIP = '10.214.0.10';
const DNS_VIP6 = 'fd00:214::a';
const DNS_PORT = 10353;

interface Stub {
  port: number;
  names: string[];
  close(): void;
}

/**
 * A stub upstream resolver on 127.0.0.1 (UDP and TCP, one port): `big.*` has 60 A records (TC
 * over UDP), `silent.*` is never answered, every other name gets 192.0.2.1.
 */
async function stubUpstream(): Promise<Stub> {
  const names: string[] = [];
  const answer = (q: Buffer, tcp: boolean): Buffer | null => {
    const p = dnsPacket.decode(q);
    const name = p.questions![0].name;
    names.push(name);
    if (name.startsWith('silent.')) return null;
    const n = name.startsWith('big.') ? 60 : 1;
    const full = dnsPacket.encode({
      id: p.id, type: 'response', flags: dnsPacket.RECURSION_AVAILABLE | dnsPacket.RECURSION_DESIRED, questions: p.questions,
      answers: Array.from({ length: n }, (_, i) => ({ type: 'A' as const, name, ttl: 30, data: `192.0.2.${i + 1}` })),
    });
    if (tcp || full.length <= 512) return full;
    return dnsPacket.encode({ id: p.id, type: 'response', flags: dnsPacket.TRUNCATED_RESPONSE, questions: p.questions });
  };
  const udp = dgram.createSocket('udp4');
  udp.on('message', (m, r) => {
    const a = answer(m, false);
    if (a) udp.send(a, r.port, r.address);
  });
  await new Promise<void>((res) => udp.bind(0, '127.0.0.1', res));
  const port = udp.address().port;
  const tcp = net.createServer((c) => {
    c.on('error', () => c.destroy());
    c.once('data', (d: Buffer) => {
      const a = answer(d.subarray(2), true);
      if (!a) return;
      const len = Buffer.alloc(2);
      len.writeUInt16BE(a.length);
      c.end(Buffer.concat([len, a]));
    });
  });
  await new Promise<void>((res) => tcp.listen(port, '127.0.0.1', res));
  return { port, names, close: () => { udp.close(); tcp.close(); } };
}

type Rcoded = dnsPacket.DecodedPacket & { rcode: string };
const data = (p: dnsPacket.DecodedPacket) => (p.answers ?? []).map((a) => String((a as { data?: unknown }).data));

async function ask(name: string, type = 'A', o: { tcp?: boolean; server?: string; noTcpFallback?: boolean } = {}) {
  const r = await query(name, type, { server: o.server ?? DNS_VIP, port: 53, timeoutMs: 3000, tcp: o.tcp, noTcpFallback: o.noTcpFallback });
  return { ...r, packet: r.packet as Rcoded };
}

/** glibc's resolver (getaddrinfo via getent) with a resolv.conf naming `ns`, in a private mount namespace. */
async function getent(db: 'hosts' | 'ahostsv4', name: string, ns: string): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-dns-'));
  const conf = path.join(dir, 'resolv.conf');
  fs.writeFileSync(conf, `nameserver ${ns}\noptions timeout:2 attempts:1\n`);
  try {
    const r = await run('unshare', ['-m', '--propagation', 'private', 'sh', '-c', `mount --bind ${conf} /etc/resolv.conf && exec getent ${db} ${name}`], { timeoutMs: 15000 });
    return r.stdout;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test.serial('DNS: names from the host and from containers, changes, forwarding, truncation, faults, metrics, restart, setup', async (t) => {
  await removeTestContainers(SUITE);
  await removeTestNetwork(NET);
  await ensureTestImage();
  const stub = await stubUpstream();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-dns-setup-'));
  const d = new Berthd({
    name: 'dns', serviceCidr: RANGE, serviceCidr6: RANGE6,
    extraArgs: ['--dns-port', String(DNS_PORT), '--dns-upstreams', `127.0.0.1:${stub.port}`],
  });
  t.teardown(async () => {
    await removeTestContainers(SUITE);
    await removeTestNetwork(NET);
    await d.cleanup();
    stub.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  await d.start();

  // --- a service, resolved from the host through the DNS VIP (UDP and TCP, v4 and v6 VIP) ---
  await runContainer({ suite: SUITE, name: 'bt-dns-web', labels: { 'berth.service': 'web', 'berth.ports': '80' }, cmd: ['httpd', '-f', '-p', '80', '-h', '/'] });
  const web = await waitFor('service web', async () => (await d.services()).find((s) => s.name === 'web' && s.backends.length === 1));
  const a = await waitFor('web.berth over the VIP', async () => {
    const r = await ask('web.berth');
    return r.packet.rcode === 'NOERROR' && data(r.packet).length ? r : null;
  });
  t.deepEqual(data(a.packet), [web.vip]);
  t.true(a.packet.flag_aa);
  t.deepEqual(data((await ask('web.berth', 'A', { tcp: true })).packet), [web.vip], 'TCP');
  t.deepEqual(data((await ask('web.berth', 'AAAA')).packet), [web.vip6!]);
  t.deepEqual(data((await ask('web.berth', 'A', { server: DNS_VIP6 })).packet), [web.vip], 'through the v6 DNS VIP');
  const srv = await ask('_80._tcp.web.berth', 'SRV');
  t.deepEqual(srv.packet.answers!.map((x) => (x as { data: { port: number; target: string } }).data), [{ priority: 0, weight: 0, port: 80, target: 'web.berth' }]);
  t.is((await ask('nope.berth')).packet.rcode, 'NXDOMAIN');
  const status = await d.status() as unknown as { dns: { vip: string; listen: string[]; backend: string; upstreams: { port: number }[] } };
  t.is(status.dns.vip, DNS_VIP);
  t.deepEqual(status.dns.upstreams.map((u) => u.port), [stub.port]);
  t.true(status.dns.listen.includes('127.0.0.1') && status.dns.listen.includes(status.dns.backend), JSON.stringify(status.dns));

  // --- glibc on the host (getaddrinfo) ---
  t.regex(await getent('ahostsv4', 'web.berth', DNS_VIP), new RegExp(`^${web.vip.replace(/\./g, '\\.')}\\s`, 'm'));
  t.regex(await getent('hosts', 'web.berth', DNS_VIP), new RegExp(`(${web.vip.replace(/\./g, '\\.')}|${web.vip6})\\s+web\\.berth`));

  // --- containers: default bridge (resolv.conf names the VIP) and a user-defined network
  //     (Docker's embedded resolver 127.0.0.11 forwards to the VIP) ---
  const onBridge = await runContainer({ suite: SUITE, name: 'bt-dns-c1', cmd: ['sleep', '600'], init: true, dns: [DNS_VIP] });
  const n1 = await execInFull(onBridge.id, ['nslookup', 'web.berth'], { timeoutMs: 15000 });
  t.regex(n1.stdout, new RegExp(`Address:\\s+${web.vip.replace(/\./g, '\\.')}`), n1.stdout + n1.stderr);
  // The README's example: a client in a container reaches the service by name (busybox nc does the
  // getaddrinfo; curl is not in the test image).
  const http = await execInFull(onBridge.id, ['sh', '-c', 'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc web.berth 80 | head -1'], { timeoutMs: 15000 });
  t.regex(http.stdout, /^HTTP\/1\.[01] /, `http://web.berth/ from a container: ${http.stdout}${http.stderr}`);
  await createTestNetwork(NET);
  const onNet = await runContainer({ suite: SUITE, name: 'bt-dns-c2', network: NET, cmd: ['sleep', '600'], init: true, dns: [DNS_VIP] });
  const n2 = await execInFull(onNet.id, ['nslookup', 'web.berth'], { timeoutMs: 15000 });
  t.regex(n2.stdout, /Server:\s+127\.0\.0\.11/, 'asked Docker\'s embedded resolver');
  t.regex(n2.stdout, new RegExp(`Address:\\s+${web.vip.replace(/\./g, '\\.')}`), n2.stdout + n2.stderr);
  const n3 = await execInFull(onNet.id, ['nslookup', 'outside.example'], { timeoutMs: 15000 });
  t.regex(n3.stdout, /192\.0\.2\.1/, 'an outside name from a container, forwarded to the stub');

  // --- a new service resolves within a second of its container starting; a removed one is NXDOMAIN ---
  const ctr = await docker.createContainer({ Image: 'berth-test/busybox:latest', name: 'bt-dns-new', Cmd: ['sleep', '600'], Labels: { 'berth-test': SUITE, 'berth.service': 'fresh', 'berth.ports': '9/udp' } });
  await ctr.start();
  const t0 = Date.now();
  await waitFor('fresh.berth', async () => (await ask('fresh.berth')).packet.rcode === 'NOERROR', 5000, 20);
  const appearMs = Date.now() - t0;
  t.log(`new service resolvable ${appearMs} ms after its container started`);
  t.true(appearMs <= 1000, `${appearMs} ms`);
  await ctr.remove({ force: true });
  await waitFor('fresh.berth gone', async () => (await ask('fresh.berth')).packet.rcode === 'NXDOMAIN', 5000, 20);

  // --- forwarding (to the stub on loopback only), truncation and TCP fallback, a silent upstream ---
  const fwd = await ask('www.example.test');
  t.deepEqual(data(fwd.packet), ['192.0.2.1']);
  t.true(stub.names.includes('www.example.test'));
  const trunc = await ask('big.example.test', 'A', { noTcpFallback: true });
  t.true(trunc.packet.flag_tc, 'the UDP answer is truncated');
  const big = await ask('big.example.test');
  t.is(big.transport, 'tcp');
  t.is(data(big.packet).length, 60);
  const t1 = Date.now();
  t.is((await ask('silent.example.test')).packet.rcode, 'SERVFAIL');
  t.true(Date.now() - t1 < 3000, `SERVFAIL after ${Date.now() - t1} ms`);
  t.is(stub.names.filter((n) => n.endsWith('.berth')).length, 0, 'names in the zone are never forwarded');

  // --- malformed packets: dropped or FORMERR, and the server keeps answering ---
  const garbage = [Buffer.alloc(0), Buffer.from('hello'), Buffer.from('0123456789abcdefghij'), Buffer.alloc(12, 0xff), encodeQuery('web.berth', 'A').subarray(0, 20)];
  const sock = dgram.createSocket('udp4');
  for (const g of garbage) sock.send(g, 53, DNS_VIP);
  await sleep(200);
  sock.close();
  const half = encodeQuery('web.berth', 'A').subarray(0, 20);
  const formerr = dnsPacket.decode(await udpExchange(DNS_VIP, 53, half, 2000)) as Rcoded;
  t.is(formerr.rcode, 'FORMERR');
  t.deepEqual(data((await ask('web.berth')).packet), [web.vip], 'still answering');

  // --- metrics ---
  const m = parseProm(await d.metrics());
  t.true((m.get('berth_dns_queries_total{transport="udp"}') ?? 0) >= 10);
  t.true((m.get('berth_dns_queries_total{transport="tcp"}') ?? 0) >= 2);
  t.true((m.get('berth_dns_responses_total{rcode="NOERROR"}') ?? 0) >= 5);
  t.true((m.get('berth_dns_responses_total{rcode="NXDOMAIN"}') ?? 0) >= 2);
  t.true((m.get('berth_dns_responses_total{rcode="FORMERR"}') ?? 0) >= 1);
  t.true((m.get('berth_dns_dropped_total{reason="malformed"}') ?? 0) >= 2);
  t.true((m.get('berth_dns_forwarded_total{result="answer"}') ?? 0) >= 3);
  t.true((m.get('berth_dns_forwarded_total{result="timeout"}') ?? 0) >= 1);
  t.true((m.get('berth_dns_forward_duration_seconds_count') ?? 0) >= 3);

  // --- the DNS VIP is reserved: a service cannot pin it ---
  await runContainer({ suite: SUITE, name: 'bt-dns-squat', labels: { 'berth.service': 'squat', 'berth.ports': '80', 'berth.vip': DNS_VIP }, cmd: ['sleep', '600'], init: true });
  const err = await waitFor('label error', async () => (await d.status()).labelErrors.find((e) => e.container === 'bt-dns-squat'));
  t.regex(err.error, /reserved by berth/);

  // --- berthd restarting: names fail no longer than the restart ---
  // Probe every ~20 ms across stop + start; the outage is the longest run of failed probes
  // (from the last answer before it to the first answer after it).
  const samples: { t: number; ok: boolean }[] = [];
  let probing = true;
  const prober = (async () => {
    while (probing) {
      const ok = await query('web.berth', 'A', { server: DNS_VIP, timeoutMs: 200 }).then((r) => data(r.packet).includes(web.vip), () => false);
      samples.push({ t: Date.now(), ok });
      await sleep(20);
    }
  })();
  await sleep(200);
  const stopAt = Date.now();
  await d.stop();
  const startAt = Date.now();
  await d.start();
  const readyAt = Date.now();
  await waitFor('names again', () => samples.some((x) => x.ok && x.t > readyAt), 10000, 20);
  probing = false;
  await prober;
  let worst = { from: 0, to: 0 };
  let lastOk = samples[0]?.t ?? stopAt;
  let failing = false;
  for (const x of samples) {
    if (!x.ok) failing = true;
    else {
      if (failing && x.t - lastOk > worst.to - worst.from) worst = { from: lastOk, to: x.t };
      failing = false;
      lastOk = x.t;
    }
  }
  t.log(`names failed for ${worst.to - worst.from} ms across a berthd restart (stop ${startAt - stopAt} ms, start to ready ${readyAt - startAt} ms)`);
  t.true(worst.to > 0, 'the stop did take names down (the probe sees the outage)');
  t.true(worst.from >= stopAt - 100, 'no outage before the stop');
  t.true(worst.to <= readyAt + 500, `names back ${worst.to - readyAt} ms after berthd was ready`);

  // --- berth dns setup (files of the test's own), and berth cleanup restoring them ---
  const daemonJson = path.join(tmp, 'daemon.json');
  const dropIn = path.join(tmp, 'resolved.conf.d', 'berth.conf');
  const original = '{ "log-level": "warn" }\n';
  fs.writeFileSync(daemonJson, original);
  const setupArgs = ['--docker-daemon-json', daemonJson, '--resolved-dropin', dropIn, '--resolved-run-dir', tmp, '--no-restart', ...d.args.filter((x, i, all) => x !== '--log-level' && all[i - 1] !== '--log-level')];
  const dry = await runCli(['dns', 'setup', ...setupArgs]);
  t.is(dry.code, 0, dry.stderr);
  t.regex(dry.stdout, /would change/);
  t.is(fs.readFileSync(daemonJson, 'utf8'), original);
  const applied = await runCli(['dns', 'setup', '--apply', ...setupArgs]);
  t.is(applied.code, 0, applied.stderr);
  t.deepEqual(JSON.parse(fs.readFileSync(daemonJson, 'utf8')).dns, [DNS_VIP]);
  t.regex(fs.readFileSync(dropIn, 'utf8'), new RegExp(`DNS=${DNS_VIP.replace(/\./g, '\\.')} ${DNS_VIP6}\\nDomains=~berth`));

  // --- berth doctor sees names from the host VIP and from a container ---
  const doc = await runCli(['doctor', '--json', '--socket', d.socket, ...d.args.filter((x, i, all) => x !== '--log-level' && all[i - 1] !== '--log-level')]);
  const checks = JSON.parse(doc.stdout) as { name: string; level: string; detail: string }[];
  const check = (n: string) => checks.find((c) => c.name === n);
  t.is(check('dns VIP')?.level, 'OK', JSON.stringify(check('dns VIP')));
  t.is(check('dns from container')?.level, 'OK', JSON.stringify(check('dns from container')));
  t.truthy(check('dns from host'), 'the host resolver is checked (its level depends on this host)');

  await d.stop();
  const cleaned = await d.cleanup();
  t.regex(cleaned, /dns setup: restored/);
  t.is(fs.readFileSync(daemonJson, 'utf8'), original, 'daemon.json byte for byte as before');
  t.false(fs.existsSync(dropIn));
});

hostAsBefore(test);
