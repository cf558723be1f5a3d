/**
 * `berth cleanup`: the uninstall of berth's kernel and disk state. It removes exactly what berth
 * creates (SPEC "kernel objects berth creates") and nothing else: its pinned links and maps (which
 * detaches the programs), the unreachable routes of the VIP ranges, the redirect rules/programs of
 * both modes, the cgroup2 mount it made, an Envoy a killed berthd left running, /run/berth and
 * /var/lib/berth.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../daemon/config';
import { Datapath } from '../datapath';
import { removeCrossnet } from '../datapath/crossnet';
import { Proxy } from '../proxy';
import { stopEnvoyByPidFile } from '../proxy/envoy';
import { silentLogger } from '../util/log';
import { run } from '../util/exec';
import { mountsBelow } from '../util/mounts';
import { revertSetup } from '../dns/setup';
import { removePeerRoutes } from '../cluster/routes';
import { removePeerAccepts } from '../cluster/firewall';
import { routeMetric } from '../datapath/routes';

export async function cleanup(c: Config): Promise<string[]> {
  const removed: string[] = [];
  const logger = silentLogger();
  // Before the runtime dir (and its pid file) goes: berth's Envoy, which outlives berthd.
  const envoy = await stopEnvoyByPidFile(c.runDir);
  if (envoy) removed.push(`envoy process ${envoy}`);
  const r1 = await Proxy.cleanupRedirect({ logger, bpfPinDir: c.bpfPinDir });
  removed.push(...r1);
  // crossNetwork's chain and its jump in DOCKER-USER (before the pinned program they name goes).
  removed.push(...(await removeCrossnet()));
  const r2 = await Datapath.cleanup({
    pinDir: c.bpfPinDir, cgroupRoot: c.cgroupRoot, hostProc: c.hostProc, runDir: c.runDir,
    serviceCidr: c.serviceCidr, serviceCidr6: c.serviceCidr6, logger,
  });
  removed.push(...r2);
  // Host changes made by `berth dns setup --apply` (their record lives in the state dir).
  const dns = revertSetup({ record: path.join(c.stateDir, 'dns-setup.json') });
  removed.push(...dns.restored.map((r) => `dns setup: restored ${r.file}`), ...dns.leftAlone.map((l) => `dns setup: ${l}`));
  // Cluster mode's routes to peers' container subnets (none on a single host).
  removed.push(...(await removePeerRoutes(routeMetric(c.bpfPinDir))));
  // ... and the DOCKER-USER accept of peers' flows to local containers (cluster/firewall.ts).
  removed.push(...(await removePeerAccepts()));
  for (const dir of [c.runDir, c.stateDir]) {
    // Never recurse into a mount: rm -r over a cgroup2 mount would rmdir real cgroups.
    for (const m of mountsBelow(dir)) {
      const r = await run('umount', [m]);
      if (r.code === 0) removed.push(`mount ${m}`);
    }
    const left = mountsBelow(dir);
    if (left.length) throw new Error(`not removing ${dir}: still mounted below it: ${left.join(', ')}`);
    if (fs.existsSync(dir)) {
      fs.rmSync(dir, { recursive: true, force: true });
      removed.push(dir);
    }
  }
  return removed;
}
