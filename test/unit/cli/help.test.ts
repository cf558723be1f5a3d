/**
 * `berth <command> --help` prints the usage and does nothing else: `berth cleanup --help` once
 * ran the cleanup. The CLI runs as a child process with its run and pin directories in a temp
 * dir, so a regression removes only that dir (which the test then sees gone).
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

// The bundle, as users run it (scripts/bundle.ts; test/unit/bundle.test.ts checks it is self-contained).
const CLI = path.join(__dirname, '../../../berth.js');

for (const cmd of ['cleanup', 'services', 'status', 'doctor']) {
  for (const flag of ['--help', '-h']) {
    test(`berth ${cmd} ${flag}: usage on stdout, exit 0, nothing touched`, (t) => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-help-'));
      t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
      const pins = path.join(dir, 'pins');
      fs.mkdirSync(pins);
      fs.writeFileSync(path.join(pins, 'marker'), '');
      const r = spawnSync(process.execPath, [CLI, cmd, flag, '--run-dir', path.join(dir, 'run'), '--bpf-pin-dir', pins, '--socket', path.join(dir, 'none.sock')], { encoding: 'utf8', timeout: 20000 });
      t.is(r.status, 0, r.stderr);
      t.regex(r.stdout, /^usage: berth <command>/);
      t.true(fs.existsSync(path.join(pins, 'marker')), 'the pin directory is untouched');
    });
  }
}

test('berth services --bogus: the unknown flag is named (not "needs a value"), exit 2', (t) => {
  const r = spawnSync(process.execPath, [CLI, 'services', '--bogus'], { encoding: 'utf8', timeout: 20000 });
  t.is(r.status, 2);
  t.regex(r.stderr, /unknown flag --bogus/);
});
