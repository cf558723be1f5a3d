/**
 * The kube-proxy way, as a baseline: iptables DNAT in nat OUTPUT. One chain BERTH-BENCH-SVC
 * holds one rule per service port (like KUBE-SERVICES); the N-1 other services' rules come
 * BEFORE the target's, so every new connection to the target walks all of them (the worst case
 * of kube-proxy's unordered list, and what makes its cost grow with N). Conntrack then carries
 * the rest of the connection, so only the first packet pays.
 *
 * Safety: the baseline's VIP range is routed into a veth whose peer sits in a network namespace
 * of the bench's own with nothing in it, so a packet that no rule rewrote is dropped there and
 * never leaves the host. (An `unreachable` route cannot be used here: connect() would fail at the
 * route lookup before nat OUTPUT ever saw the packet.) The jump from OUTPUT matches only that
 * range, so other traffic on this shared machine never walks the bench's rules.
 */
import { NAMES, RANGES, cidrBase, ipv4Add, must, run } from './util';
import { cleanup, removeBenchChains } from './cleanup';

const SINK_NS = `${NAMES.netnsPrefix}sink`;
const SVC = `${NAMES.chainPrefix}SVC`;
const NOP = `${NAMES.chainPrefix}NOP`;
const SEP_TCP = `${NAMES.chainPrefix}SEP-TCP`;
const SEP_UDP = `${NAMES.chainPrefix}SEP-UDP`;
const C = `-m comment --comment ${NAMES.comment}`;

export class IptablesBaseline {
  readonly vip: string;
  private n = 0;

  constructor(private backendIp: string, private readonly tcpPort: number, private readonly udpPort: number) {
    this.vip = ipv4Add(cidrBase(RANGES.ipt), 1);
  }

  async setup(): Promise<void> {
    await must('ip', ['netns', 'add', SINK_NS]);
    cleanup.add(`netns ${SINK_NS}`, () => run('ip', ['netns', 'delete', SINK_NS]));
    await must('ip', ['link', 'add', NAMES.dummyLink, 'type', 'veth', 'peer', 'name', `${NAMES.dummyLink}p`, 'netns', SINK_NS]);
    cleanup.add(`link ${NAMES.dummyLink}`, () => run('ip', ['link', 'delete', NAMES.dummyLink]));
    await must('ip', ['link', 'set', NAMES.dummyLink, 'up']);
    await must('ip', ['route', 'add', RANGES.ipt, 'dev', NAMES.dummyLink]);
    cleanup.add(`iptables chains ${NAMES.chainPrefix}*`, () => removeBenchChains());
    await this.restore([
      `:${SVC} - [0:0]`, `:${NOP} - [0:0]`, `:${SEP_TCP} - [0:0]`, `:${SEP_UDP} - [0:0]`,
      `-A OUTPUT -d ${RANGES.ipt} ${C} -j ${SVC}`,
    ]);
    await this.setBackend(this.backendIp);
    await this.assertContained();
  }

  /** (Re)point the target's DNAT rules at the backend (a recreated container has a new IP). */
  async setBackend(ip: string): Promise<void> {
    this.backendIp = ip;
    await must('iptables', ['-t', 'nat', '-F', SEP_TCP]);
    await must('iptables', ['-t', 'nat', '-F', SEP_UDP]);
    await this.restore([
      `-A ${SEP_TCP} -p tcp ${C} -j DNAT --to-destination ${ip}:8080`,
      `-A ${SEP_UDP} -p udp ${C} -j DNAT --to-destination ${ip}:8081`,
    ]);
  }

  /** Before any traffic: the baseline VIP routes into the sink veth, nowhere else. */
  async assertContained(): Promise<void> {
    const r = await run('ip', ['-o', 'route', 'get', this.vip]);
    if (r.code !== 0 || !new RegExp(`dev ${NAMES.dummyLink}\\b`).test(r.stdout)) {
      throw new Error(`refusing to send traffic: ${this.vip} does not route into ${NAMES.dummyLink}: ${r.stdout}${r.stderr}`);
    }
  }

  /** Make SVC hold n services: n-1 others first, then the target's TCP and UDP rules. */
  async setServices(n: number): Promise<void> {
    if (n === this.n) return;
    await must('iptables', ['-t', 'nat', '-F', SVC]);
    const lines: string[] = [];
    const base = cidrBase(RANGES.ipt);
    for (let i = 0; i < n - 1; i++) {
      // 10.97.0.2, 10.97.0.3, ... with a second port past 65,534 addresses.
      const a = 2 + (i % 65000);
      lines.push(`-A ${SVC} -d ${ipv4Add(base, a)}/32 -p tcp -m tcp --dport ${80 + Math.floor(i / 65000)} ${C} -j ${NOP}`);
    }
    lines.push(`-A ${SVC} -d ${this.vip}/32 -p tcp -m tcp --dport ${this.tcpPort} ${C} -j ${SEP_TCP}`);
    lines.push(`-A ${SVC} -d ${this.vip}/32 -p udp -m udp --dport ${this.udpPort} ${C} -j ${SEP_UDP}`);
    await this.restore(lines);
    this.n = n;
  }

  private async restore(lines: string[]): Promise<void> {
    const r = await run('iptables-restore', ['--noflush'], { input: `*nat\n${lines.join('\n')}\nCOMMIT\n`, timeoutMs: 120000 });
    if (r.code !== 0) throw new Error(`iptables-restore failed: ${r.stderr.trim().slice(0, 500)}`);
  }
}
