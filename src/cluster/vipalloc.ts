/**
 * Cluster-wide VIP agreement through etcd transactions (issue 12, part 3).
 *
 * A name's VIP is decided once for the whole cluster by whichever host first creates its records
 * in one transaction: `vips/<kind>/<name>` (the assignment) and `vip-owners/<addr>` for each
 * address (the uniqueness index). The transaction's guard is "none of these keys exists yet"
 * (etcd compare `version == 0`), so two hosts racing for the same name, or two names racing for
 * the same address, cannot both win: etcd serialises the transactions and exactly one commits.
 * The loser reads the winner's records in the same round trip (the transaction's else branch).
 * The records carry no lease: an assignment outlives every host, like /var/lib/berth/vips.json
 * does on one.
 *
 * Outcomes (ClaimResult):
 *   - created: this host's proposal is now the cluster's.
 *   - exists: the name already has a VIP; everyone uses it. If this host PINNED another address
 *     (berth.vip), the pin moves the assignment when the pinned address is free (a second
 *     transaction guarded by the assignment's mod revision and the new address being free);
 *     when it is owned by another name the result is `conflict`.
 *   - taken: the proposed (hash-derived) address belongs to another name; the caller derives the
 *     next candidate with that address marked taken and claims again.
 *   - conflict: a pinned address owned by another name. Reported with the owner's name; since
 *     the owner is read from etcd, every host reports the same owner.
 * The cluster's order of assignment (etcd's create revision of `vips/...`) is the ownership
 * order, the cluster twin of VipStore's `seq`.
 */
import type { ServiceKind } from '../model/vip';
import { encodeVip, encodeVipOwner, type VipOwnerRecord, type VipRecord } from './codec';
import type { KeyLayout } from './keys';

/**
 * The one transaction shape allocation needs, so the logic runs against etcd (EtcdTxnKv in
 * store.ts) or an in-memory fake with the same semantics (tests).
 */
export interface TxnKv {
  /**
   * Atomically: when every key in `absent` does not exist and every `[key, modRevision]` in
   * `unchanged` still has that mod revision, apply `puts` and `deletes` and return
   * `{succeeded: true}`; otherwise change nothing and return the current value and mod revision
   * of each key in `read` (null when absent). Rejects on transport errors (etcd unreachable).
   */
  txn(op: {
    absent: string[];
    unchanged: [string, string][];
    puts: [string, string][];
    deletes: string[];
    read: string[];
  }): Promise<{ succeeded: boolean; values: Map<string, { value: string; modRevision: string } | null> }>;
}

export interface ClaimRequest {
  kind: ServiceKind;
  name: string;
  vip: string;
  vip6: string | null;
  pinned: boolean;
  node: string;
}

export type ClaimResult =
  | { result: 'created'; record: VipRecord }
  | { result: 'exists'; record: VipRecord }
  | { result: 'taken'; addr: string; owner: VipOwnerRecord | null }
  | { result: 'conflict'; addr: string; owner: VipOwnerRecord | null; message: string };

function parseJson<T>(text: string | undefined): T | null {
  if (text === undefined) return null;
  try {
    return JSON.parse(text) as T;
  } catch {
    return null;
  }
}

/**
 * Claims `req.vip`/`req.vip6` for `req.kind/req.name` cluster-wide (see the module comment).
 * Throws what the kv throws (etcd unreachable): the caller keeps its local view and retries.
 */
export async function claimVip(kv: TxnKv, keys: KeyLayout, req: ClaimRequest, attempt = 0): Promise<ClaimResult> {
  // Each retry follows a transaction another host committed in between; a few are plenty.
  if (attempt >= 4) throw new Error(`VIP claim for ${req.kind} ${req.name} kept racing with other hosts; retrying later`);
  const recKey = keys.vip(req.kind, req.name);
  const addrs = [req.vip, ...(req.vip6 ? [req.vip6] : [])];
  const ownerKeys = addrs.map((a) => keys.vipOwner(a));
  const record: VipRecord = { kind: req.kind, name: req.name, vip: req.vip, vip6: req.vip6, pinned: req.pinned, by: req.node };
  const owner = encodeVipOwner({ kind: req.kind, name: req.name });
  const first = await kv.txn({
    absent: [recKey, ...ownerKeys],
    unchanged: [],
    puts: [[recKey, encodeVip(record)], ...ownerKeys.map((k) => [k, owner] as [string, string])],
    deletes: [],
    read: [recKey, ...ownerKeys],
  });
  if (first.succeeded) return { result: 'created', record };

  const cur = first.values.get(recKey) ?? null;
  const existing = parseJson<VipRecord & { version?: number }>(cur?.value);
  const ownerOf = (i: number) => {
    const o = parseJson<VipOwnerRecord>(first.values.get(ownerKeys[i])?.value);
    return o ? { kind: o.kind, name: o.name } : null;
  };
  const foreign = addrs
    .map((addr, i) => ({ addr, owner: ownerOf(i) }))
    .find((x) => x.owner !== null && !(x.owner.kind === req.kind && x.owner.name === req.name));

  if (existing && cur) {
    const rec: VipRecord = { kind: existing.kind, name: existing.name, vip: existing.vip, vip6: existing.vip6 ?? null, pinned: !!existing.pinned, by: existing.by ?? '' };
    const samePin = rec.vip === req.vip && (req.vip6 === null || rec.vip6 === req.vip6);
    if (!req.pinned || samePin) return { result: 'exists', record: rec };
    // A pin that moves an existing assignment: only onto free addresses.
    if (foreign) {
      return { result: 'conflict', addr: foreign.addr, owner: foreign.owner, message: conflictMessage(req, foreign.addr, foreign.owner) };
    }
    const moved: VipRecord = { ...record, vip6: req.vip6 ?? rec.vip6 };
    const newAddrs = [moved.vip, ...(moved.vip6 ? [moved.vip6] : [])];
    const oldAddrs = [rec.vip, ...(rec.vip6 ? [rec.vip6] : [])].filter((a) => !newAddrs.includes(a));
    const fresh = newAddrs.filter((a) => ![rec.vip, rec.vip6].includes(a));
    const second = await kv.txn({
      absent: fresh.map((a) => keys.vipOwner(a)),
      unchanged: [[recKey, cur.modRevision]],
      puts: [[recKey, encodeVip(moved)], ...fresh.map((a) => [keys.vipOwner(a), owner] as [string, string])],
      deletes: oldAddrs.map((a) => keys.vipOwner(a)),
      read: [recKey, ...fresh.map((a) => keys.vipOwner(a))],
    });
    if (second.succeeded) return { result: 'created', record: moved };
    // Someone changed the assignment or took the address meanwhile: start over.
    return claimVip(kv, keys, req, attempt + 1);
  }
  if (foreign) {
    if (req.pinned) return { result: 'conflict', addr: foreign.addr, owner: foreign.owner, message: conflictMessage(req, foreign.addr, foreign.owner) };
    return { result: 'taken', addr: foreign.addr, owner: foreign.owner };
  }
  // The owner records name this service but the assignment is missing (an operator deleted
  // it by hand): recreate the assignment over them.
  const repair = await kv.txn({
    absent: [recKey],
    unchanged: [],
    puts: [[recKey, encodeVip(record)], ...ownerKeys.map((k) => [k, owner] as [string, string])],
    deletes: [],
    read: [recKey],
  });
  if (repair.succeeded) return { result: 'created', record };
  return claimVip(kv, keys, req, attempt + 1);
}

function conflictMessage(req: ClaimRequest, addr: string, owner: VipOwnerRecord | null): string {
  return `pinned VIP ${addr} of ${req.kind} ${req.name} is owned in the cluster by ${owner ? `${owner.kind} ${owner.name}` : 'another name'}; pin another address or remove the pin`;
}
