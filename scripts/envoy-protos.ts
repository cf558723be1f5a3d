/**
 * Build step (`npm run build:protos`, part of `npm run build`): parse Envoy's .proto files once
 * and write protobufjs' JSON form of them to dist/src/proxy/envoy-protos.json, which berthd
 * loads instead of parsing the .proto files on every start (src/proxy/protos.ts).
 */
import fs from 'node:fs';
import { PRECOMPILED, precompile } from '../src/proxy/protos';

const tmp = `${PRECOMPILED}.tmp`;
fs.writeFileSync(tmp, JSON.stringify(precompile()));
fs.renameSync(tmp, PRECOMPILED);
process.stdout.write(`wrote ${PRECOMPILED} (${fs.statSync(PRECOMPILED).size} bytes)\n`);
