/** parseTimeScale (BERTH_TEST_TIME_SCALE): the factor the VM matrix gives test bounds under TCG. */
import test from 'ava';
import { parseTimeScale } from '../../helpers/time';

const good: [string | undefined, number][] = [[undefined, 1], ['', 1], ['1', 1], ['8', 8], ['2.5', 2.5]];
for (const [raw, want] of good) {
  test(`BERTH_TEST_TIME_SCALE=${JSON.stringify(raw)} is ${want}`, (t) => { t.is(parseTimeScale(raw), want); });
}
for (const raw of ['0', '0.5', '-3', 'fast', 'Infinity', 'NaN']) {
  test(`BERTH_TEST_TIME_SCALE=${raw} throws naming the variable`, (t) => {
    t.throws(() => parseTimeScale(raw), { message: new RegExp(`^BERTH_TEST_TIME_SCALE=${raw}: want a number >= 1`) });
  });
}
