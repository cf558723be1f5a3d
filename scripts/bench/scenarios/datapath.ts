/**
 * Scenario 1, the datapath: one backend container running `berth-bench serve`, one client
 * process on the host (its root cgroup, where berth's socket hooks run), and these ways from the
 * client to the backend, measured interleaved (D S1 T1 P S1k T1k ... each round):
 *   D      straight to the container's IP: the physical limit
 *   S(N)   the VIP through berth's socket LB with N services in the maps (the Datapath class,
 *          opened by the bench with pins, run dir and VIP range of its own)
 *   T(N)   iptables DNAT in nat OUTPUT with N services' rules, the target's last (kube-proxy)
 *   P      Docker's userland proxy (127.0.0.1:port published → docker-proxy → container)
 * and three transaction kinds: crr (a connection per request), rr (a kept connection), udp.
 */
import fs from 'node:fs';
import type { DatapathApi, DatapathOptions } from '../../../src/datapath/types';
import type { Service } from '../../../src/model/types';
import { cleanup } from '../lib/cleanup';
import { containerIp, removeContainer, runContainer } from '../lib/docker';
import { IptablesBaseline } from '../lib/iptables';
import { loadgen, type LoadResult, type Mode } from '../lib/loadgen';
import { loadDatapath, silentLogger, syntheticServices } from '../lib/berth';
import { NAMES, NotRun, RANGES, cidrBase, ipv4Add, log, nowMs, run, sleep } from '../lib/util';

export interface DatapathConfig {
  /** CPU the client, the server and docker-proxy are pinned to (null: not pinned). */
  cpu: number | null;
  rounds: number;
  seconds: number;
  warmupSeconds: number;
  levels: number[];
  modes: Mode[];
}

export interface VariantResult {
  id: string;
  kind: 'D' | 'S' | 'T' | 'P';
  n: number | null;
  label: string;
  status: 'ok' | 'not run' | 'failed';
  reason: string | null;
  /** Per round: ms to put the variant in place (map sync, iptables-restore); 0 when nothing changed. */
  prepareMs: number[];
  /** Per mode, one result per round (in round order). */
  runs: Partial<Record<Mode, LoadResult[]>>;
  /** Per mode, the D result of the same round, for per-round ratios. */
  direct: Partial<Record<Mode, (LoadResult | null)[]>>;
  errors: string[];
}

export interface DatapathReport {
  status: 'ok' | 'not run' | 'failed';
  reason: string | null;
  backend: string | null;
  otherSocketHooks: string[];
  /** Average run time of berth's hooks (kernel.bpf_stats_enabled, a separate short run after the rounds). */
  hookCost: { hook: string; mode: Mode; runs: number; avgNs: number }[];
  variants: VariantResult[];
}

const TCP = 8080;
const UDP = 8081;
const PUB_TCP = 29180;
const PUB_UDP = 29181;
/** the S target's VIP and ports (the synthetic services use +2...). */
const S_VIP = ipv4Add(cidrBase(RANGES.sock), 1);
const VIP_TCP = 80;
const VIP_UDP = 81;

export const DP_OPTS = (): DatapathOptions => ({
  pinDir: '/sys/fs/bpf/berth-bench-dp',
  cgroupRoot: 'auto',
  hostProc: '/proc',
  runDir: '/run/berth-bench-dp',
  serviceCidr: RANGES.sock,
  serviceCidr6: RANGES.sock6,
  logger: silentLogger(),
});

function targetService(backendIp: string): Service {
  return {
    name: 'bench-target',
    kind: 'service',
    vip: S_VIP,
    vip6: null,
    ports: [
      { port: VIP_TCP, protocol: 'tcp', targetPort: TCP },
      { port: VIP_UDP, protocol: 'udp', targetPort: UDP },
    ],
    backends: [{ container: `${NAMES.containerPrefix}srv`, id: 'f'.repeat(64), ip: backendIp, ip6: null }],
    routes: [],
    ingress: null,
    errors: [],
  };
}

/** Socket-hook programs attached at the root cgroup that are not ours (another berthd on the machine). */
async function otherRootHooks(): Promise<string[]> {
  const r = await run('bpftool', ['-j', 'cgroup', 'tree']);
  if (r.code !== 0) return [];
  try {
    const tree = JSON.parse(r.stdout) as { cgroup: string; programs: { attach_type: string; name: string }[] }[];
    const root = tree.find((c) => c.cgroup === '/sys/fs/cgroup/unified' || c.cgroup === '/sys/fs/cgroup');
    return (root?.programs ?? []).map((p) => `${p.attach_type}:${p.name}`);
  } catch {
    return [];
  }
}

/** Before any traffic to the S VIP: it must not be routable (berth's unreachable route, or ours). */
async function ensureUnreachable(range: string, vip: string): Promise<void> {
  let r = await run('ip', ['-o', 'route', 'get', vip]);
  if (r.code === 0) {
    // The datapath did not install a route for its range (yet): add our own and remove it later.
    await run('ip', ['route', 'add', 'unreachable', range]);
    cleanup.add(`route unreachable ${range}`, () => run('ip', ['route', 'del', 'unreachable', range]));
    r = await run('ip', ['-o', 'route', 'get', vip]);
  }
  if (r.code === 0) throw new Error(`refusing to send traffic: ${vip} is routable (${r.stdout.trim()})`);
}

async function progStats(pin: string): Promise<{ runs: number; ns: number }> {
  const link = JSON.parse((await run('bpftool', ['-j', 'link', 'show', 'pinned', pin])).stdout) as { prog_id: number };
  const prog = JSON.parse((await run('bpftool', ['-j', 'prog', 'show', 'id', String(link.prog_id)])).stdout) as { run_cnt?: number; run_time_ns?: number };
  return { runs: prog.run_cnt ?? 0, ns: prog.run_time_ns ?? 0 };
}

/**
 * What one run of berth's hooks costs on average, from the kernel's own BPF run-time statistics:
 * enabled only for this short separate run (they add two clock reads to every BPF program on the
 * host), then restored.
 */
async function hookCost(pinDir: string, cpu: number | null): Promise<DatapathReport['hookCost']> {
  const before = (await run('sysctl', ['-n', 'kernel.bpf_stats_enabled'])).stdout.trim() || '0';
  await run('sysctl', ['-qw', 'kernel.bpf_stats_enabled=1']);
  const out: DatapathReport['hookCost'] = [];
  try {
    // flow_record: crossNetwork allow's cgroup_skb/egress recorder (bpf/flows.bpf.c), the one
    // per-PACKET program berth adds; through S every packet is a balanced one (its full path).
    const flows = fs.existsSync(`${pinDir}/link_berth_flow_record`) ? ['flow_record'] : [];
    const steps: [string, Mode, string[]][] = [
      ['', 'crr', ['connect', ...flows]],
      ['', 'udpu', ['sendmsg', 'recvmsg', ...flows]],
    ];
    for (const [state, mode, hooks] of steps) {
      const pins = hooks.map((h) => (h === 'flow_record' ? `${pinDir}/link_berth_flow_record` : `${pinDir}/link_berth_sock4_${h}`));
      const a = await Promise.all(pins.map(progStats));
      await loadgen(mode, S_VIP, mode === 'crr' ? VIP_TCP : VIP_UDP, { seconds: 1, cpu: cpu ?? undefined });
      const b = await Promise.all(pins.map(progStats));
      hooks.forEach((h, i) => {
        const runs = b[i].runs - a[i].runs;
        out.push({ hook: `${h === 'flow_record' ? 'flow_record (per packet)' : `sock4_${h}`}${state ? `, ${state}` : ''}`, mode, runs, avgNs: runs ? (b[i].ns - a[i].ns) / runs : NaN });
      });
    }
  } finally {
    await run('sysctl', ['-qw', `kernel.bpf_stats_enabled=${before}`]);
  }
  return out;
}

export async function datapathScenario(cfg: DatapathConfig): Promise<DatapathReport> {
  const report: DatapathReport = { status: 'ok', reason: null, backend: null, otherSocketHooks: [], hookCost: [], variants: [] };
  const mark = cleanup.mark;
  let dp: DatapathApi | null = null;
  try {
    const srv = `${NAMES.containerPrefix}srv`;
    const alive = async (addr: string) => loadgen('crr', addr, TCP, { seconds: 0.05, maxCount: 1 }).then(() => true, () => false);
    /** Start the backend container; resolves its IP once it answers. */
    const startBackend = async (): Promise<string> => {
      await runContainer({
        name: srv,
        publish: [`127.0.0.1:${PUB_TCP}:${TCP}`, `127.0.0.1:${PUB_UDP}:${UDP}/udp`],
        cpus: cfg.cpu === null ? undefined : String(cfg.cpu),
        cmd: ['/bench/berth-bench', 'serve', '--tcp', String(TCP), '--udp', String(UDP), '--tag', 'srv'],
      });
      const addr = await containerIp(srv);
      for (let i = 0; !(await alive(addr)); i++) {
        if (i > 50) throw new Error(`backend ${srv} at ${addr} does not answer`);
        await sleep(100);
      }
      return addr;
    };
    let ip = await startBackend();
    report.backend = ip;

    const mk = (id: string, kind: VariantResult['kind'], n: number | null, label: string): VariantResult => ({
      id, kind, n, label, status: 'ok', reason: null, prepareMs: [], runs: {}, direct: {}, errors: [],
    });
    const D = mk('D', 'D', null, 'direct to the container IP');
    const P = mk('P', 'P', null, 'docker-proxy (127.0.0.1 publish)');
    const S = cfg.levels.map((n) => mk(`S(${n})`, 'S', n, `berth socket LB, ${n} services`));
    const T = cfg.levels.map((n) => mk(`T(${n})`, 'T', n, `iptables DNAT, ${n} services`));
    const order: VariantResult[] = [D];
    cfg.levels.forEach((_, i) => {
      order.push(S[i], T[i]);
      if (i === 0) order.push(P);
    });
    report.variants = [D, ...S, ...T, P];

    // Hooks someone else attached at the root cgroup (another berthd under test) run for every
    // variant alike; recorded so that the numbers can be read with that in mind.
    report.otherSocketHooks = await otherRootHooks();

    // S: the Datapath class, with pins and a VIP range of the bench's own.
    try {
      const Datapath = loadDatapath();
      const opts = DP_OPTS();
      await Datapath.cleanup(opts).catch(() => undefined);
      dp = await Datapath.open(opts);
      cleanup.add('bench datapath', async () => {
        dp?.close();
        dp = null;
        await Datapath.cleanup(DP_OPTS());
      });
      await ensureUnreachable(RANGES.sock, S_VIP);
    } catch (e) {
      for (const v of S) Object.assign(v, { status: 'not run', reason: e instanceof NotRun ? e.message : `datapath: ${(e as Error).message}` });
    }

    // T: iptables baseline.
    const ipt = new IptablesBaseline(ip, VIP_TCP, VIP_UDP);
    try {
      await ipt.setup();
    } catch (e) {
      for (const v of T) Object.assign(v, { status: 'not run', reason: `iptables: ${(e as Error).message}` });
    }

    // P: docker-proxy must be what listens on the published port.
    const pinProxies = async (): Promise<boolean> => {
      const ps = (await run('ps', ['-eo', 'pid=,args='])).stdout.split('\n');
      const proxies = ps.filter((l) => l.includes('docker-proxy') && (l.includes(`-host-port ${PUB_TCP} `) || l.includes(`-host-port ${PUB_UDP} `)));
      // Same CPU as client and server, like every other variant (all its threads).
      if (cfg.cpu !== null) for (const l of proxies) await run('taskset', ['-a', '-cp', String(cfg.cpu), l.trim().split(/\s+/)[0]]);
      return proxies.length >= 2;
    };
    if (!(await pinProxies())) {
      Object.assign(P, { status: 'not run', reason: 'no docker-proxy for the published ports (userland-proxy disabled?)' });
    }

    let target = targetService(ip);
    const synthetic = syntheticServices(Math.max(...cfg.levels) - 1, RANGES.sock);
    let sN = -1;
    const where = (v: VariantResult, mode: Mode): [string, number] => {
      const udp = mode === 'udp' || mode === 'udpu';
      switch (v.kind) {
        case 'D': return [ip, udp ? UDP : TCP];
        case 'S': return [S_VIP, udp ? VIP_UDP : VIP_TCP];
        case 'T': return [ipt.vip, udp ? VIP_UDP : VIP_TCP];
        case 'P': return ['127.0.0.1', udp ? PUB_UDP : PUB_TCP];
      }
    };
    const prepare = async (v: VariantResult): Promise<void> => {
      if (v.kind === 'S' && v.n !== sN) {
        const res = await dp!.sync([target, ...synthetic.slice(0, v.n! - 1)], { prune: true });
        if (res.errors.length) throw new Error(`sync of ${v.n} services: ${res.errors.length} errors, first: ${res.errors[0].service}: ${res.errors[0].error}`);
        sN = v.n!;
        await ensureUnreachable(RANGES.sock, S_VIP);
      }
      if (v.kind === 'T') {
        await ipt.setServices(v.n!);
        await ipt.assertContained();
      }
    };

    // A round whose D fails (the backend died: someone restarted dockerd on this shared machine)
    // is not counted: the backend is recreated and the round repeated, at most twice in a run.
    let repeats = 0;
    for (let round = 0; round < cfg.rounds; ) {
      log(`datapath round ${round + 1}/${cfg.rounds}`);
      if (!(await alive(ip))) {
        log('the backend container does not answer (dockerd restarted?): recreating it');
        await removeContainer(srv);
        ip = await startBackend();
        target = targetService(ip);
        sN = -1;
        if (T[0].status === 'ok') await ipt.setBackend(ip);
        await pinProxies();
      }
      const direct: Partial<Record<Mode, LoadResult>> = {};
      try {
        for (const mode of cfg.modes) {
          const [addr, port] = where(D, mode);
          if (cfg.warmupSeconds > 0) await loadgen(mode, addr, port, { seconds: cfg.warmupSeconds, cpu: cfg.cpu ?? undefined }).catch(() => undefined);
          direct[mode] = await loadgen(mode, addr, port, { seconds: cfg.seconds, cpu: cfg.cpu ?? undefined });
        }
      } catch (e) {
        log(`D failed in round ${round + 1}: ${(e as Error).message}`);
        if (++repeats > 2) throw new Error(`D failed in ${repeats} rounds; last: ${(e as Error).message}`);
        continue;
      }
      for (const mode of cfg.modes) {
        (D.runs[mode] ??= []).push(direct[mode]!);
        (D.direct[mode] ??= []).push(direct[mode]!);
      }
      D.prepareMs.push(0);
      for (const v of order) {
        if (v.status !== 'ok' || v.kind === 'D') continue;
        try {
          const t0 = nowMs();
          await prepare(v);
          v.prepareMs.push(Math.round(nowMs() - t0));
          for (const mode of cfg.modes) {
            const [addr, port] = where(v, mode);
            const cpu = cfg.cpu ?? undefined;
            if (cfg.warmupSeconds > 0) await loadgen(mode, addr, port, { seconds: cfg.warmupSeconds, cpu }).catch(() => undefined);
            const res = await loadgen(mode, addr, port, { seconds: cfg.seconds, cpu });
            (v.runs[mode] ??= []).push(res);
            (v.direct[mode] ??= []).push(direct[mode] ?? null);
          }
        } catch (e) {
          const msg = (e as Error).message;
          v.errors.push(`round ${round + 1}: ${msg}`);
          log(`${v.id}: ${msg}`);
          // A variant that failed three times is dropped from later rounds (the run goes on without it).
          if (v.errors.length >= 3) Object.assign(v, { status: 'failed', reason: msg });
        }
      }
      round++;
    }
    if (report.variants.every((v) => v.status !== 'ok')) Object.assign(report, { status: 'failed', reason: 'no variant ran' });
    if (dp && S[0].status === 'ok') {
      try {
        report.hookCost = await hookCost(DP_OPTS().pinDir, cfg.cpu);
      } catch (e) {
        log(`hook cost: ${(e as Error).message}`);
      }
    }
  } catch (e) {
    Object.assign(report, { status: e instanceof NotRun ? 'not run' : 'failed', reason: (e as Error).message });
  } finally {
    await cleanup.unwindTo(mark);
  }
  return report;
}
