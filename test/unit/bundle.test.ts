/**
 * The bundles of `npm run build` (scripts/bundle.ts): dist/berthd.js and dist/berth.js are what
 * systemd, scripts/install's wrappers and the integration tests run, so a bundle that does not
 * start, or that quietly loads the unbundled files or ssh2 after all, fails here. Each runs as a
 * child process with a preload that reports, at exit, every file node's loader read.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CONFIG_KEYS, kebab, usage } from '../../src/daemon/config';
import { packageRoot, distPath } from '../../src/util/root';
import { PRECOMPILED, STATIC_CODE } from '../../src/proxy/protos';

const DIST = path.resolve(__dirname, '../..');
const REPO = path.dirname(DIST);

/** Run `node <preload> dist/<bundle> ...args`: exit code, output, and the files loaded (absolute). */
function runBundle(bundle: string, args: string[]): { status: number | null; stdout: string; stderr: string; loaded: string[] } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-bundle-'));
  try {
    const list = path.join(dir, 'loaded.json');
    const preload = path.join(dir, 'preload.js');
    fs.writeFileSync(preload, `process.on('exit', () => require('fs').writeFileSync(${JSON.stringify(list)}, JSON.stringify(Object.keys(require.cache))));\n`);
    const r = spawnSync(process.execPath, ['--require', preload, path.join(DIST, bundle), ...args], { encoding: 'utf8', timeout: 60000 });
    const loaded = (JSON.parse(fs.readFileSync(list, 'utf8')) as string[]).filter((f) => f !== preload);
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, loaded };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The package a node_modules file belongs to (`@scope/name` or `name`), or null. */
function packageOf(file: string): string | null {
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(file);
  return m ? m[1] : null;
}

/**
 * What a bundle may load from node_modules: protobufjs (scripts/bundle.ts keeps it external: the
 * build's static code requires it too) and its dependencies. Spelled out here, not taken from
 * bundle.ts: another external package must be a deliberate change to this test as well.
 */
const ALLOWED_PACKAGES = ['protobufjs', '@protobufjs/aspromise', '@protobufjs/base64', '@protobufjs/codegen', '@protobufjs/eventemitter', '@protobufjs/fetch',
  '@protobufjs/float', '@protobufjs/inquire', '@protobufjs/path', '@protobufjs/pool', '@protobufjs/utf8', 'long'];

test('berthd bundle --help: the usage the source prints, every config flag named, exit 0', (t) => {
  const r = runBundle('berthd.js', ['--help']);
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout, usage() + '\n');
  for (const key of CONFIG_KEYS) t.true(r.stdout.includes(`--${kebab(key)} `), `--${kebab(key)} listed`);
});

test('berthd bundle: a bad flag stops start-up naming it, exit 2', (t) => {
  const r = runBundle('berthd.js', ['--no-such-flag', 'x']);
  t.is(r.status, 2, r.stderr);
  t.regex(r.stderr, /^berthd: .*--no-such-flag/);
});

test('berth bundle --help: the CLI usage, exit 0', (t) => {
  const r = runBundle('berth.js', ['--help']);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /^usage: berth <command>/);
});

for (const [bundle, args] of [['berthd.js', ['--help']], ['berth.js', ['--help']]] as const) {
  test(`${bundle} is self-contained: no file of dist/src, no ssh2, only the external packages from node_modules`, (t) => {
    const r = runBundle(bundle, [...args]);
    t.is(r.status, 0, r.stderr);
    t.true(r.loaded.includes(path.join(DIST, bundle)), 'the bundle itself was loaded');
    t.deepEqual(r.loaded.filter((f) => f.startsWith(path.join(DIST, 'src') + path.sep)), [], 'no unbundled berth module');
    const allowed = new Set(ALLOWED_PACKAGES);
    // docker-modem's ssh.js is in require.cache only as docker/no-ssh.ts's stand-in (never read).
    const fromModules = r.loaded.filter((f) => packageOf(f) && !f.endsWith('docker-modem/lib/ssh.js'));
    t.deepEqual(fromModules.filter((f) => !allowed.has(packageOf(f)!)), [], 'only external packages loaded from node_modules');
    t.false(r.loaded.some((f) => /node_modules\/(ssh2|cpu-features)\//.test(f)), 'ssh2 not loaded');
  });
}

test('the package root is the checkout, and the files berthd reads at run time are there', (t) => {
  t.is(packageRoot(), REPO);
  t.is(distPath('src/proxy/envoy-static.js'), STATIC_CODE);
  t.true(fs.existsSync(STATIC_CODE), STATIC_CODE);
  t.true(fs.existsSync(PRECOMPILED), PRECOMPILED);
  // A bundle's __dirname is dist/, which must not hold a package.json of its own (the root search would stop there).
  t.false(fs.existsSync(path.join(DIST, 'package.json')));
});
