/**
 * RefCounts (datapath/view.ts): berth's view counts slot references per backend id in a typed
 * array for the ids it hands out and a Map for any other key a dump may hold. Table-driven
 * against a plain Map with the old semantics (a count never below 0), then bad sizes.
 */
import test from 'ava';
import { RefCounts } from '../../../src/datapath/view';

const CASES: { name: string; size: number; steps: [number, number][] }[] = [
  { name: 'ids inside the table: up, down, to zero', size: 8, steps: [[1, 1], [1, 1], [2, 3], [1, -1], [2, -3], [1, -1]] },
  { name: 'a count never goes below zero (an unknown id released)', size: 8, steps: [[3, -1], [3, 2], [3, -5], [3, 1]] },
  { name: 'id 0 and the last id of the table', size: 4, steps: [[0, 1], [3, 2], [0, -1], [3, -1]] },
  { name: 'ids beyond the table (a dump holds any u32 key) use the map', size: 4, steps: [[4, 1], [0xffffffff, 2], [4, -1], [0xffffffff, -3], [5, 1]] },
  { name: 'a table of size 0: every id in the map', size: 0, steps: [[0, 1], [1, 1], [0, -1]] },
];

for (const c of CASES) {
  test(`refcounts: ${c.name}`, (t) => {
    const r = new RefCounts(c.size);
    const ref = new Map<number, number>();
    for (const [id, d] of c.steps) {
      const n = (ref.get(id) ?? 0) + d;
      if (n > 0) ref.set(id, n);
      else ref.delete(id);
      r.add(id, d);
      for (const x of new Set([...c.steps.map((s) => s[0]), 1, 2])) t.is(r.get(x), ref.get(x) ?? 0, `id ${x} after ${id}${d >= 0 ? '+' : ''}${d}`);
    }
  });
}

test('refcounts: a bad table size is refused with a RangeError', (t) => {
  for (const size of [-1, 1.5, Number.NaN, (1 << 24) + 1]) {
    t.throws(() => new RefCounts(size), { instanceOf: RangeError, message: /reference table size/ }, String(size));
  }
});
