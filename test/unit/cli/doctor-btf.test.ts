/** btfHasFunc: a whole NUL-delimited name in a BTF string section, nothing else. */
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { btfHasFunc } from '../../../src/cli/doctor';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-btf-'));
const btf = path.join(dir, 'vmlinux');
// A fake string section: names separated by NULs, as in BTF.
fs.writeFileSync(btf, Buffer.concat([Buffer.from([0x9f, 0xeb, 1, 0]), Buffer.from('\0bpf_sock_destroy\0bpf_sk_assign\0tcp_v4_connect\0')]));
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

const cases: [string, string, boolean][] = [
  ['present', 'bpf_sock_destroy', true],
  ['another present name', 'tcp_v4_connect', true],
  ['absent', 'bpf_iter_udp', false],
  ['prefix of a present name is not a match', 'bpf_sock', false],
  ['suffix of a present name is not a match', 'sock_destroy', false],
  ['empty name', '', false],
];
for (const [what, name, want] of cases) {
  test(`btfHasFunc: ${what}`, (t) => { t.is(btfHasFunc(name, btf), want); });
}

test('btfHasFunc: no BTF file is "missing", not an error', (t) => {
  t.false(btfHasFunc('bpf_sock_destroy', path.join(dir, 'nope')));
});
