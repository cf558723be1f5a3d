/**
 * Drive scripts/vm from the VM tests: boot a guest, run shell in it, copy its logs out, tear it
 * down. Every call is bounded in time; a failure throws with the command, exit code and output
 * (and scripts/vm itself prints the failing step with the guest's console tail).
 */
import fs from 'node:fs';
import path from 'node:path';
import { run, ExecResult } from '../../src/util/exec';

/** The checkout (this file runs from dist/test/vm/). */
export const REPO = path.resolve(__dirname, '../../..');
export const VM = path.join(REPO, 'scripts/vm');
/** Where guests' console logs and journals are copied when a test fails (CI keeps build/). */
export const LOG_DIR = path.join(REPO, 'build/vm-logs');

export interface UpOptions {
  kernel?: '5.10' | '6.1' | '6.12';
  segment?: string;
  address?: string;
  mem?: string;
  cpus?: number;
  /** How long `up` may take to boot (scripts/vm --timeout; its default is 420 s). */
  bootTimeoutS?: number;
}

/** Boot guest `name` (returns when systemd in it is `running`); throws with scripts/vm's message. */
export async function vmUp(name: string, opts: UpOptions = {}): Promise<string> {
  const args = ['up', name];
  if (opts.kernel) args.push('--kernel', opts.kernel);
  if (opts.segment) args.push('--segment', opts.segment, '--address', opts.address ?? '');
  if (opts.mem) args.push('--mem', opts.mem);
  if (opts.cpus) args.push('--cpus', String(opts.cpus));
  if (opts.bootTimeoutS) args.push('--timeout', String(opts.bootTimeoutS));
  const r = await run(VM, args, { timeoutMs: 30 * 60000 });
  if (r.code !== 0) throw new Error(`scripts/vm ${args.join(' ')} failed (exit ${r.code}):\n${r.stderr.slice(-4000)}`);
  return r.stderr.trim().split('\n').filter((l) => l.startsWith('[vm] up ')).pop() ?? '';
}

/** Run `bash -c script` as root in guest `name`: exit code, stdout, stderr (never throws). */
export async function vmSh(name: string, script: string, timeoutMs = 300000): Promise<ExecResult> {
  return run(VM, ['exec', name, '--timeout', String(Math.ceil(timeoutMs / 1000)), '--', 'bash', '-c', script], { timeoutMs: timeoutMs + 30000 });
}

/** Like vmSh, but a non-zero exit throws with the script and its output. Returns stdout. */
export async function vmOk(name: string, script: string, timeoutMs = 300000): Promise<string> {
  const r = await vmSh(name, script, timeoutMs);
  if (r.code !== 0) throw new Error(`in guest ${name}: exit ${r.code}: ${script}\n--- stdout\n${r.stdout.slice(-3000)}\n--- stderr\n${r.stderr.slice(-3000)}`);
  return r.stdout;
}

/** Parse the JSON that `script` prints in the guest. */
export async function vmJson<T>(name: string, script: string, timeoutMs = 120000): Promise<T> {
  const out = await vmOk(name, script, timeoutMs);
  try {
    return JSON.parse(out) as T;
  } catch {
    throw new Error(`in guest ${name}: not JSON from ${script}: ${out.slice(0, 2000)}`);
  }
}

/** Copy the guest's console log and journal to build/vm-logs/ (best effort, bounded). */
export async function vmLogs(name: string): Promise<void> {
  fs.mkdirSync(LOG_DIR, { recursive: true });
  await run(VM, ['logs', name, LOG_DIR], { timeoutMs: 240000 });
}

/** Stop guest `name` (or every guest with '--all') and remove what it left on the host. */
export async function vmDown(name: string): Promise<void> {
  const r = await run(VM, ['down', name], { timeoutMs: 120000 });
  if (r.code !== 0) throw new Error(`scripts/vm down ${name}: ${r.stderr}`);
}

/** Wait until `check` returns true, polling; throws naming `what` after timeoutMs. */
export async function until(what: string, check: () => Promise<boolean>, timeoutMs: number, everyMs = 1000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Shell (for the guest) that builds the test image with the checkout's own helper
 * (test/helpers/images.ts, compiled to /berth/dist) and prints its tag.
 */
export const ENSURE_TEST_IMAGE = "node -e \"require('/berth/dist/test/helpers/images.js').ensureTestImage().then((t) => console.log(t), (e) => { console.error(e); process.exit(1); })\"";

/**
 * Shell (for the guest) that prints what berth may touch, normalised for comparing before and
 * after: BPF cgroup attachments, iptables and nft rules (no counters), ip rules and routes, and
 * the names under /run, /var/lib and /etc (Docker's, journald's and systemd's own bookkeeping
 * left out: they change by themselves).
 */
export const HOST_STATE = [
  "echo '## bpftool cgroup tree'; bpftool cgroup tree /sys/fs/cgroup | grep -v '^CgroupPath' | awk '{$1=\"\"; print}' | sort",
  "echo '## iptables-save'; iptables-save | grep -v '^#' | sed 's/\\[[0-9]*:[0-9]*\\]//' | grep -v -- '-j DOCKER\\|DOCKER' | sort",
  "echo '## nft'; nft list ruleset | grep -ci berth || true",
  "echo '## ip rule'; ip rule; ip -6 rule",
  "echo '## routes'; ip route show table all | grep -v 'docker0\\|veth\\|br-' | sort",
  "echo '## files'; find /run /var/lib /etc -xdev -maxdepth 3 2>/dev/null | grep -v '^/run/docker\\|^/run/containerd\\|^/var/lib/docker\\|^/var/lib/containerd\\|^/run/systemd\\|^/var/lib/systemd\\|^/run/user\\|^/run/udev\\|^/run/log\\|^/run/netns\\|^/run/xtables.lock\\|^/run/credentials\\|^/run/sshd' | sort",
].join('; ');
