/**
 * Network namespaces of a test's own, joined to the host by a veth pair: an "outside client" that
 * reaches the host only through an interface, as a machine on the LAN would.
 *
 *   const ns = await createNetns('bt-ing-e');      // host 10.254.x.1/30 <-> ns 10.254.x.2/30 (+ fd00:b7e6:x::1/2)
 *   await execInNetns(ns, ['busybox', 'nc', ns.hostAddress, '31907']);
 *   await deleteNetns(ns);                         // in t.teardown
 *
 * Addresses come from 10.254.0.0/16 (/30 per namespace, picked by the name's hash, skipping any
 * the host already routes) and fd00:b7e6::/48; both are local to this machine. The namespace has
 * no default route, so nothing sent from it can leave through the host by accident.
 */
import { run, type ExecResult } from '../../src/util/exec';
import { hostV4Prefixes, intToV4, nameHash, v4Overlap, v4ToInt } from './addr';

export interface Netns {
  name: string;
  /** veth end on the host. */
  hostIf: string;
  /** veth end inside the namespace. */
  nsIf: string;
  hostAddress: string;
  nsAddress: string;
  /** IPv6 (ULA) addresses of the two ends, /64. */
  hostAddress6: string;
  nsAddress6: string;
}

async function sh(args: string[], what: string): Promise<string> {
  const r = await run(args[0], args.slice(1));
  if (r.code !== 0) throw new Error(`${what}: ${args.join(' ')}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** Host-side veth name: `<name>-h` when short enough (IFNAMSIZ is 16), else bt<hash>h. */
function hostIfName(name: string): string {
  return name.length <= 13 ? `${name}-h` : `bt${nameHash(name).toString(16).padStart(8, '0')}h`;
}

export async function netnsExists(name: string): Promise<boolean> {
  const r = await run('ip', ['netns', 'list']);
  return r.stdout.split('\n').some((l) => l.split(/\s/)[0] === name);
}

/** Create (replacing a leftover of the same name) a `bt-*` namespace with a veth to the host. */
export async function createNetns(name: string): Promise<Netns> {
  if (!/^bt-[a-z0-9-]{1,40}$/.test(name)) throw new Error(`test netns names look like bt-<suite>-<x> (got ${name})`);
  await deleteNetns(name);
  const used = await hostV4Prefixes();
  const base = v4ToInt('10.254.0.0');
  const start = nameHash(name) % 16384;
  let block = -1;
  for (let i = 0; i < 16384 && block < 0; i++) {
    const b = (start + i) % 16384;
    const cidr = `${intToV4(base + b * 4)}/30`;
    if (!used.some((u) => v4Overlap(u, cidr))) block = b;
  }
  if (block < 0) throw new Error('no free /30 in 10.254.0.0/16');
  const ns: Netns = {
    name,
    hostIf: hostIfName(name),
    nsIf: 'eth0',
    hostAddress: intToV4(base + block * 4 + 1),
    nsAddress: intToV4(base + block * 4 + 2),
    hostAddress6: `fd00:b7e6:0:${block.toString(16)}::1`,
    nsAddress6: `fd00:b7e6:0:${block.toString(16)}::2`,
  };
  const tmpPeer = `${ns.hostIf.slice(0, 13)}-p`;
  try {
    await sh(['ip', 'netns', 'add', name], 'netns add');
    await sh(['ip', 'link', 'add', ns.hostIf, 'type', 'veth', 'peer', 'name', tmpPeer], 'veth');
    await sh(['ip', 'link', 'set', tmpPeer, 'netns', name], 'move peer');
    const inNs = (args: string[]) => sh(['ip', '-n', name, ...args], `in ${name}`);
    await inNs(['link', 'set', tmpPeer, 'name', ns.nsIf]);
    await inNs(['link', 'set', 'lo', 'up']);
    await inNs(['addr', 'add', `${ns.nsAddress}/30`, 'dev', ns.nsIf]);
    await inNs(['addr', 'add', `${ns.nsAddress6}/64`, 'dev', ns.nsIf, 'nodad']);
    await inNs(['link', 'set', ns.nsIf, 'up']);
    await sh(['ip', 'addr', 'add', `${ns.hostAddress}/30`, 'dev', ns.hostIf], 'host addr');
    await sh(['ip', 'addr', 'add', `${ns.hostAddress6}/64`, 'dev', ns.hostIf, 'nodad'], 'host addr6');
    await sh(['ip', 'link', 'set', ns.hostIf, 'up'], 'host link up');
  } catch (e) {
    await deleteNetns(ns);
    throw e;
  }
  return ns;
}

/** Delete the namespace and its veth pair; a no-op for what does not exist. */
export async function deleteNetns(ns: Netns | string): Promise<void> {
  const name = typeof ns === 'string' ? ns : ns.name;
  if (!name.startsWith('bt-')) throw new Error(`refusing to delete netns ${name}: not a test's (bt-*)`);
  // Deleting the namespace destroys its veth end, and with it the host end.
  if (await netnsExists(name)) await run('ip', ['netns', 'del', name]);
  const hostIf = typeof ns === 'string' ? hostIfName(ns) : ns.hostIf;
  const link = await run('ip', ['link', 'show', 'dev', hostIf]);
  if (link.code === 0) await run('ip', ['link', 'del', 'dev', hostIf]);
}

/** Run argv inside the namespace (`ip netns exec`); never throws for the command's exit code. */
export function execInNetns(ns: Netns | string, argv: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<ExecResult> {
  const name = typeof ns === 'string' ? ns : ns.name;
  return run('ip', ['netns', 'exec', name, ...argv], { timeoutMs: opts.timeoutMs ?? 15000, input: opts.input });
}
