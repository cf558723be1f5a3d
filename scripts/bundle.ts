/**
 * Build step (`npm run build:bundle`, the last part of `npm run build`, after tsc and
 * build:protos): link berthd and the CLI, each with the modules it loads, into one CommonJS file:
 *   dist/src/daemon/main.js -> dist/berthd.js   (what systemd, scripts/install and the tests run)
 *   dist/src/cli/main.js    -> dist/berth.js
 * with esbuild (platform node, target node20, not minified, a source map beside each).
 *
 * Why: most of berthd's fixed start-up cost is loading its ~700 module files (resolving each
 * path, reading and wrapping it, node's CommonJS loader per module), not compiling them; in the
 * emulated QEMU guests of the VM tests that is 9-29 s per start. README: "The fixed start-up
 * cost" (Benchmarks) has what the bundle measured.
 *
 * What stays outside the bundle, loaded at run time from where tsc and npm put it:
 * - the native addon and the BPF objects (build/, found from the package root: src/util/root.ts);
 * - the Envoy definitions and static code (dist/src/proxy/envoy-protos.json, envoy-static.js:
 *   src/proxy/protos.ts, found the same way); the static code requires `protobufjs/minimal`, so
 *   protobufjs stays external (one copy for berth and the static code, not two);
 * - etcd3 (cluster mode only, loaded on demand): it reads its .proto file from its own
 *   `__dirname` at load time, which in a bundle would be dist/. Outside, it loads its own copy of
 *   @grpc/grpc-js from node_modules (~0.1 s of CPU once, in cluster mode only) while the ADS
 *   server keeps the bundled one; berth passes no gRPC object between the two;
 * - package files read through require.resolve (@grpc/grpc-js-xds' package.json and protos).
 * Left in, though they name files beside their own source: pino's transport workers (berth logs
 * to stdout, no transport), grpc-js' channelz and ORCA protos and dockerode's BuildKit protos
 * (features berth does not use).
 * docker-modem's ssh.js (which loads ssh2 and its .node add-ons) is replaced by
 * src/docker/ssh-agent-stub.ts, as docker/no-ssh.ts does for the unbundled code.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as esbuild from 'esbuild';

const ROOT = path.resolve(__dirname, '..', '..');
const DIST = path.join(ROOT, 'dist');

/** The bundles: entry (tsc output) -> output, both below dist/. */
export const BUNDLES: readonly { entry: string; out: string }[] = [
  { entry: 'src/daemon/main.js', out: 'berthd.js' },
  { entry: 'src/cli/main.js', out: 'berth.js' },
];

/** Packages the bundles load from node_modules at run time (see the header for why). */
export const EXTERNAL: readonly string[] = ['protobufjs', 'protobufjs/*', 'etcd3', '@grpc/grpc-js-xds/package.json'];

/** Link the stand-in in place of docker-modem's `./ssh` (required by its lib/modem.js). */
const noSshPlugin: esbuild.Plugin = {
  name: 'berth-no-ssh',
  setup(build) {
    build.onResolve({ filter: /^\.\/ssh$/ }, (args) => {
      if (!/[\\/]docker-modem[\\/]lib[\\/]modem\.js$/.test(args.importer)) return undefined;
      return { path: path.join(DIST, 'src/docker/ssh-agent-stub.js') };
    });
  },
};

async function main(): Promise<void> {
  for (const b of BUNDLES) {
    const entry = path.join(DIST, b.entry);
    const outfile = path.join(DIST, b.out);
    const result = await esbuild.build({
      entryPoints: [entry],
      outfile,
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      sourcemap: true,
      external: [...EXTERNAL],
      plugins: [noSshPlugin],
      logLevel: 'warning',
      metafile: true,
    });
    const inputs = Object.keys(result.metafile.inputs).length;
    process.stdout.write(`wrote ${outfile} (${inputs} modules, ${fs.statSync(outfile).size} bytes)\n`);
  }
}

if (require.main === module) {
  main().catch((e: unknown) => {
    process.stderr.write(`bundle: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  });
}
