/**
 * A three-host berth cluster in scripts/vm guests, for test/vm/cluster.test.ts and the cluster
 * benchmark (scripts/bench/cluster.ts). Each guest gets:
 *   - an address on one private segment (10.99.12.N/24, no host interface);
 *   - its own Docker subnets (daemon.json bip 172.(17+N).0.1/16, pools 172.(27+N).0.0/16 by /24),
 *     so no container subnet overlaps between hosts (README "Several hosts", set-up step 2);
 *   - one member of a three-member etcd (Debian's etcd-server, a runtime unit the test starts);
 *   - berthd installed with scripts/install in the guest (as test/vm/systemd.test.ts does), with
 *     the same TCG drop-in (TimeoutStartSec, WatchdogSec), run by systemd, pointed at all three
 *     members;
 *   - the test agent (cluster-agent.ts) on ADDR:9900.
 * Set-up runs on the three guests at once; every step is bounded (vm.ts).
 */
import { ENSURE_TEST_IMAGE, until, vmDown, vmJson, vmOk, vmUp } from './vm';

export interface ClusterHost {
  /** Guest name (scripts/vm). */
  name: string;
  /** Segment address (also nodeAddress and the etcd member's address). */
  addr: string;
  /** Docker's default bridge subnet on this host. */
  bip: string;
  /** The test agent, `addr:9900`. */
  agent: string;
}

export const SEGMENT = 'i12f';
export const AGENT_PORT = 9900;
const AGENT = '/berth/dist/test/vm/cluster-agent.js';
const DROPIN_DIR = '/etc/systemd/system/berthd.service.d';
/**
 * Each guest's memory, with 1 vCPU: three TCG guests on the 2-core machine are CPU-bound, so
 * more vCPUs only add contending threads. Peak use is printed by the test (MemAvailable).
 */
export const GUEST_MEM = '1536M';

/** The three hosts (guest names carry the branch prefix, as TESTBED asks). */
export function clusterHosts(prefix = 'i12f-h'): ClusterHost[] {
  return [1, 2, 3].map((n) => ({ name: `${prefix}${n}`, addr: `10.99.12.${n}`, bip: `172.${17 + n}.0.1/16`, agent: `10.99.12.${n}:${AGENT_PORT}` }));
}

export const endpoints = (hosts: ClusterHost[]) => hosts.map((h) => `http://${h.addr}:2379`).join(',');

/** The etcd member of `h` as a runtime unit (gone at reboot), with timeouts for TCG guests. */
function etcdUnit(h: ClusterHost, hosts: ClusterHost[]): string {
  const cluster = hosts.map((x) => `${x.name}=http://${x.addr}:2380`).join(',');
  // Heartbeat/election 4x etcd's defaults: TCG guests on a loaded 2-core machine stall for
  // hundreds of ms, and a leader lost to a stall would renew every lease (see the test).
  const exec = ['/usr/bin/etcd', `--name ${h.name}`, '--data-dir /var/lib/berth-test-etcd',
    `--listen-peer-urls http://${h.addr}:2380`, `--initial-advertise-peer-urls http://${h.addr}:2380`,
    `--listen-client-urls http://${h.addr}:2379,http://127.0.0.1:2379`, `--advertise-client-urls http://${h.addr}:2379`,
    `--initial-cluster ${cluster}`, '--initial-cluster-state new', '--initial-cluster-token berth-i12f',
    '--heartbeat-interval 400', '--election-timeout 4000', '--logger zap', '--log-level warn'].join(' ');
  return `[Unit]\nDescription=etcd member for the berth cluster test\n[Service]\nExecStart=${exec}\nRestart=no\n`;
}

/**
 * The lease TTL the guests' berthds use under TCG, s (the etcdLeaseTtl key). With the default 5 s
 * (keep-alives every 5/3 s, etcd3's TTL/3) every berthd lost its lease 7-9 times in 10 minutes in
 * the runs of 2026-11-30: three emulated guests on 2 cores stall an event loop for many seconds,
 * and each loss made the peers drop and re-add that host's backends. 30 s rides out a 20 s stall.
 */
export const TCG_LEASE_TTL_S = 30;

/** Shell for guest `h`: Docker subnets, etcd member, berth installed and configured (not started). */
function prepareScript(h: ClusterHost, hosts: ClusterHost[], leaseTtlS: number): string {
  const n = Number(h.addr.split('.')[3]);
  const daemon = JSON.stringify({ 'storage-driver': 'overlay2', bip: h.bip, 'default-address-pools': [{ base: `172.${27 + n}.0.0/16`, size: 24 }] });
  // debug: the journals then show each leg of a change's way between hosts (the Docker event,
  // the reconcile and how far behind it ran, the publish to etcd, the peers' watch updates).
  // reconcileInterval 30 and resyncInterval 120 (defaults 5 and 30): the periodic passes (rule
  // checks that spawn iptables, full Docker lists, each followed by a full GC) took most of a
  // starved guest's CPU (2026-12-01: passes of 10-140 s back to back on h3), which is load the
  // test does not exercise; events, etcd and the peers' drops do not depend on them.
  const config = [`etcdEndpoints: ${endpoints(hosts)}`, `etcdLeaseTtl: ${leaseTtlS}`, 'logLevel: debug', 'reconcileInterval: 30', 'resyncInterval: 120', ''].join('\n');
  return `set -e
echo '${daemon}' > /etc/docker/daemon.json
systemctl restart docker
cat > /run/systemd/system/berth-test-etcd.service <<'UNIT'
${etcdUnit(h, hosts)}UNIT
systemctl daemon-reload
rm -rf /var/lib/berth-test-etcd
systemctl start --no-block berth-test-etcd
bash /berth/scripts/install
# Under TCG berthd needs minutes of CPU to start and its event loop stalls for tens of seconds:
# the systemd suite's drop-in (test/vm/systemd.test.ts), with a longer watchdog: with three
# 1-vCPU guests on the 2 cores the first reconcile (VIP claims in etcd) ran past 60 s, and berthd
# skips its pings while a reconcile runs longer than the interval, so systemd killed it during
# the start. The shipped unit keeps its 90 s and 20 s.
mkdir -p ${DROPIN_DIR}
printf '[Service]\\nTimeoutStartSec=20min\\nWatchdogSec=5min\\n' > ${DROPIN_DIR}/vm-tcg.conf
systemctl daemon-reload
cat > /etc/berth/config.yaml <<'CONF'
${config}CONF
${ENSURE_TEST_IMAGE}
systemd-run --unit berth-test-agent --collect node ${AGENT} serve ${h.addr} ${AGENT_PORT} >/dev/null
`;
}

/**
 * Boots the three guests on one segment (in parallel); `down` first clears a previous run. The
 * first run on an image cold-boots this size's golden once (the others wait for it): 900 s for
 * that boot, as one vCPU under TCG is slower than the default 420 s allows for.
 */
export async function clusterUp(hosts: ClusterHost[]): Promise<string[]> {
  await Promise.all(hosts.map((h) => vmDown(h.name)));
  return Promise.all(hosts.map((h) => vmUp(h.name, { segment: SEGMENT, address: `${h.addr}/24`, mem: GUEST_MEM, cpus: 1, bootTimeoutS: 900 })));
}

/**
 * Prepares every guest, waits for etcd to have a leader, then starts berthd everywhere
 * (`systemctl enable --now`: returns once each berthd sent READY=1), with `etcdLeaseTtl:
 * leaseTtlS`. Returns the test image tag.
 */
export async function clusterSetup(hosts: ClusterHost[], leaseTtlS: number): Promise<string> {
  const out = await Promise.all(hosts.map((h) => vmOk(h.name, prepareScript(h, hosts, leaseTtlS), 1800000)));
  const image = out[0].trim().split('\n').pop() ?? '';
  await until('etcd has a leader on every member', async () => {
    const st = await etcdStatus(hosts[0], hosts);
    return st.every((e) => e.ok);
  }, 180000, 2000);
  await Promise.all(hosts.map((h) => vmOk(h.name, 'systemctl enable --now berthd', 1200000)));
  return image;
}

export interface EtcdEndpointStatus { endpoint: string; ok: boolean; member: string | null; leader: string | null; error: string | null }

/** etcd's status from guest `from`, per member (cluster-agent.ts etcd-status). */
export async function etcdStatus(from: ClusterHost, hosts: ClusterHost[]): Promise<EtcdEndpointStatus[]> {
  return vmJson<EtcdEndpointStatus[]>(from.name, agentCmd(['etcd-status', ...hosts.map((h) => `http://${h.addr}:2379`)]), 60000);
}

/** The etcd member that leads now (its guest name), or null without a leader. */
export async function etcdLeader(from: ClusterHost, hosts: ClusterHost[]): Promise<string | null> {
  const st = await etcdStatus(from, hosts);
  const lead = st.find((s) => s.ok && s.member === s.leader);
  return hosts.find((h) => lead?.endpoint.includes(`//${h.addr}:`))?.name ?? null;
}

/** Guest shell that runs the agent's measurement `args` (see cluster-agent.ts) and prints its JSON. */
export function agentCmd(args: string[]): string {
  return `node ${AGENT} ${args.map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ')}`;
}

/** Tears the guests down (never --all: other helpers' guests run too). */
export async function clusterDown(hosts: ClusterHost[]): Promise<void> {
  await Promise.all(hosts.map((h) => vmDown(h.name).catch(() => undefined)));
}
