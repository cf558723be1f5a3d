/**
 * Keep dockerode from loading ssh2: import this module before `dockerode`.
 *
 * Why: docker-modem (dockerode's transport) requires its `ssh.js` at load time, and that
 * requires ssh2, whose poly1305 is an emscripten module with a 16 MiB WebAssembly memory (the
 * largest single object in a heap snapshot of berthd at ready). `require('ssh2')` costs ~0.1 s of
 * CPU and 13 MB of RSS in a fresh node 20; in berthd (paired runs at 10 services) 86 -> 83 MB RSS
 * and ~0.1 s less CPU to ready, since most of that memory is never touched. All for `ssh://`
 * Docker hosts that berth rejects anyway (docker/host.ts: only unix:// and tcp:// are accepted).
 *
 * How: node's CommonJS loader returns a module already in `require.cache` without reading the
 * file, so an entry for docker-modem's `lib/ssh.js` stands in for it. The stand-in has the same
 * shape (a function making an http.Agent for an ssh host) and throws a clear error if it is ever
 * called, so a stray ssh:// host can never connect somewhere silently. When docker-modem is not
 * where this expects it (another layout or version), nothing is replaced and dockerode loads as
 * before. In the bundles (dist/berthd.js, dist/berth.js) docker-modem is linked in, so this finds
 * nothing to replace there: scripts/bundle.ts links the same stand-in (ssh-agent-stub.ts) in
 * place of ssh.js at build time.
 */
import Module from 'node:module';
import path from 'node:path';
import noSsh from './ssh-agent-stub';

/** Absolute path of docker-modem's ssh.js as dockerode would resolve it, or null. */
function modemSshPath(): string | null {
  try {
    const dockerodeDir = path.dirname(require.resolve('dockerode/package.json'));
    return require.resolve('docker-modem/lib/ssh.js', { paths: [dockerodeDir] });
  } catch {
    return null;
  }
}

/** True when the stand-in is in place (exported for the unit test). */
export function sshStubbed(): boolean {
  const file = modemSshPath();
  return !!file && require.cache[file]?.exports === noSsh;
}


const file = modemSshPath();
if (file && !require.cache[file]) {
  const m = new Module(file, module);
  m.filename = file;
  m.loaded = true;
  m.exports = noSsh;
  require.cache[file] = m;
}
