/**
 * Build step (`npm run build:protos`, part of `npm run build`):
 * 1. parse Envoy's .proto files once and write protobufjs' JSON form of them to
 *    dist/src/proxy/envoy-protos.json, which berthd loads instead of parsing the .proto files on
 *    every start (src/proxy/protos.ts);
 * 2. generate static encoders, decoders and converters for the messages berth sends and reads
 *    (TOP_LEVEL_TYPES and every message reachable from them) with protobufjs-cli's
 *    `pbjs -t static-module --filter`, to dist/src/proxy/envoy-static.js, stamped with the files
 *    and versions it was made from; berthd uses it instead of protobufjs' run-time code
 *    generation (why: src/proxy/protos.ts).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PRECOMPILED, STATIC_CODE, TOP_LEVEL_TYPES, loadPrecompiled, precompile, typeClosure } from '../src/proxy/protos';

// protobufjs-cli has no types of its own.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { pbjs } = require('protobufjs-cli') as { pbjs: { main(args: string[], cb: (err: Error | null, out?: string) => void): void } };

async function main(): Promise<void> {
  const data = precompile();
  const tmp = `${PRECOMPILED}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(data));
  fs.renameSync(tmp, PRECOMPILED);
  process.stdout.write(`wrote ${PRECOMPILED} (${fs.statSync(PRECOMPILED).size} bytes)\n`);

  const root = loadPrecompiled(PRECOMPILED);
  if (!root) throw new Error(`${PRECOMPILED}: just written, but not loadable`);
  const types = typeClosure(root, TOP_LEVEL_TYPES);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-pbjs-'));
  try {
    const rootJson = path.join(work, 'root.json');
    const filter = path.join(work, 'filter.json');
    const out = path.join(work, 'static.js');
    fs.writeFileSync(rootJson, JSON.stringify(data.root));
    fs.writeFileSync(filter, JSON.stringify({ messageNames: types }));
    // No create/verify/delimited/typeurl/service code: berth never calls them. A root of its own
    // (-r): the static types do not land in protobufjs' shared default root.
    const args = ['-t', 'static-module', '-w', 'commonjs', '-r', 'berth_envoy', '--filter', filter,
      '--no-create', '--no-verify', '--no-delimited', '--no-typeurl', '--no-service', '--no-comments', '--no-beautify', '-o', out, rootJson];
    await new Promise<void>((resolve, reject) => pbjs.main(args, (err) => (err ? reject(err) : resolve())));
    const stamp = { files: data.files, source: data.source };
    fs.appendFileSync(out, `\n// The files and versions this was generated from (src/proxy/protos.ts loadStatic).\n$root.berthSource = ${JSON.stringify(stamp)};\n`);
    fs.copyFileSync(out, `${STATIC_CODE}.tmp`);
    fs.renameSync(`${STATIC_CODE}.tmp`, STATIC_CODE);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  process.stdout.write(`wrote ${STATIC_CODE} (${types.length} messages, ${fs.statSync(STATIC_CODE).size} bytes)\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`envoy-protos: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
