/**
 * Child of datapath-cgroupns.test.ts, run inside a private cgroup namespace (and a private mount
 * namespace) rooted at a test cgroup: opens the datapath with cgroupRoot=auto, programs one
 * service and prints the status as JSON. It leaves everything in place (the parent checks and
 * cleans up from the host's namespaces).
 */
import { Datapath } from '../../src/datapath';
import { silentLogger } from '../../src/util/log';

async function main(): Promise<void> {
  const [pinDir, runDir, cidr, cidr6, vip, backend, port, hostProc = '/proc'] = process.argv.slice(2);
  const dp = await Datapath.open({ pinDir, runDir, cgroupRoot: 'auto', hostProc, serviceCidr: cidr, serviceCidr6: cidr6, logger: silentLogger() });
  const r = await dp.sync([{
    name: 'cgns', kind: 'service', vip, vip6: null, ports: [{ port: 80, protocol: 'tcp', targetPort: Number(port) }],
    backends: [{ container: 'c', id: 'c', ip: backend, ip6: null }], routes: [], ingress: null, errors: [],
  }], { prune: true });
  process.stdout.write(`${JSON.stringify({ status: dp.status(), sync: r })}\n`);
  dp.close();
}

main().catch((e: unknown) => {
  const code = (e as { code?: unknown }).code;
  process.stderr.write(`${typeof code === 'string' ? `${code} ` : ''}${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
