/**
 * The per-frontend slot table (datapath/plan.ts SlotTable): one array per frontend in the view,
 * a dump and the plan's input, in place of a Map. Table-driven: sequences of puts and deletes
 * against a Map kept beside it (the old representation), then bad input.
 */
import test from 'ava';
import { slotCount, slotDel, slotEntries, slotGet, slotSet, type SlotTable } from '../../../src/datapath/plan';

type Step = ['set', number, number] | ['del', number];

const CASES: { name: string; steps: Step[] }[] = [
  { name: 'slots 1..4 in order, then shrink to 2', steps: [['set', 1, 10], ['set', 2, 11], ['set', 3, 12], ['set', 4, 13], ['del', 4], ['del', 3]] },
  { name: 'an orphan beyond a gap, then the gap filled', steps: [['set', 3, 7], ['set', 1, 5], ['set', 2, 6]] },
  { name: 'delete in the middle keeps the rest, delete last trims the gap behind it', steps: [['set', 1, 1], ['set', 2, 2], ['set', 3, 3], ['del', 2], ['del', 3]] },
  { name: 'delete of an absent slot (hole, beyond the end, 0) changes nothing', steps: [['set', 1, 1], ['set', 3, 3], ['del', 2], ['del', 9], ['del', 0], ['del', -1]] },
  { name: 'overwrite returns the old id; backend id 0 (a garbage dump entry) is an entry', steps: [['set', 2, 8], ['set', 2, 9], ['set', 1, 0], ['del', 2]] },
  { name: 'everything deleted: empty again', steps: [['set', 2, 4], ['set', 5, 6], ['del', 5], ['del', 2]] },
  { name: 'the largest slot number', steps: [['set', 0xffff, 1], ['set', 1, 2], ['del', 0xffff]] },
];

for (const c of CASES) {
  test(`slot table: ${c.name}`, (t) => {
    const table: SlotTable = [];
    const ref = new Map<number, number>();
    for (const step of c.steps) {
      if (step[0] === 'set') {
        const [, slot, id] = step;
        t.is(slotSet(table, slot, id), ref.get(slot), `set ${slot} returns the id it replaced`);
        ref.set(slot, id);
      } else {
        const [, slot] = step;
        t.is(slotDel(table, slot), ref.get(slot), `del ${slot} returns the id it held`);
        ref.delete(slot);
      }
      const want = [...ref].sort((a, b) => a[0] - b[0]);
      t.deepEqual(slotEntries(table), want, `entries after ${step.join(' ')}`);
      t.is(slotCount(table), ref.size);
      // No trailing hole: length is the highest slot present, 0 when none.
      t.is(table.length, want.length ? want[want.length - 1][0] : 0);
      for (let s = 0; s <= table.length + 1; s++) t.is(slotGet(table, s), ref.get(s), `get ${s}`);
    }
  });
}

test('slot table: bad slots and ids are refused with a RangeError, the table unchanged', (t) => {
  const table: SlotTable = [];
  slotSet(table, 1, 5);
  const bad: [number, number, RegExp][] = [
    [0, 1, /slot 0 is not in 1\.\.65535/],
    [-3, 1, /slot -3/],
    [0x10000, 1, /slot 65536/],
    [1.5, 1, /slot 1\.5/],
    [Number.NaN, 1, /slot NaN/],
    [2, -1, /backend id -1/],
    [2, 2.5, /backend id 2\.5/],
    [2, Number.NaN, /backend id NaN/],
  ];
  for (const [slot, id, msg] of bad) {
    t.throws(() => slotSet(table, slot, id), { instanceOf: RangeError, message: msg }, `slot ${slot} id ${id}`);
  }
  t.deepEqual(slotEntries(table), [[1, 5]]);
  t.is(table.length, 1);
});
