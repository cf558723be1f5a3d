/** kernelAtLeast: release strings as distributions write them, and bad input. */
import test from 'ava';
import { kernelAtLeast } from '../../helpers/kernel';
import { skAssignTakesReuseport } from '../../../src/util/kernel';

const cases: [string, number, number, boolean][] = [
  ['5.10.0-46-amd64', 5, 18, false],
  ['5.18.0', 5, 18, true],
  ['6.1.0-57-amd64', 5, 18, true],
  ['6.1.0-57-amd64', 6, 5, false],
  ['6.12.117+deb12-amd64', 6, 5, true],
  ['6.18.0\n', 6, 5, true],
  ['4.19.0-27-amd64', 5, 8, false],
];
for (const [release, a, b, want] of cases) {
  test(`kernelAtLeast(${a}, ${b}) on ${release.trim()} is ${want}`, (t) => { t.is(kernelAtLeast(a, b, release), want); });
}
test('kernelAtLeast: not a release string throws', (t) => {
  t.throws(() => kernelAtLeast(5, 18, 'linux'), { message: /not a kernel release/ });
  t.throws(() => kernelAtLeast(5, 18, ''), { message: /not a kernel release/ });
});

test('skAssignTakesReuseport: exactly from 6.5 (bpf_sk_assign and SO_REUSEPORT listeners)', (t) => {
  t.false(skAssignTakesReuseport('5.10.0-46-amd64'));
  t.false(skAssignTakesReuseport('6.1.0-57-amd64'));
  t.false(skAssignTakesReuseport('6.4.16'));
  t.true(skAssignTakesReuseport('6.5.0'));
  t.true(skAssignTakesReuseport('6.12.117+deb12-amd64'));
});
