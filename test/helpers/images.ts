/**
 * The one local test image every integration test runs, built without a registry:
 *
 *   berth-test/busybox:<hash>  (and :latest)
 *     /bin/busybox + an applet link for each applet (sh, httpd, nc, sleep, …)
 *     /usr/local/bin/berth-udp-echo, berth-tcp-echo, berth-probe   (test/helpers/c, gcc -static -O2)
 *     /www (empty, writable: `httpd -f -p PORT -h /www`), /tmp (1777)
 *
 * <hash> covers the C sources, the busybox binary and this recipe, so an edited tool gives a new
 * image and an unchanged tree reuses the cached one (a second run costs one `docker image inspect`).
 * The same static binaries stay in build/test-bin/ (TEST_BIN_DIR) for the host and for netns.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../src/util/exec';

/** The repository root (this file runs from dist/test/helpers/). */
export const REPO_ROOT = path.resolve(__dirname, '../../..');
/** Where the static helper binaries are built on the host. */
export const TEST_BIN_DIR = path.join(REPO_ROOT, 'build/test-bin');
/** Their sources. */
export const TEST_C_DIR = path.join(REPO_ROOT, 'test/helpers/c');
export const TEST_IMAGE_REPO = 'berth-test/busybox';
/** Always points at the newest build; prefer the tag ensureTestImage() returns. */
export const TEST_IMAGE = `${TEST_IMAGE_REPO}:latest`;
/** The tools, each built from test/helpers/c/<name>.c. */
export const TEST_TOOLS = ['berth-udp-echo', 'berth-tcp-echo', 'berth-probe'] as const;
export type TestTool = (typeof TEST_TOOLS)[number];

/** Bump when the image layout below changes (it is part of the hash). */
const RECIPE = 'berth-test-image v1: busybox applets in /bin, tools in /usr/local/bin, /www, /tmp 1777';
const BUSYBOX_CANDIDATES = ['/bin/busybox', '/usr/bin/busybox'];

function busyboxPath(): string {
  const p = BUSYBOX_CANDIDATES.find((c) => fs.existsSync(c));
  if (!p) throw new Error('busybox not found: apt-get install busybox-static (scripts/setup does)');
  return p;
}

function sourcesHash(): string {
  const h = crypto.createHash('sha256');
  for (const f of fs.readdirSync(TEST_C_DIR).sort()) {
    h.update(`${f}\0`);
    h.update(fs.readFileSync(path.join(TEST_C_DIR, f)));
  }
  return h.digest('hex');
}

/** Absolute host path of one helper binary (build it first with buildTestBinaries()). */
export function testBin(tool: TestTool): string {
  return path.join(TEST_BIN_DIR, tool);
}

let binaries: Promise<string> | null = null;

/**
 * Compile the C helpers into build/test-bin/ unless they are current. Each binary is written to a
 * temporary name and renamed into place, so concurrent test processes never see a half-written one.
 */
export function buildTestBinaries(): Promise<string> {
  binaries ??= (async () => {
    const hash = sourcesHash();
    const stamp = path.join(TEST_BIN_DIR, '.sources-sha256');
    const current = fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === hash && TEST_TOOLS.every((t) => fs.existsSync(testBin(t)));
    if (!current) {
      fs.mkdirSync(TEST_BIN_DIR, { recursive: true });
      for (const tool of TEST_TOOLS) {
        const tmp = path.join(TEST_BIN_DIR, `.${tool}.${process.pid}.tmp`);
        const r = await run('gcc', ['-static', '-O2', '-Wall', '-o', tmp, path.join(TEST_C_DIR, `${tool}.c`)], { timeoutMs: 120000 });
        if (r.code !== 0) throw new Error(`gcc ${tool}.c failed:\n${r.stderr}`);
        fs.renameSync(tmp, testBin(tool));
      }
      const tmpStamp = `${stamp}.${process.pid}.tmp`;
      fs.writeFileSync(tmpStamp, hash);
      fs.renameSync(tmpStamp, stamp);
    }
    return TEST_BIN_DIR;
  })();
  binaries.catch(() => (binaries = null)); // a failed build is retried by the next caller
  return binaries;
}

/**
 * Docker CLI calls here get minutes, not run()'s default 15 s: in a TCG guest on a loaded host
 * (test/vm) a `docker tag` took longer than that and failed a working setup.
 */
const DOCKER_CLI_MS = 180000;

async function imageExists(ref: string): Promise<boolean> {
  return (await run('docker', ['image', 'inspect', '--format', '{{.Id}}', ref], { timeoutMs: DOCKER_CLI_MS })).code === 0;
}

function buildRootfs(dir: string): void {
  for (const d of ['bin', 'etc', 'www', 'proc', 'sys', 'dev', 'run', 'root', 'usr/local/bin', 'var']) fs.mkdirSync(path.join(dir, d), { recursive: true });
  fs.mkdirSync(path.join(dir, 'tmp'), { mode: 0o1777 });
  fs.chmodSync(path.join(dir, 'tmp'), 0o1777);
  const bb = path.join(dir, 'bin/busybox');
  fs.copyFileSync(busyboxPath(), bb);
  fs.chmodSync(bb, 0o755);
}

let image: Promise<string> | null = null;

/**
 * Build (once per content hash) and return the test image's tag, e.g. `berth-test/busybox:1a2b3c4d5e6f`.
 * Also tags it `berth-test/busybox:latest` (TEST_IMAGE). Safe to call from every test file.
 */
export function ensureTestImage(): Promise<string> {
  image ??= (async () => {
    await buildTestBinaries();
    const h = crypto.createHash('sha256');
    h.update(RECIPE);
    h.update(sourcesHash());
    h.update(fs.readFileSync(busyboxPath()));
    const tag = `${TEST_IMAGE_REPO}:${h.digest('hex').slice(0, 12)}`;
    if (!(await imageExists(tag))) {
      const root = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-test-rootfs-'));
      try {
        buildRootfs(root);
        const applets = await run(path.join(root, 'bin/busybox'), ['--list']);
        if (applets.code !== 0) throw new Error(`busybox --list failed: ${applets.stderr}`);
        for (const a of applets.stdout.split('\n').map((x) => x.trim()).filter((x) => x && x !== 'busybox')) {
          const link = path.join(root, 'bin', a);
          if (!fs.existsSync(link)) fs.symlinkSync('busybox', link);
        }
        fs.writeFileSync(path.join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n');
        fs.writeFileSync(path.join(root, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
        for (const tool of TEST_TOOLS) {
          fs.copyFileSync(testBin(tool), path.join(root, 'usr/local/bin', tool));
          fs.chmodSync(path.join(root, 'usr/local/bin', tool), 0o755);
        }
        // tar | docker import: no Dockerfile, no registry, no base image.
        const r = await run('bash', ['-c', 'set -o pipefail; tar -C "$1" --numeric-owner -c . | docker import -c "$2" -c "$3" - "$4"', '_',
          root, 'ENV PATH=/usr/local/bin:/bin', 'CMD ["/bin/sh"]', tag], { timeoutMs: DOCKER_CLI_MS });
        if (r.code !== 0) throw new Error(`docker import failed: ${r.stderr}`);
      } finally {
        fs.rmSync(root, { recursive: true, force: true });
      }
    }
    const t = await run('docker', ['tag', tag, TEST_IMAGE], { timeoutMs: DOCKER_CLI_MS });
    if (t.code !== 0) throw new Error(`docker tag failed: ${t.stderr}`);
    await removeStaleTags(tag);
    return tag;
  })();
  image.catch(() => (image = null));
  return image;
}

/**
 * Drop older berth-test/busybox:<hash> tags so edits of the tools do not pile up images. `docker
 * rmi` without --force refuses an image a container still uses: other tests are never disturbed.
 */
async function removeStaleTags(keep: string): Promise<void> {
  const r = await run('docker', ['image', 'ls', '--format', '{{.Repository}}:{{.Tag}}', TEST_IMAGE_REPO], { timeoutMs: DOCKER_CLI_MS });
  const stale = r.stdout.split('\n').map((x) => x.trim()).filter((x) => x && x !== keep && x !== TEST_IMAGE && /^berth-test\/busybox:[0-9a-f]{12}$/.test(x));
  for (const s of stale) await run('docker', ['rmi', s], { timeoutMs: DOCKER_CLI_MS });
}
