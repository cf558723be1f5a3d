/**
 * Restart the machine's dockerd the way an operator would (these VMs have no systemd: scripts/setup
 * starts dockerd in the background). Used by the Docker-restart test, which always leaves dockerd
 * running with its original flags.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { run } from '../../src/util/exec';
import { sleep, waitFor } from './berthd';

export async function dockerdPid(): Promise<number | null> {
  const r = await run('pidof', ['dockerd']);
  return r.code === 0 ? Number(r.stdout.trim().split(/\s+/)[0]) : null;
}

export async function dockerAnswers(): Promise<boolean> {
  return (await run('docker', ['version', '--format', '{{.Server.Version}}'], { timeoutMs: 5000 })).code === 0;
}

export async function stopDockerd(): Promise<void> {
  const pid = await dockerdPid();
  if (!pid) return;
  process.kill(pid, 'SIGTERM');
  await waitFor('dockerd to exit', async () => !fs.existsSync(`/proc/${pid}`), 60000, 100);
  await sleep(200);
}

export async function startDockerd(extraArgs: string[] = []): Promise<void> {
  const log = fs.openSync('/var/log/dockerd.log', 'a');
  const bin = fs.existsSync('/usr/sbin/dockerd') ? '/usr/sbin/dockerd' : 'dockerd';
  const p = spawn(bin, extraArgs, { detached: true, stdio: ['ignore', log, log] });
  p.unref();
  fs.closeSync(log);
  await waitFor('dockerd to answer', dockerAnswers, 60000, 250);
}
