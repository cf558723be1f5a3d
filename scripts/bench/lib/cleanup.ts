/**
 * Everything the bench puts on the machine is undone: each setup step registers its undo here
 * right after it succeeded, and the undos run in reverse order at the end, on an error, on
 * Ctrl-C/SIGTERM and when the global time bound fires. sweepLeftovers() removes what an earlier
 * bench run that was killed -9 may have left, by the bench's own names only.
 */
import fs from 'node:fs';
import { NAMES, log, run, sleep } from './util';

type Undo = { what: string; fn: () => Promise<unknown> | unknown };

export class Cleanup {
  private stack: Undo[] = [];
  /** Set once the run is being torn down (signal, time bound): later setups are undone at once. */
  aborting = false;

  add(what: string, fn: () => Promise<unknown> | unknown): void {
    this.stack.push({ what, fn });
    if (this.aborting) void this.unwindTo(0);
  }

  /** Run (and forget) the undos registered since `mark`, newest first. */
  async unwindTo(mark: number): Promise<void> {
    while (this.stack.length > mark) {
      const u = this.stack.pop()!;
      try {
        await u.fn();
      } catch (e) {
        log(`cleanup of ${u.what} failed: ${(e as Error).message}`);
      }
    }
  }

  get mark(): number {
    return this.stack.length;
  }

  runAll(): Promise<void> {
    return this.unwindTo(0);
  }
}

export const cleanup = new Cleanup();

/** Remove containers, netns, links and iptables chains of earlier bench runs (our names only). */
export async function sweepLeftovers(): Promise<string[]> {
  const removed: string[] = [];
  const ids = (await run('docker', ['ps', '-aq', '--filter', `label=${NAMES.label}`])).stdout.split('\n').filter(Boolean);
  if (ids.length) {
    await run('docker', ['rm', '-f', ...ids], { timeoutMs: 60000 });
    removed.push(`${ids.length} container(s)`);
  }
  for (const ns of (await run('ip', ['netns', 'list'])).stdout.split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith(NAMES.netnsPrefix))) {
    await run('ip', ['netns', 'delete', ns]);
    removed.push(`netns ${ns}`);
  }
  for (const l of fs.readdirSync('/sys/class/net').filter((n) => n.startsWith(NAMES.containerPrefix.slice(0, 8)))) {
    await run('ip', ['link', 'delete', l]);
    removed.push(`link ${l}`);
  }
  if (await removeBenchChains()) removed.push('iptables chains');
  return removed;
}

/** Delete the jump rules commented berth-bench from built-in chains, then our chains. */
export async function removeBenchChains(): Promise<boolean> {
  let any = false;
  for (const bin of ['iptables', 'ip6tables']) {
    const save = await run(`${bin}-save`, ['-t', 'nat']);
    if (save.code !== 0) continue;
    const lines = save.stdout.split('\n');
    for (const l of lines) {
      // "-A OUTPUT ... -m comment --comment berth-bench -j BERTH-BENCH-SVC" in a built-in chain.
      const m = /^-A (PREROUTING|OUTPUT|POSTROUTING|INPUT) (.*)$/.exec(l);
      if (m && m[2].includes(`--comment ${NAMES.comment}`) && m[2].includes(`-j ${NAMES.chainPrefix}`)) {
        await run(bin, ['-t', 'nat', '-D', m[1], ...splitRule(m[2])]);
        any = true;
      }
    }
    const chains = lines.filter((l) => l.startsWith(`:${NAMES.chainPrefix}`)).map((l) => l.slice(1).split(' ')[0]);
    for (const c of chains) await run(bin, ['-t', 'nat', '-F', c]);
    for (const c of chains) {
      await run(bin, ['-t', 'nat', '-X', c]);
      any = true;
    }
  }
  return any;
}

/** Split an iptables-save rule body into argv (handles the quoted comments iptables-save prints). */
function splitRule(s: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s))) out.push(m[1] !== undefined ? m[1] : m[2]);
  return out;
}

let partialWriter: (() => void) | null = null;

/** What to write when the run is cut short: the scenarios finished so far still count. */
export function onBail(fn: () => void): void {
  partialWriter = fn;
}

/** Install SIGINT/SIGTERM handlers that clean up and exit, and a global time bound. */
export function installExitHandlers(boundMs: number): void {
  let exiting = false;
  const bail = async (why: string, code: number) => {
    if (exiting) return;
    exiting = true;
    cleanup.aborting = true;
    log(`${why}: cleaning up`);
    const t = setTimeout(() => process.exit(code), 90000);
    await cleanup.runAll();
    // A setup still in flight when the signal came (a docker run, say) registers its undo after
    // runAll: sweep once more by the bench's own names, after a moment for it to land.
    await sleep(1000);
    await cleanup.runAll();
    await sweepLeftovers().catch(() => undefined);
    try {
      partialWriter?.();
    } catch (e) {
      log(`writing the partial results failed: ${(e as Error).message}`);
    }
    await sleep(10);
    clearTimeout(t);
    process.exit(code);
  };
  process.on('SIGINT', () => void bail('interrupted', 130));
  process.on('SIGTERM', () => void bail('terminated', 143));
  process.on('SIGHUP', () => void bail('hung up', 129));
  const timer = setTimeout(() => void bail(`time bound of ${Math.round(boundMs / 1000)} s reached`, 124), boundMs);
  timer.unref();
}
