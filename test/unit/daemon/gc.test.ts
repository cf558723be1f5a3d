import test from 'ava';
import fs from 'node:fs';
import v8 from 'node:v8';
import { collectGarbage, limitCHeapArenas, oldSpaceSlack, OLD_SPACE_SLACK_BYTES, reduceHeap, reduceHeapFully, trimCHeap } from '../../../src/util/gc';
import { loadNative } from '../../../src/native';

test('trimCHeap: the time taken when the addon has mallocTrim', (t) => {
  let calls = 0;
  const ms = trimCHeap(() => ({ mallocTrim: () => { calls++; return true; } }));
  t.is(typeof ms, 'number');
  t.true(ms! >= 0);
  t.is(calls, 1);
});

test('trimCHeap: null, not an error, for an addon without mallocTrim or one that cannot load', (t) => {
  t.is(trimCHeap(() => ({})), null);
  t.is(trimCHeap(() => { throw new Error('berth native addon not loadable'); }), null);
  t.is(trimCHeap(() => ({ mallocTrim: () => { throw new Error('boom'); } })), null);
});

/** Resident kB of glibc's main heap ([heap] in /proc/self/smaps). */
function heapRssKb(): number {
  const lines = fs.readFileSync('/proc/self/smaps', 'utf8').split('\n');
  const i = lines.findIndex((l) => l.endsWith('[heap]'));
  if (i < 0) return 0;
  for (let j = i + 1; j < lines.length; j++) {
    const m = /^Rss:\s+(\d+) kB/.exec(lines[j]);
    if (m) return Number(m[1]);
  }
  return 0;
}

test('the real addon returns freed C-heap memory to the kernel after a collection', (t) => {
  t.is(typeof loadNative().mallocTrim, 'function');
  // 64 KiB buffers come from glibc's heap (below the mmap threshold); keeping every 64th one
  // leaves holes that free() alone does not return (only malloc_trim madvises them).
  let bufs: Buffer[] = [];
  const kept: Buffer[] = [];
  for (let i = 0; i < 1536; i++) {
    const b = Buffer.allocUnsafeSlow(65536).fill(i & 255);
    if (i % 64 === 63) kept.push(b);
    else bufs.push(b);
  }
  bufs = [];
  t.is(bufs.length, 0);
  t.not(collectGarbage(), null);
  const before = heapRssKb();
  t.not(trimCHeap(), null);
  const after = heapRssKb();
  t.log(`[heap] resident: ${before} kB -> ${after} kB`);
  t.true(before - after > 40 * 1024, `[heap] resident ${before} -> ${after} kB`);
  t.is(kept.length, 24);
});

test('collectGarbage({ compact: true }) returns the old generation\'s emptied pages; a plain one leaves them', (t) => {
  const oldSpace = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'old_space')!;
  /** Fill the old generation with 600,000 small objects, then keep every third: fragmented pages. */
  const fragment = (): object[] => {
    const all: object[] = [];
    for (let i = 0; i < 600000; i++) all.push({ a: i, b: [i] });
    t.not(collectGarbage(), null); // promoted
    return all.filter((_, i) => i % 3 === 0);
  };
  let kept = fragment();
  t.not(collectGarbage(), null);
  const plain = oldSpace();
  const plainSlackMb = (plain.physical_space_size - plain.space_used_size) / 1e6;
  kept = [];
  t.not(collectGarbage(), null);
  kept = fragment();
  t.not(collectGarbage({ compact: true }), null);
  const compacted = oldSpace();
  const compactSlackMb = (compacted.physical_space_size - compacted.space_used_size) / 1e6;
  t.log(`old space committed beyond its live objects: plain ${plainSlackMb.toFixed(1)} MB, compacted ${compactSlackMb.toFixed(1)} MB`);
  t.true(compactSlackMb < plainSlackMb / 2, `compacted ${compactSlackMb} MB, plain ${plainSlackMb} MB`);
  t.is(kept.length, 200000);
});

test('reduceHeap: the time taken when the addon has v8MemoryPressure', (t) => {
  let calls = 0;
  const ms = reduceHeap(() => ({ v8MemoryPressure: () => { calls++; return true; } }));
  t.is(typeof ms, 'number');
  t.true(ms! >= 0);
  t.is(calls, 1);
});

test('reduceHeap: null, not an error, when the addon lacks it, cannot load, throws or has no isolate', (t) => {
  t.is(reduceHeap(() => ({})), null);
  t.is(reduceHeap(() => { throw new Error('berth native addon not loadable'); }), null);
  t.is(reduceHeap(() => ({ v8MemoryPressure: () => { throw new Error('boom'); } })), null);
  t.is(reduceHeap(() => ({ v8MemoryPressure: () => false })), null);
});

test('the real addon: reduceHeap shrinks the young generation, which gc() leaves committed', (t) => {
  t.is(typeof loadNative().v8MemoryPressure, 'function', 'addon built without node\'s V8 headers');
  const newSpaceMb = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')!.physical_space_size / 1048576;
  /** Survivors of many scavenges grow the semi-spaces towards their maximum (16 MB each on x64). */
  const grow = (): number => {
    let kept: object[][] = [];
    for (let r = 0; r < 4; r++) {
      const a: object[] = [];
      for (let i = 0; i < 100000; i++) a.push({ i, s: `x${i}` });
      kept.push(a);
    }
    const n = kept.length;
    kept = [];
    return n;
  };
  t.is(grow(), 4);
  t.not(collectGarbage(), null);
  const plain = newSpaceMb();
  t.is(grow(), 4);
  t.not(reduceHeap(), null);
  const reduced = newSpaceMb();
  t.log(`young generation committed: after gc() ${plain.toFixed(1)} MB, after reduceHeap() ${reduced.toFixed(1)} MB`);
  t.true(plain >= 8, `the test did not grow the young generation (${plain} MB)`);
  t.true(reduced <= 2, `reduceHeap left ${reduced} MB committed`);
});

test('limitCHeapArenas: one arena and a 128 KiB trim threshold, unless the operator set glibc\'s own', (t) => {
  const table: [NodeJS.ProcessEnv, boolean, [number, number][]][] = [
    [{}, true, [[1, 131072]]],
    [{ PATH: '/usr/bin' }, true, [[1, 131072]]],
    [{ MALLOC_ARENA_MAX: '4' }, false, []],
    [{ MALLOC_ARENA_MAX: '' }, false, []],
    [{ MALLOC_TRIM_THRESHOLD_: '1048576' }, false, []],
  ];
  for (const [env, want, wantCalls] of table) {
    const calls: [number, number][] = [];
    const got = limitCHeapArenas(env, () => ({ mallocLimitArenas: (a, b) => { calls.push([a, b]); return true; } }));
    t.is(got, want, JSON.stringify(env));
    t.deepEqual(calls, wantCalls, JSON.stringify(env));
  }
});

test('limitCHeapArenas: null, not an error, when the addon lacks it, cannot load or throws', (t) => {
  t.is(limitCHeapArenas({}, () => ({})), null);
  t.is(limitCHeapArenas({}, () => { throw new Error('berth native addon not loadable'); }), null);
  t.is(limitCHeapArenas({}, () => ({ mallocLimitArenas: () => { throw new TypeError('boom'); } })), null);
});

test('the real addon: mallocLimitArenas takes integers in 1..2^30 and refuses the rest', (t) => {
  const a = loadNative();
  t.is(a.mallocLimitArenas(1, 131072), true);
  const bad: unknown[][] = [[], [1], [0, 131072], [1, -1], [1.5, 131072], ['1', 131072], [1, 2 ** 31], [Number.NaN, 1]];
  for (const args of bad) {
    t.throws(() => (a.mallocLimitArenas as (...x: unknown[]) => boolean)(...args), { instanceOf: TypeError }, JSON.stringify(args));
  }
});

test('oldSpaceSlack: committed beyond live old space, null when it cannot tell', (t) => {
  const space = (name: string, used: number, committed: number) => ({ space_name: name, space_used_size: used, physical_space_size: committed });
  const cases: [string, ReturnType<typeof space>[], number | null][] = [
    ['compacted', [space('new_space', 0, 1), space('old_space', 78, 81)], 3],
    ['fragmented', [space('old_space', 76, 100)], 24],
    ['committed below used (rounding) is 0', [space('old_space', 10, 9)], 0],
    ['no old space', [space('new_space', 1, 2)], null],
    ['empty list', [], null],
    ['not finite', [space('old_space', Number.NaN, 5)], null],
    ['infinite', [space('old_space', 1, Number.POSITIVE_INFINITY)], null],
  ];
  for (const [name, spaces, want] of cases) t.is(oldSpaceSlack(spaces), want, name);
});

test('reduceHeapFully: a second collection only when the first left OLD_SPACE_SLACK_BYTES or more', (t) => {
  const MB = 1048576;
  const old = (usedMb: number, committedMb: number) => [{ space_name: 'old_space', space_used_size: usedMb * MB, physical_space_size: committedMb * MB }];
  const cases: [string, ReturnType<typeof old>[] | 'throws', number][] = [
    ['compacted at once', [old(78, 81)], 1],
    ['just below the limit', [old(78, 78 + OLD_SPACE_SLACK_BYTES / MB - 1)], 1],
    ['at the limit', [old(78, 78 + OLD_SPACE_SLACK_BYTES / MB)], 2],
    ['fragmented, then compacted', [old(76, 100), old(76, 80)], 2],
    ['still fragmented after two: no third', [old(76, 100), old(76, 100), old(76, 100)], 2],
    ['statistics throw: one collection', 'throws', 1],
  ];
  for (const [name, seq, want] of cases) {
    let calls = 0;
    let read = 0;
    const r = reduceHeapFully(() => ({ v8MemoryPressure: () => { calls++; return true; } }), () => {
      if (seq === 'throws') throw new Error('no statistics');
      return seq[Math.min(read++, seq.length - 1)];
    });
    t.is(calls, want, `${name}: collections`);
    t.is(r?.rounds, want, `${name}: rounds reported`);
    t.true(r !== null && r.ms >= 0, name);
  }
  // No addon: null, and no statistics read.
  t.is(reduceHeapFully(() => ({}), () => { throw new Error('must not be read'); }), null);
  // The second collection failing: one reported.
  let n = 0;
  t.deepEqual(reduceHeapFully(() => ({ v8MemoryPressure: () => ++n === 1 }), () => old(76, 100))?.rounds, 1);
});
