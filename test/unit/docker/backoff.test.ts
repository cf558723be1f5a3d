import test from 'ava';
import { Backoff } from '../../../src/docker/backoff';

test('doubles from the minimum, capped at the maximum; reset starts over', (t) => {
  const b = new Backoff(250, 10000, () => 0.5); // jitter factor exactly 1
  t.deepEqual(Array.from({ length: 8 }, () => b.next()), [250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
  b.reset();
  t.is(b.next(), 250);
});

test('jitter stays within ±20 % and never exceeds the cap', (t) => {
  const lo = new Backoff(1000, 10000, () => 0);
  const hi = new Backoff(1000, 10000, () => 0.999999);
  t.is(lo.next(), 800);
  t.is(hi.next(), 1200);
  for (let i = 0; i < 10; i++) hi.next();
  t.is(hi.next(), 10000);
});
