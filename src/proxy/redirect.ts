/**
 * Steering ingress traffic into Envoy's listeners: the two modes behind one façade, plus the
 * support probe for `berth doctor` and `redirect: auto`.
 *
 * Both modes use the same policy routing (routing.ts: fwmark 0x200/0xf00 -> berth's table ->
 * local); they differ in who picks the socket: TPROXY in mangle PREROUTING (iptables.ts) or a tc
 * ingress program calling bpf_sk_assign (tc.ts). Starting one mode removes the other's rules.
 */
import type { RedirectMode } from './types';
import type { RedirectEntry, Redirector } from './redirect-types';
import { applyIptables, iptablesSupport, removeIptables } from './iptables';
import { TcAttachment, ebpfSupport, removeTc, type TcOptions } from './tc';
import { ensureProxyRouting, removeProxyRouting } from './routing';
import { ProxyError, ProxyErrorCode } from './errors';

export type { RedirectEntry, Redirector } from './redirect-types';

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
  async apply(entries: RedirectEntry[]): Promise<void> {
    const errs = await ensureProxyRouting();
    if (errs.length) throw new ProxyError(ProxyErrorCode.REDIRECT, errs.join('; '));
    await applyIptables(entries);
  }
}

class TcRedirector implements Redirector {
  readonly mode = 'ebpf' as const;
  private readonly tc: TcAttachment;
  constructor(o: TcOptions) {
    this.tc = new TcAttachment(o);
  }
  async apply(entries: RedirectEntry[]): Promise<void> {
    const errs = await ensureProxyRouting();
    if (errs.length) throw new ProxyError(ProxyErrorCode.REDIRECT, errs.join('; '));
    await this.tc.apply(entries);
  }
}

/** Remove the other mode's rules/programs, return the redirector for `mode`. */
export async function createRedirector(mode: RedirectMode, o: TcOptions): Promise<{ redirector: Redirector; removed: string[] }> {
  if (mode === 'iptables') return { redirector: new IptablesRedirector(), removed: await removeTc(o.pinDir) };
  return { redirector: new TcRedirector(o), removed: await removeIptables() };
}

/** `berth cleanup`: both modes and the policy routing. */
export async function cleanupRedirect(pinDir?: string): Promise<string[]> {
  return [...(await removeIptables()), ...(await removeTc(pinDir)), ...(await removeProxyRouting())];
}
