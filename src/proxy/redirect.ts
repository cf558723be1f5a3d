/**
 * Steering ingress traffic into Envoy's listeners: the two modes behind one façade, plus the
 * support probe for `berth doctor` and `redirect: auto`.
 *
 * Both modes use the same policy routing (routing.ts: fwmark 0x200/0xf00 -> berth's table ->
 * local); they differ in who picks the socket: TPROXY in mangle PREROUTING (iptables.ts) or a tc
 * ingress program calling bpf_sk_assign (tc.ts). Starting one mode removes the other's rules.
 */
import type { RedirectMode } from './types';
import { DEFAULT_REDIRECT_NAMES, type RedirectEntry, type RedirectNames, type Redirector } from './redirect-types';
import { applyIptables, iptablesSupport, removeIptables } from './iptables';
import { TcAttachment, ebpfSupport, removeTc, type TcOptions } from './tc';
import { ensureProxyRouting, removeProxyRouting } from './routing';
import { ProxyError, ProxyErrorCode } from './errors';

export { DEFAULT_REDIRECT_NAMES, type RedirectEntry, type RedirectNames, type Redirector } from './redirect-types';

export interface RedirectSupport {
  ebpf: { ok: boolean; reason: string };
  iptables: { ok: boolean; reason: string };
}

export async function redirectSupport(): Promise<RedirectSupport> {
  const [ebpf, iptables] = await Promise.all([ebpfSupport(), iptablesSupport()]);
  return { ebpf, iptables };
}

/** 'auto' -> ebpf where the kernel allows it, else iptables; an explicit mode must be supported. */
export async function resolveMode(want: RedirectMode | 'auto'): Promise<{ mode: RedirectMode; reason: string }> {
  const s = await redirectSupport();
  if (want === 'auto') {
    if (s.ebpf.ok) return { mode: 'ebpf', reason: s.ebpf.reason };
    return { mode: 'iptables', reason: `ebpf unavailable (${s.ebpf.reason})` };
  }
  if (!s[want].ok) throw new ProxyError(ProxyErrorCode.REDIRECT_UNSUPPORTED, `redirect ${want} is not supported here: ${s[want].reason}`);
  return { mode: want, reason: s[want].reason };
}

class IptablesRedirector implements Redirector {
  readonly mode = 'iptables' as const;
  constructor(private readonly names: RedirectNames) {}
  async apply(entries: RedirectEntry[]): Promise<string[]> {
    const errs = await ensureProxyRouting(this.names);
    if (errs.length) throw new ProxyError(ProxyErrorCode.REDIRECT, errs.join('; '));
    return applyIptables(entries, this.names);
  }
}

class TcRedirector implements Redirector {
  readonly mode = 'ebpf' as const;
  private readonly tc: TcAttachment;
  constructor(o: TcOptions, private readonly names: RedirectNames) {
    this.tc = new TcAttachment(o);
  }
  async apply(entries: RedirectEntry[]): Promise<string[]> {
    const errs = await ensureProxyRouting(this.names);
    if (errs.length) throw new ProxyError(ProxyErrorCode.REDIRECT, errs.join('; '));
    await this.tc.apply(entries);
    return [];
  }
}

/** Remove the other mode's rules/programs, return the redirector for `mode`. */
export async function createRedirector(mode: RedirectMode, o: Omit<TcOptions, 'tcPref'>, names: RedirectNames = DEFAULT_REDIRECT_NAMES): Promise<{ redirector: Redirector; removed: string[] }> {
  if (mode === 'iptables') return { redirector: new IptablesRedirector(names), removed: await removeTc(o.pinDir, names.tcPref) };
  return { redirector: new TcRedirector({ ...o, tcPref: names.tcPref }, names), removed: await removeIptables(names) };
}

/** `berth cleanup`: both modes and the policy routing. */
export async function cleanupRedirect(pinDir?: string, names: RedirectNames = DEFAULT_REDIRECT_NAMES): Promise<string[]> {
  return [...(await removeIptables(names)), ...(await removeTc(pinDir, names.tcPref)), ...(await removeProxyRouting(names))];
}
