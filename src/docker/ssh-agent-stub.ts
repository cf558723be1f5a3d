/**
 * The stand-in for docker-modem's `lib/ssh.js` (its ssh:// agent factory, which loads ssh2):
 * same shape, and it throws if ever called, so a stray ssh:// Docker host can never connect
 * somewhere silently. no-ssh.ts puts it in require.cache for the tsc output; the bundles
 * (scripts/bundle.ts) link it in place of ssh.js. Why: no-ssh.ts.
 */
export = function noSsh(): never {
  throw new Error('ssh:// Docker hosts are not supported by berth (use unix:// or tcp://)');
};
