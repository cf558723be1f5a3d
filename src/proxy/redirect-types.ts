/** What the redirect modes are told: where an ingress's traffic arrives and which listener takes it. */
export interface RedirectEntry {
  ingress: string;
  vip: string;
  vip6: string | null;
  /** Port on the VIP. */
  listen: number;
  /** Port on the host's own addresses, or null. */
  publish: number | null;
  /** Envoy's transparent listener for this ingress. */
  listenerPort: number;
}

/**
 * The names of the kernel objects a redirect owns. One berthd per host uses the defaults; tests
 * (and a second, scratch berthd) use their own so that they never rewrite or remove another
 * instance's chain, rule, table or tc filter.
 */
export interface RedirectNames {
  /** mangle chain jumped to from PREROUTING (iptables mode). */
  chain: string;
  /** Route table holding `local 0.0.0.0/0 dev lo`, and the priority of its fwmark rule. */
  table: number;
  rulePref: number;
  /** tc filter priority on each interface (ebpf mode). */
  tcPref: number;
}

export const DEFAULT_REDIRECT_NAMES: RedirectNames = { chain: 'BERTH_PREROUTING', table: 2004, rulePref: 9, tcPref: 47104 };

export interface Redirector {
  readonly mode: 'ebpf' | 'iptables';
  /**
   * Make the installed rules/programs steer exactly these entries (idempotent, cheap when
   * unchanged). Returns what had to be (re)written: after the first apply, anything here for
   * unchanged entries means someone else changed berth's rules (e.g. a firewall reload).
   */
  apply(entries: RedirectEntry[]): Promise<string[]>;
}
