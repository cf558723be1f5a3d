/**
 * Containers of the bench: a tiny busybox image built locally (no registry here) and the static
 * berth-bench binary bind-mounted at /bench, so one image serves every scenario. Every container
 * is labelled berth-test=bench and named bt-bench-*.
 */
import fs from 'node:fs';
import path from 'node:path';
import { BIN_DIR, LOADGEN, NAMES, REPO, must, run } from './util';
import { cleanup } from './cleanup';

/** Compile the static load generator/server (gcc -static), when the source is newer. */
export async function buildLoadgen(): Promise<void> {
  const src = path.join(REPO, 'scripts/bench/c/berth-bench.c');
  fs.mkdirSync(BIN_DIR, { recursive: true });
  if (fs.existsSync(LOADGEN) && fs.statSync(LOADGEN).mtimeMs > fs.statSync(src).mtimeMs) return;
  await must('gcc', ['-static', '-O2', '-Wall', '-o', LOADGEN, src], { timeoutMs: 120000 });
}

export async function ensureImage(): Promise<void> {
  if ((await run('docker', ['image', 'inspect', NAMES.image])).code === 0) return;
  await must(path.join(REPO, 'scripts/lib/busybox-image.sh'), [NAMES.image], { timeoutMs: 120000 });
}

export interface RunOpts {
  name: string;
  labels?: Record<string, string>;
  publish?: string[];
  network?: string;
  /** docker run --cpuset-cpus */
  cpus?: string;
  /** more `-v host:container[:ro]` (e.g. the host's node for a Node backend) */
  binds?: string[];
  cmd: string[];
}

/** The `docker run -d` argv for a bench container (berth-bench available as /bench/berth-bench). */
export function runArgs(o: RunOpts): string[] {
  const a = ['run', '-d', '--name', o.name, '--label', NAMES.label, '-v', `${BIN_DIR}:/bench:ro`];
  for (const [k, v] of Object.entries(o.labels ?? {})) a.push('--label', `${k}=${v}`);
  for (const p of o.publish ?? []) a.push('-p', p);
  for (const b of o.binds ?? []) a.push('-v', b);
  if (o.network) a.push('--network', o.network);
  if (o.cpus) a.push('--cpuset-cpus', o.cpus);
  a.push(NAMES.image, ...o.cmd);
  return a;
}

/** docker run -d; registers the removal. Returns the container id. */
export async function runContainer(o: RunOpts): Promise<string> {
  const id = (await must('docker', runArgs(o), { timeoutMs: 60000 })).trim();
  cleanup.add(`container ${o.name}`, () => removeContainer(o.name));
  return id;
}

export async function removeContainer(nameOrId: string): Promise<void> {
  await run('docker', ['rm', '-f', nameOrId], { timeoutMs: 60000 });
}

export async function containerIp(nameOrId: string): Promise<string> {
  const ip = (await must('docker', ['inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}', nameOrId])).trim().split(' ')[0];
  if (!ip) throw new Error(`container ${nameOrId} has no IPv4 address`);
  return ip;
}

export async function containerPid(nameOrId: string): Promise<number> {
  return Number((await must('docker', ['inspect', '-f', '{{.State.Pid}}', nameOrId])).trim());
}
