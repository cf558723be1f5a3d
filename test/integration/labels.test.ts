/**
 * Every bad-label case against the real daemon and Docker: the container is skipped with one
 * message naming container, label and reason (log and `berth status`), the first owner keeps
 * its VIP, and other services are untouched.
 */
import test from 'ava';
import { hostAsBefore } from '../helpers/cleanup';
import fs from 'node:fs';
import { Berthd, runCli, waitFor } from '../helpers/berthd';
import { ensureTestImage, runContainer, removeTestContainers, createTestNetwork, removeTestNetwork, docker } from '../helpers/docker';
import { probeFromHost, tags } from '../helpers/probe';

const SUITE = 'labels';
const d = new Berthd({ name: 'labels', serviceCidr: '10.96.0.0/16' });

test.after.always(async () => {
  await removeTestContainers(SUITE);
  await removeTestNetwork('bt-lab-net').catch(() => undefined);
  await d.cleanup();
});

// The host-as-before check (after the cleanup hooks above, before the setup hooks below).
hostAsBefore(test);

test.before(async () => {
  await removeTestContainers(SUITE);
  await ensureTestImage();
  await d.start();
});

const echo = (tag: string) => ['berth-tcp-echo', '8080', '--tag', tag];

async function labelError(container: string, label: string): Promise<{ container: string; label: string; error: string }> {
  return waitFor(`label error for ${container} ${label}`, async () => (await d.status()).labelErrors.find((e) => e.container === container && e.label === label));
}

test('a good service keeps working while bad containers come and go', async (t) => {
  await runContainer({ suite: SUITE, name: 'bt-lab-good', labels: { 'berth.service': 'good', 'berth.ports': '80:8080', 'berth.vip': '10.96.7.7' }, cmd: echo('good') });
  const good = await waitFor('good with a backend', async () => (await d.services()).find((s) => s.name === 'good' && s.backends.length === 1));
  t.is(good.vip, '10.96.7.7');

  // A Docker network inside the VIP range: its gateway and its addresses are in range, yet no VIP.
  const net = await createTestNetwork('bt-lab-net', { subnet: '10.96.250.0/24', suite: SUITE });
  const gateway = net.gateway;
  const subnetAddr = '10.96.250.200';
  const esc = (x: string): string => x.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  // The whole message, so that an unrelated error for the same label cannot pass.
  const cases: [string, Record<string, string>, string, RegExp][] = [
    ['bt-lab-unknown', { 'berth.service': 'u', 'berth.prots': '80' }, 'berth.prots', /^unknown berth label \(known: .*berth\.ports.*\)$/],
    ['bt-lab-badport', { 'berth.service': 'bp', 'berth.ports': '80:99999' }, 'berth.ports', /^"80:99999": port 99999 is not in 1\.\.65535$/],
    ['bt-lab-badproto', { 'berth.service': 'bp2', 'berth.ports': '80/sctp' }, 'berth.ports', /^"80\/sctp": protocol "sctp" is neither tcp nor udp$/],
    ['bt-lab-badname', { 'berth.service': 'Not_A_DNS_Label' }, 'berth.service', /^service name "Not_A_DNS_Label" is not a DNS label: /],
    ['bt-lab-outside', { 'berth.service': 'o', 'berth.ports': '80', 'berth.vip': '192.0.2.1' }, 'berth.vip', /^VIP 192\.0\.2\.1 is outside the service range 10\.96\.0\.0\/16$/],
    ['bt-lab-loop', { 'berth.service': 'lo', 'berth.ports': '80', 'berth.vip': '127.0.0.5' }, 'berth.vip', /^VIP 127\.0\.0\.5 is a loopback address$/],
    ['bt-lab-gw', { 'berth.service': 'gw', 'berth.ports': '80', 'berth.vip': gateway }, 'berth.vip', new RegExp(`^VIP ${esc(gateway)} is the gateway of Docker network bt-lab-net$`)],
    ['bt-lab-subnet', { 'berth.service': 'sn', 'berth.ports': '80', 'berth.vip': subnetAddr }, 'berth.vip', /^VIP 10\.96\.250\.200 is inside Docker network bt-lab-net's subnet 10\.96\.250\.0\/24$/],
    ['bt-lab-stolen', { 'berth.service': 'thief', 'berth.ports': '80', 'berth.vip': '10.96.7.7' }, 'berth.vip', /^VIP 10\.96\.7\.7 is already owned by service good$/],
  ];
  for (const [name, labels, , ] of cases) await runContainer({ suite: SUITE, name, labels, cmd: echo(name) });
  for (const [name, , label, re] of cases) {
    const e = await labelError(name, label);
    t.regex(e.error, re, `${name}: ${e.error}`);
  }
  // None of them became a backend; the thief did not take the VIP.
  const services = await d.services();
  for (const [name] of cases) t.false(services.some((s) => s.backends.some((b) => b.container === name)), `${name} skipped`);
  t.is(services.find((s) => s.name === 'good')!.vip, '10.96.7.7');
  t.false(services.some((s) => s.name === 'thief' && s.vip === '10.96.7.7'));
  // The good service still answers, and the log names container, label and reason.
  t.deepEqual([...tags(await probeFromHost('tcp', '10.96.7.7', 80, 4))], ['good']);
  const log = fs.readFileSync(d.logFile, 'utf8');
  t.regex(log, /container bt-lab-badport, label berth\.ports: \\"80:99999\\": port 99999 is not in 1\.\.65535/, 'the log line (JSON: quotes escaped)');
  t.deepEqual(services.find((s) => s.name === 'good')!.errors, [], 'the good service carries no error of the others');
});

test('two containers of one service disagreeing: the later is skipped, the first keeps serving', async (t) => {
  await runContainer({ suite: SUITE, name: 'bt-lab-agree-1', labels: { 'berth.service': 'agree', 'berth.ports': '80:8080' }, cmd: echo('agree-1') });
  await waitFor('agree with 1 backend', async () => (await d.services()).find((s) => s.name === 'agree' && s.backends.length === 1));
  await runContainer({ suite: SUITE, name: 'bt-lab-agree-2', labels: { 'berth.service': 'agree', 'berth.ports': '81:8080' }, cmd: echo('agree-2') });
  const e = await labelError('bt-lab-agree-2', 'berth.ports');
  t.regex(e.error, /^containers of service agree disagree on .*: this container has .*, the earlier container bt-lab-agree-1 has /);
  const agree = (await d.services()).find((s) => s.name === 'agree')!;
  t.deepEqual(agree.backends.map((b) => b.container), ['bt-lab-agree-1']);
  t.deepEqual(agree.ports, [{ port: 80, protocol: 'tcp', targetPort: 8080 }]);
});

test('fixing a label (new container) clears its error', async (t) => {
  await runContainer({ suite: SUITE, name: 'bt-lab-fixme', labels: { 'berth.service': 'fixme', 'berth.ports': 'eighty' }, cmd: echo('fixme') });
  await labelError('bt-lab-fixme', 'berth.ports');
  await docker.getContainer('bt-lab-fixme').remove({ force: true });
  await runContainer({ suite: SUITE, name: 'bt-lab-fixme', labels: { 'berth.service': 'fixme', 'berth.ports': '80:8080' }, cmd: echo('fixme') });
  await waitFor('fixme served', async () => (await d.services()).find((s) => s.name === 'fixme' && s.backends.length === 1));
  t.false((await d.status()).labelErrors.some((e) => e.container === 'bt-lab-fixme'));
});

test('an error of the service itself is shown in `berth services` on that service (IPv6 range exhausted: IPv4 VIP only)', async (t) => {
  // A berthd of this test's own with room for two IPv6 VIPs: the third service gets an IPv4 VIP,
  // no IPv6 one, and says why on the service (not as a label error: no label is wrong).
  // No DNS VIP6: the /126 has no room for the default ::a, and the test is about service VIPs.
  const small = new Berthd({ name: 'labels6', serviceCidr: '10.97.0.0/24', serviceCidr6: 'fd00:97::/126', extraArgs: ['--dns-vip6', 'off'] });
  // Any other labelled container would be a service of this berthd too and could take the two.
  await removeTestContainers(SUITE);
  t.teardown(() => small.cleanup());
  await small.start();
  const names = ['six-a', 'six-b', 'six-c'];
  for (const n of names) {
    await runContainer({ suite: SUITE, name: `bt-lab-${n}`, labels: { 'berth.service': n, 'berth.ports': '80:8080' }, cmd: echo(n) });
    await waitFor(`${n} listed`, async () => (await small.service(n))?.backends.length === 1);
  }
  const services = (await small.services()).filter((s) => names.includes(s.name));
  // Two of the three got one of the two IPv6 VIPs; the other one says why it has none.
  const without = services.filter((s) => s.vip6 === null);
  t.is(without.length, 1, JSON.stringify(services.map((s) => [s.name, s.vip, s.vip6, s.errors])));
  const c = without[0];
  t.regex(c.vip, /^10\.97\.0\.\d+$/);
  t.deepEqual(c.errors, ['no free VIP left in the service range fd00:97::/126']);
  for (const s of services.filter((x) => x !== c)) t.deepEqual(s.errors, [], `${s.name} has its IPv6 VIP ${s.vip6}`);
  t.deepEqual((await small.status()).labelErrors, [], 'no label is wrong');
  const cli = await runCli(['services', '--socket', small.socket]);
  t.is(cli.code, 0, cli.stderr);
  t.true(cli.stdout.trimEnd().endsWith(`\nerrors:\n  ${c.name}: no free VIP left in the service range fd00:97::/126`), cli.stdout);
  t.deepEqual([...tags(await probeFromHost('tcp', c.vip, 80, 4))], [c.name], 'served on its IPv4 VIP');
});
