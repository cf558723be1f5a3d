/**
 * The policy routing both redirect modes need: a packet carrying berth's proxy mark (0x200 in the
 * 0xf00 nibble, Cilium's scheme) is looked up in berth's own route table, whose only route says
 * "every address is local" - so a packet to the ingress VIP or redirected by TPROXY is delivered
 * to the local stack (Envoy's transparent listener) instead of being forwarded or dropped by the
 * VIP range's unreachable route.
 */
import os from 'node:os';
import { run } from '../util/exec';
import { DEFAULT_REDIRECT_NAMES, type RedirectNames } from './redirect-types';

/** Route table reserved for berth's proxy redirect (SPEC: route tables reserved by berth). */
export const PROXY_TABLE = DEFAULT_REDIRECT_NAMES.table;
/** Rule priority: before `main` (32766) so the VIP range's unreachable route never wins. */
export const PROXY_RULE_PREF = DEFAULT_REDIRECT_NAMES.rulePref;
export const PROXY_MARK = 0x200;
export const PROXY_MARK_MASK = 0xf00;

/**
 * Cilium's per-listener mark: (port << 16) | 0x200 with the port as a __be16 read as a number,
 * i.e. byte-swapped on little-endian hosts - seed 002's 0x43470200 for listener 18243 (0x4743).
 * bpf/redirect.bpf.c sets the same value (bpf_htons).
 */
export function proxyMark(listenerPort: number): number {
  const be = os.endianness() === 'LE' ? ((listenerPort & 0xff) << 8) | (listenerPort >> 8) : listenerPort;
  return ((be << 16) | PROXY_MARK) >>> 0;
}

const FAMILIES = [
  { flag: '-4', any: '0.0.0.0/0' },
  { flag: '-6', any: '::/0' },
] as const;

async function ip(args: string[]): Promise<{ code: number; out: string }> {
  const r = await run('ip', args);
  return { code: r.code, out: r.stdout + r.stderr };
}

/** Idempotent: add the fwmark rule and local route for v4 and v6 (v6 best effort). */
export async function ensureProxyRouting(names: RedirectNames = DEFAULT_REDIRECT_NAMES): Promise<string[]> {
  const errors: string[] = [];
  const { table: PROXY_TABLE, rulePref: PROXY_RULE_PREF } = names;
  for (const f of FAMILIES) {
    const rules = await ip([f.flag, 'rule', 'show', 'pref', String(PROXY_RULE_PREF)]);
    if (!rules.out.includes(`lookup ${PROXY_TABLE}`)) {
      const r = await ip([f.flag, 'rule', 'add', 'pref', String(PROXY_RULE_PREF), 'fwmark', `0x${PROXY_MARK.toString(16)}/0x${PROXY_MARK_MASK.toString(16)}`, 'lookup', String(PROXY_TABLE)]);
      if (r.code !== 0 && f.flag === '-4') errors.push(`ip rule: ${r.out.trim()}`);
    }
    const r = await ip([f.flag, 'route', 'replace', 'local', f.any, 'dev', 'lo', 'table', String(PROXY_TABLE)]);
    if (r.code !== 0 && f.flag === '-4') errors.push(`ip route: ${r.out.trim()}`);
  }
  return errors;
}

/** Remove exactly berth's rule and table content; returns what was removed. */
export async function removeProxyRouting(names: RedirectNames = DEFAULT_REDIRECT_NAMES): Promise<string[]> {
  const removed: string[] = [];
  const { table: PROXY_TABLE, rulePref: PROXY_RULE_PREF } = names;
  for (const f of FAMILIES) {
    // Bounded: at most a few duplicates can exist.
    for (let i = 0; i < 8; i++) {
      const rules = await ip([f.flag, 'rule', 'show', 'pref', String(PROXY_RULE_PREF)]);
      if (!rules.out.includes(`lookup ${PROXY_TABLE}`)) break;
      const r = await ip([f.flag, 'rule', 'del', 'pref', String(PROXY_RULE_PREF), 'lookup', String(PROXY_TABLE)]);
      if (r.code !== 0) break;
      removed.push(`ip ${f.flag} rule pref ${PROXY_RULE_PREF} lookup ${PROXY_TABLE}`);
    }
    // `ip route flush` succeeds on an empty table too: report only what was really there.
    const routes = await ip([f.flag, 'route', 'show', 'table', String(PROXY_TABLE)]);
    if (routes.code !== 0 || routes.out.trim() === '') continue;
    const r = await ip([f.flag, 'route', 'flush', 'table', String(PROXY_TABLE)]);
    if (r.code === 0) removed.push(`ip ${f.flag} route table ${PROXY_TABLE}`);
  }
  return removed;
}
