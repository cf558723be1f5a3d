/**
 * Where berth's own files are, whichever way it runs: the tsc output (dist/src/<dir>/<file>.js),
 * the bundles (dist/berthd.js, dist/berth.js: `npm run build:bundle`, scripts/bundle.ts) or an
 * install (/opt/berth). In a bundle `__dirname` is dist/ for every module in it, so a path made
 * relative to one source file's place (`__dirname + '/../..'`) is wrong there; the root found
 * once from here is right in both.
 */
import fs from 'node:fs';
import path from 'node:path';

let root: string | null = null;

/**
 * The repository (or install) root: the nearest ancestor of this file's directory that holds
 * package.json. Searched once (8 levels at most); without one, two levels up.
 */
export function packageRoot(): string {
  if (root) return root;
  let dir = __dirname;
  for (let i = 0; i < 8; i++) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return (root = dir);
    dir = path.dirname(dir);
  }
  return (root = path.resolve(__dirname, '..', '..'));
}

/** A file of the tsc output, by its path below dist/ (e.g. `src/proxy/envoy-protos.json`). */
export function distPath(rel: string): string {
  return path.join(packageRoot(), 'dist', rel);
}
