/**
 * `berth doctor`'s DNS checks: does a service name resolve (1) through the DNS VIP, (2) through
 * the host's own resolver (getaddrinfo, as any host program asks), (3) from inside a running
 * container, asking the nameserver its resolv.conf names (Docker's embedded 127.0.0.11 on
 * user-defined networks) from the container's network namespace (nsenter -n, this CLI's
 * `berth dns query`). Needs a running berthd (the name and VIP come from its /services).
 */
import dns from 'node:dns';
import fs from 'node:fs';
import '../docker/no-ssh'; // before dockerode: no ssh2 (see docker/no-ssh.ts)
import Docker from 'dockerode';
import type { Config } from '../daemon/config';
import type { Check } from '../cli/doctor';
import { getJson } from '../api/server';
import { run } from '../util/exec';
import { query } from './client';
import { dnsVips } from './vips';
import { parseResolvConf } from './upstreams';

interface ServiceLite {
  name: string;
  kind: string;
  vip: string;
  backends: { id: string }[];
}

const ok = (name: string, detail: string): Check => ({ name, level: 'OK', detail });
const warn = (name: string, detail: string, fix: string): Check => ({ name, level: 'WARN', detail, fix });
const fail = (name: string, detail: string, fix: string): Check => ({ name, level: 'FAIL', detail, fix });

/** `socket`: berthd's admin socket. `cli`: path of this CLI's script, e.g. dist/berth.js (run in a container's netns). */
export async function dnsChecks(c: Config, socket: string, cli: string): Promise<Check[]> {
  if (c.dnsPort === null) return [ok('dns', 'off (dnsPort: off)')];
  const vips = dnsVips(c);
  let services: ServiceLite[];
  try {
    services = await getJson<ServiceLite[]>(socket, '/services', 2000);
  } catch (e) {
    return [warn('dns', `berthd does not answer on ${socket} (${(e as Error).message}): names not checked`, 'start berthd, then run berth doctor again')];
  }
  const svc = services.find((s) => s.kind === 'service') ?? services[0];
  if (!svc) return [warn('dns', 'no service yet: names not checked', 'label a container berth.service=NAME and run berth doctor again')];
  const name = `${svc.name}.${c.dnsDomain}`;
  const out: Check[] = [];

  try {
    const r = await query(name, 'A', { server: vips.vip, port: 53, timeoutMs: 2000 });
    const got = r.packet.answers?.map((a) => String((a as { data?: unknown }).data)) ?? [];
    out.push(got.includes(svc.vip)
      ? ok('dns VIP', `${name} -> ${svc.vip} from ${vips.vip}:53`)
      : fail('dns VIP', `${vips.vip}:53 answered ${(r.packet as { rcode?: string }).rcode} [${got.join(', ')}] for ${name}, expected ${svc.vip}`, 'see berth status (dns) and the berthd log'));
  } catch (e) {
    out.push(fail('dns VIP', `${name} via ${vips.vip}:53: ${(e as Error).message}`, 'see berth status (dns): is the DNS socket bound, is the VIP programmed?'));
  }

  try {
    const a = await dns.promises.lookup(name, { family: 4 });
    out.push(a.address === svc.vip
      ? ok('dns from host', `getaddrinfo(${name}) -> ${a.address}`)
      : warn('dns from host', `getaddrinfo(${name}) -> ${a.address}, expected ${svc.vip}`, 'another resolver answers this zone; check /etc/resolv.conf'));
  } catch (e) {
    out.push(warn('dns from host', `getaddrinfo(${name}): ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      'berth dns setup --apply (systemd-resolved hosts), or put `nameserver ' + vips.vip + '` first in /etc/resolv.conf'));
  }
  out.push(await containerCheck(c, svc, services, name, cli));
  return out;
}

async function containerCheck(c: Config, svc: ServiceLite, services: ServiceLite[], name: string, cli: string): Promise<Check> {
  const m = /^tcp:\/\/([^:]+):(\d+)$/.exec(c.dockerHost);
  const docker = m ? new Docker({ host: m[1], port: Number(m[2]) }) : new Docker({ socketPath: c.dockerHost.replace(/^unix:\/\//, '') });
  // A running container (not host-network), preferring one whose resolver may lead to berth:
  // the DNS VIP itself, or Docker's embedded resolver (which forwards to daemon.json's dns).
  const candidates: { pid: number; name: string; ns: string }[] = [];
  try {
    const ids = [...new Set([...services.flatMap((s) => s.backends.map((b) => b.id)), ...(await docker.listContainers()).map((x) => x.Id)])];
    for (const id of ids.slice(0, 50)) {
      const info = await docker.getContainer(id).inspect().catch(() => null);
      if (!info?.State.Running || info.State.Pid <= 0 || info.HostConfig.NetworkMode === 'host') continue;
      let resolv = '';
      try {
        resolv = fs.readFileSync(`${c.hostProc}/${info.State.Pid}/root/etc/resolv.conf`, 'utf8');
      } catch { continue; }
      const ns = parseResolvConf(resolv)[0];
      if (ns) candidates.push({ pid: info.State.Pid, name: info.Name.replace(/^\//, ''), ns });
    }
  } catch (e) {
    return warn('dns from container', `cannot list containers: ${(e as Error).message}`, 'check Docker');
  }
  const vips = dnsVips(c);
  const pick = candidates.find((x) => x.ns === vips.vip || x.ns === vips.vip6) ?? candidates.find((x) => x.ns === '127.0.0.11') ?? candidates[0];
  if (!pick) return warn('dns from container', 'no running container with a nameserver to ask from', 'run berth doctor again while a container runs');
  const { pid, name: cname, ns } = pick;
  const r = await run('nsenter', [`--net=${c.hostProc}/${pid}/ns/net`, '--', process.execPath, cli, 'dns', 'query', name, 'A', '--server', ns, '--json'], { timeoutMs: 10000 });
  let got: string[] = [];
  try {
    got = (JSON.parse(r.stdout) as { answers: { data: string }[] }).answers.map((a) => String(a.data));
  } catch { /* reported below */ }
  return got.includes(svc.vip)
    ? ok('dns from container', `${name} -> ${svc.vip} in container ${cname} (nameserver ${ns})`)
    : warn('dns from container', `${name} in container ${cname} via nameserver ${ns}: ${got.length ? got.join(', ') : (r.stderr || r.stdout).trim().split('\n')[0] || `exit ${r.code}`}`,
      'berth dns setup --apply, then restart dockerd: containers created after that ask berth (or docker run --dns ' + dnsVips(c).vip + ')');
}
