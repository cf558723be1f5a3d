/**
 * Containers and networks for integration tests, on the machine's real Docker engine.
 *
 * Every container gets the label `berth-test=<suite>` and every network `berth-test=<suite>` plus
 * a `bt-` name, so a suite removes exactly what it created (others test on the same machine at
 * the same time) and a crashed run's leftovers are recognisable:
 *
 *   test.before(async () => { await removeTestContainers(SUITE); await ensureTestImage(); });
 *   test.after.always(async () => { await removeTestContainers(SUITE); await removeTestNetwork(NET); });
 *   const web = await runContainer({ suite: SUITE, name: 'bt-x-web', labels: { 'berth.service': 'web' },
 *                                    cmd: ['berth-tcp-echo', '8080', '--tag', 'web'], waitFor: { tcp: 8080 } });
 *   const out = await execIn(web.id, ['berth-probe', 'tcp', '127.0.0.1', '8080']);
 */
import Dockerode from 'dockerode';
import { run, type ExecResult } from '../../src/util/exec';
import { parseDockerHost, DEFAULT_DOCKER_HOST } from '../../src/docker/host';
import { ensureTestImage } from './images';
import { hostV4Prefixes, nameHash, v4Overlap } from './addr';

export { ensureTestImage, buildTestBinaries, testBin, TEST_IMAGE, TEST_BIN_DIR } from './images';

/**
 * dockerode, with one loosening for tests: a network's inspect result is `any`. @types/dockerode
 * marks every IPAM field optional, yet tests read `IPAM.Config[0].Gateway` of networks that always
 * have one (bridge, their own), and a wrong guess fails the test loudly anyway.
 */
export type TestDocker = Omit<Dockerode, 'getNetwork'> & {
  getNetwork(id: string): Omit<Dockerode.Network, 'inspect'> & { inspect(): Promise<any> }; // eslint-disable-line @typescript-eslint/no-explicit-any
};

/** The engine the tests use: $DOCKER_HOST or the default socket (same rule as berthd's dockerHost). */
export const docker: TestDocker = new Dockerode(parseDockerHost(process.env.DOCKER_HOST || DEFAULT_DOCKER_HOST));

/** The label that marks everything a test created; its value is the suite name. */
export const TEST_LABEL = 'berth-test';

export interface HealthcheckOptions {
  /** Docker's form: ['CMD', 'test', '-f', '/tmp/ok'] or ['CMD-SHELL', '…']. */
  test: string[];
  intervalMs?: number;
  timeoutMs?: number;
  retries?: number;
  startPeriodMs?: number;
}

export interface RunContainerOptions {
  /** Value of the berth-test label; removeTestContainers(suite) removes it. */
  suite: string;
  /** Container name (use a `bt-<suite>-…` prefix); a leftover of the same suite is replaced. */
  name?: string;
  labels?: Record<string, string>;
  cmd: string[];
  /** Network to attach to (default: Docker's bridge). */
  network?: string;
  healthcheck?: HealthcheckOptions;
  /** Image (default: the test image from ensureTestImage()). */
  image?: string;
  env?: string[];
  /** Ports the image should "expose" (Config.ExposedPorts), e.g. ['8080/tcp', '53/udp']. */
  exposedPorts?: string[];
  stopSignal?: string;
  /** Run tini as PID 1 (so a plain `sleep` exits on SIGTERM at once). */
  init?: boolean;
  privileged?: boolean;
  capAdd?: string[];
  /** DNS servers for the container (docker run --dns). */
  dns?: string[];
  /** Bind mounts, Docker's `src:dst[:ro]` form. */
  binds?: string[];
  /** Wait until these ports answer inside the container (probed with berth-probe from within). */
  waitFor?: { tcp?: number; udp?: number; timeoutMs?: number };
}

export interface RunningContainer {
  id: string;
  name: string;
  /** Address on `network` (or bridge); null when the network has none. */
  ip: string | null;
  ip6: string | null;
}

const ms2ns = (ms: number | undefined): number | undefined => (ms === undefined ? undefined : ms * 1e6);

function statusCode(e: unknown): number | undefined {
  return (e as { statusCode?: number } | null)?.statusCode;
}

async function removeIfOurs(name: string, suite: string): Promise<void> {
  try {
    const info = await docker.getContainer(name).inspect();
    if (info.Config.Labels?.[TEST_LABEL] !== suite) {
      throw new Error(`container ${name} exists and is not this suite's (label ${TEST_LABEL}=${info.Config.Labels?.[TEST_LABEL] ?? 'none'}); not touching it`);
    }
    await docker.getContainer(name).remove({ force: true, v: true });
  } catch (e) {
    if (statusCode(e) !== 404) throw e;
  }
}

/** Create and start a labelled test container; resolves once it runs (and its waitFor ports answer). */
export async function runContainer(o: RunContainerOptions): Promise<RunningContainer> {
  const image = o.image ?? (await ensureTestImage());
  if (o.name) await removeIfOurs(o.name, o.suite);
  const hc = o.healthcheck;
  const ctr = await docker.createContainer({
    Image: image,
    name: o.name,
    Cmd: o.cmd,
    Env: o.env,
    Labels: { ...(o.labels ?? {}), [TEST_LABEL]: o.suite },
    ExposedPorts: o.exposedPorts ? Object.fromEntries(o.exposedPorts.map((p) => [p.includes('/') ? p : `${p}/tcp`, {}])) : undefined,
    StopSignal: o.stopSignal,
    Healthcheck: hc
      ? { Test: hc.test, Interval: ms2ns(hc.intervalMs), Timeout: ms2ns(hc.timeoutMs ?? 2000), Retries: hc.retries, StartPeriod: ms2ns(hc.startPeriodMs) }
      : undefined,
    HostConfig: { NetworkMode: o.network ?? 'bridge', Init: o.init, Privileged: o.privileged, CapAdd: o.capAdd, Dns: o.dns, Binds: o.binds },
  });
  await ctr.start();
  const info = await ctr.inspect();
  if (!info.State.Running) {
    const logs = (await ctr.logs({ stdout: true, stderr: true, tail: 20 })).toString();
    throw new Error(`container ${o.name ?? info.Id.slice(0, 12)} exited at once (code ${info.State.ExitCode}): ${logs}`);
  }
  const net = info.NetworkSettings.Networks[o.network ?? 'bridge'];
  const result: RunningContainer = {
    id: info.Id,
    name: info.Name.replace(/^\//, ''),
    ip: net?.IPAddress || null,
    ip6: net?.GlobalIPv6Address || null,
  };
  if (net?.IPv6Gateway) await waitIpv6GatewayUsable(net.IPv6Gateway);
  if (o.waitFor?.tcp) await waitForPort(result.id, 'tcp', o.waitFor.tcp, o.waitFor.timeoutMs);
  if (o.waitFor?.udp) await waitForPort(result.id, 'udp', o.waitFor.udp, o.waitFor.timeoutMs);
  return result;
}

/**
 * Wait until the host's IPv6 gateway address of a Docker network has left duplicate address
 * detection (RFC 4862 s5.4). A new network's bridge has no carrier until its first container
 * attaches, so its gateway address stays `tentative` until then and ~1.5 s after (measured here:
 * dad_transmits=1, optimistic_dad=0); meanwhile the host answers no neighbor solicitation for
 * it, and a container's first packet off its network waits ~1 s for its gateway. That delay is
 * Docker's and the kernel's, not berth's: tests that time a container's first connect wait it out
 * here. Throws when DAD failed or the address is still tentative after `timeoutMs`.
 */
export async function waitIpv6GatewayUsable(gateway6: string, timeoutMs = 10000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let line = '';
  for (;;) {
    const r = await run('ip', ['-6', '-o', 'addr', 'show'], { timeoutMs: 5000 });
    line = r.stdout.split('\n').find((l) => l.includes(` inet6 ${gateway6}/`)) ?? '';
    if (/\bdadfailed\b/.test(line)) throw new Error(`IPv6 gateway ${gateway6}: duplicate address detection failed (${line.trim()})`);
    if (line && !/\btentative\b/.test(line)) return;
    if (Date.now() > deadline) throw new Error(`IPv6 gateway ${gateway6} still not usable after ${timeoutMs} ms: ${line.trim() || 'not on any host interface'}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

/** Poll (bounded) until a server inside the container answers on its own loopback. */
export async function waitForPort(id: string, proto: 'tcp' | 'udp', port: number, timeoutMs = 10000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    // TCP: connect only (an httpd answers nothing until it gets a request); UDP: an echo must come back.
    const send = proto === 'tcp' ? '' : 'ready?';
    const r = await execInFull(id, ['berth-probe', proto, '127.0.0.1', String(port), '--send', send, '--timeout-ms', '500'], { timeoutMs: 5000 });
    if (r.code === 0) return;
    last = r.stdout + r.stderr;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`${proto} port ${port} in ${id.slice(0, 12)} did not answer within ${timeoutMs} ms: ${last}`);
}

/** Remove (force) every container labelled berth-test=<suite>, running or not. Returns how many. */
export async function removeTestContainers(suite: string): Promise<number> {
  const list = await docker.listContainers({ all: true, filters: { label: [`${TEST_LABEL}=${suite}`] } });
  await Promise.all(list.map(async (c) => {
    try {
      await docker.getContainer(c.Id).remove({ force: true, v: true });
    } catch (e) {
      // Already gone (another teardown won the race) or being removed: both fine.
      if (statusCode(e) !== 404 && statusCode(e) !== 409) throw e;
    }
  }));
  return list.length;
}

/** `docker exec` with the full result; never throws for the command's own exit code. */
export function execInFull(id: string, argv: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<ExecResult> {
  return run('docker', ['exec', ...(opts.input !== undefined ? ['-i'] : []), id, ...argv], { timeoutMs: opts.timeoutMs ?? 30000, input: opts.input });
}

/**
 * Run argv in the container and return its stdout. Throws only when the exec itself failed
 * (docker's 125: no such container / not running, 126/127: not executable / not found), so
 * tools that report failures on stdout with a non-zero exit (berth-probe) can be read as usual.
 */
export async function execIn(id: string, argv: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<string> {
  const r = await execInFull(id, argv, opts);
  if (r.code >= 125 && r.code <= 127) throw new Error(`docker exec ${id.slice(0, 12)} ${argv.join(' ')}: exit ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

export interface TestNetwork {
  id: string;
  name: string;
  subnet: string;
  gateway: string;
  subnet6: string | null;
  gateway6: string | null;
}

export interface TestNetworkOptions {
  /** Enable IPv6 with a ULA /64 of the test's own (fd00:b7e5:0:<n>::/64). */
  ipv6?: boolean;
  /** IPv4 subnet (default: a free 172.30.<n>.0/24). */
  subnet?: string;
  /** IPv6 subnet (default: fd00:b7e5:0:<n>::/64, with the same n). */
  subnet6?: string;
  /** berth-test label value (default: the network name). */
  suite?: string;
}

async function usedV4(): Promise<string[]> {
  const nets = await docker.listNetworks();
  const used = nets.flatMap((n) => (n.IPAM?.Config ?? []).map((c) => c.Subnet ?? '')).filter((s) => s && !s.includes(':'));
  // Host routes too (a VPN, the VM's own LAN): a test network must never shadow them.
  return [...used, ...(await hostV4Prefixes())];
}

/**
 * Create a bridge network `bt-…` of the test's own, labelled berth-test, optionally IPv6-enabled.
 * Subnets are picked from 172.30.0.0/16 (and fd00:b7e5::/48) by the name's hash, skipping any that
 * overlap Docker's networks or the host's routes; a leftover network of the same name is replaced.
 */
export async function createTestNetwork(name: string, o: TestNetworkOptions = {}): Promise<TestNetwork> {
  if (!name.startsWith('bt-')) throw new Error(`test network names start with bt- (got ${name})`);
  await removeTestNetwork(name);
  const start = nameHash(name) % 256;
  let lastErr: unknown = null;
  for (let i = 0; i < 32; i++) {
    const n = (start + i) % 256;
    const subnet = o.subnet ?? `172.30.${n}.0/24`;
    const subnet6 = o.ipv6 ? o.subnet6 ?? `fd00:b7e5:0:${n.toString(16)}::/64` : null;
    if (!o.subnet && (await usedV4()).some((u) => v4Overlap(u, subnet))) continue;
    const gateway = subnet.replace(/\.\d+\/\d+$/, '.1');
    const gateway6 = subnet6 ? subnet6.replace(/::\/\d+$/, '::1') : null;
    try {
      const net = await docker.createNetwork({
        Name: name,
        Driver: 'bridge',
        CheckDuplicate: true,
        EnableIPv6: !!subnet6,
        Labels: { [TEST_LABEL]: o.suite ?? name },
        IPAM: { Driver: 'default', Config: [{ Subnet: subnet, Gateway: gateway }, ...(subnet6 ? [{ Subnet: subnet6, Gateway: gateway6! }] : [])] },
      });
      return { id: net.id, name, subnet, gateway, subnet6, gateway6 };
    } catch (e) {
      // Another test took the same pool between our check and the create: try the next one.
      lastErr = e;
      if (o.subnet || !/overlap|in use|already/i.test(String((e as Error).message))) throw e;
    }
  }
  throw new Error(`no free 172.30.x.0/24 for ${name}: ${String(lastErr)}`);
}

/**
 * Remove a test network (disconnecting any containers still on it first). Does nothing when it
 * does not exist; refuses a network without the berth-test label: it is not a test's to delete.
 */
export async function removeTestNetwork(name: string): Promise<void> {
  let info: Dockerode.NetworkInspectInfo;
  try {
    info = (await docker.getNetwork(name).inspect()) as Dockerode.NetworkInspectInfo;
  } catch (e) {
    if (statusCode(e) === 404) return;
    throw e;
  }
  if (!info.Labels?.[TEST_LABEL]) throw new Error(`network ${name} has no ${TEST_LABEL} label; not removing it`);
  for (const id of Object.keys(info.Containers ?? {})) {
    await docker.getNetwork(info.Id).disconnect({ Container: id, Force: true }).catch(() => undefined);
  }
  try {
    await docker.getNetwork(info.Id).remove();
  } catch (e) {
    if (statusCode(e) !== 404) throw e;
  }
}
