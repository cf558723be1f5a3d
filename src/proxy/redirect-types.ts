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

export interface Redirector {
  readonly mode: 'ebpf' | 'iptables';
  /** Make the installed rules/programs steer exactly these entries (idempotent, cheap when unchanged). */
  apply(entries: RedirectEntry[]): Promise<void>;
}
