import test from 'ava';
import { QuietCollector } from '../../../src/util/quiet-collector';

const MB = 1048576;

/** A QuietCollector on a fake clock and a fake RSS; `collect` drops RSS to `afterMb`. */
function rig(o: { quietMs?: number; minGrowthMb?: number; rssMb: number; afterMb?: number }) {
  const state = { rss: o.rssMb * MB, collections: 0, timers: new Map<number, { fn: () => void; at: number }>(), now: 0, nextId: 1 };
  const qc = new QuietCollector({
    quietMs: o.quietMs ?? 1000,
    minGrowthBytes: (o.minGrowthMb ?? 32) * MB,
    rss: () => state.rss,
    collect: () => {
      state.collections++;
      state.rss = (o.afterMb ?? o.rssMb) * MB;
    },
    setTimer: (fn, ms) => {
      const id = state.nextId++;
      state.timers.set(id, { fn, at: state.now + ms });
      return id;
    },
    clearTimer: (h) => state.timers.delete(h as number),
  });
  /** Advance the fake clock, firing due timers. */
  const advance = (ms: number) => {
    state.now += ms;
    for (const [id, t] of [...state.timers]) {
      if (t.at <= state.now) {
        state.timers.delete(id);
        t.fn();
      }
    }
  };
  return { qc, state, advance };
}

test('collects once the work pauses for quietMs, when RSS grew by minGrowth; the RSS after is the new baseline', (t) => {
  const { qc, state, advance } = rig({ rssMb: 160, afterMb: 165 });
  state.rss = 250 * MB;
  qc.touched();
  advance(999);
  t.is(state.collections, 0, 'not before quietMs');
  advance(1);
  t.is(state.collections, 1);
  // 165 MB is the baseline now: 190 MB is +25 MB, below 32.
  state.rss = 190 * MB;
  qc.touched();
  advance(1000);
  t.is(state.collections, 1);
  state.rss = 197 * MB;
  qc.touched();
  advance(1000);
  t.is(state.collections, 2);
});

test('work that keeps coming postpones the look; only the last pause counts', (t) => {
  const { qc, state, advance } = rig({ rssMb: 160, afterMb: 160 });
  state.rss = 300 * MB;
  for (let i = 0; i < 50; i++) {
    qc.touched();
    advance(500);
  }
  t.is(state.collections, 0);
  t.is(state.timers.size, 1, 'one timer at a time');
  advance(500);
  t.is(state.collections, 1);
});

test('growth below the threshold, or none, never collects', (t) => {
  const table: [number, number, number][] = [
    // [baseline MB, RSS at the pause MB, threshold MB]
    [160, 160, 32],
    [160, 191.9, 32],
    [160, 120, 32], // RSS fell (V8's own reducer ran): nothing to do
    [80, 111, 32],
  ];
  for (const [base, now, thr] of table) {
    const { qc, state, advance } = rig({ rssMb: base, minGrowthMb: thr });
    state.rss = now * MB;
    qc.touched();
    advance(1000);
    t.is(state.collections, 0, `${base} -> ${now} MB, threshold ${thr}`);
  }
});

test('collected() moves the baseline (a collection berthd ran elsewhere)', (t) => {
  const { qc, state, advance } = rig({ rssMb: 160 });
  state.rss = 260 * MB;
  qc.collected();
  state.rss = 280 * MB;
  qc.touched();
  advance(1000);
  t.is(state.collections, 0);
  t.deepEqual(qc.check(), null);
  state.rss = 300 * MB;
  t.deepEqual(qc.check(), [300 * MB, 160 * MB]);
});

test('stop() cancels a pending look and ignores later work', (t) => {
  const { qc, state, advance } = rig({ rssMb: 160 });
  state.rss = 400 * MB;
  qc.touched();
  qc.stop();
  t.is(state.timers.size, 0);
  qc.touched();
  advance(5000);
  t.is(state.collections, 0);
  t.is(qc.check(), null);
});

test('bad options are refused, naming the option', (t) => {
  const base = { rss: () => 0, collect: () => undefined };
  t.throws(() => new QuietCollector({ ...base, quietMs: 0, minGrowthBytes: MB }), { message: /quietMs/ });
  t.throws(() => new QuietCollector({ ...base, quietMs: Number.NaN, minGrowthBytes: MB }), { message: /quietMs/ });
  t.throws(() => new QuietCollector({ ...base, quietMs: 1000, minGrowthBytes: -1 }), { message: /minGrowthBytes/ });
});
