/**
 * An in-memory TxnKv with etcd's transaction semantics for the parts vipalloc uses: version 0 =
 * absent, mod revisions from one global counter, all compares checked before any write, the
 * whole then-branch applied at one revision. `before` runs just before a transaction is
 * evaluated, so a test can slip in another host's transaction (a race etcd would serialise the
 * same way).
 */
import type { TxnKv } from '../../../src/cluster/vipalloc';

export class FakeKv implements TxnKv {
  readonly data = new Map<string, { value: string; modRevision: number; createRevision: number }>();
  revision = 1;
  txns = 0;
  before: (() => Promise<void>) | null = null;

  async txn(op: Parameters<TxnKv['txn']>[0]): ReturnType<TxnKv['txn']> {
    if (this.before) {
      const f = this.before;
      this.before = null;
      await f();
    }
    this.txns++;
    const ok = op.absent.every((k) => !this.data.has(k)) && op.unchanged.every(([k, rev]) => String(this.data.get(k)?.modRevision) === rev);
    const values = new Map<string, { value: string; modRevision: string } | null>();
    if (ok) {
      this.revision++;
      for (const [k, v] of op.puts) {
        const old = this.data.get(k);
        this.data.set(k, { value: v, modRevision: this.revision, createRevision: old?.createRevision ?? this.revision });
      }
      for (const k of op.deletes) this.data.delete(k);
    } else {
      for (const k of op.read) {
        const d = this.data.get(k);
        values.set(k, d ? { value: d.value, modRevision: String(d.modRevision) } : null);
      }
    }
    return { succeeded: ok, values };
  }

  json(key: string): unknown {
    const d = this.data.get(key);
    return d ? JSON.parse(d.value) : undefined;
  }
}
