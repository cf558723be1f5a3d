import test from 'ava';
import http from 'node:http';
import { once } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
// The watcher is what berthd loads: importing it must leave ssh2 out of the process.
import { DockerWatcher } from '../../../src/docker/watcher';
import { sshStubbed } from '../../../src/docker/no-ssh';
import Dockerode from 'dockerode';

const ssh2Loaded = (): string[] => Object.keys(require.cache).filter((k) => /[\\/]node_modules[\\/]ssh2[\\/]/.test(k));

test('loading the watcher and dockerode does not load ssh2 (its 16 MiB WebAssembly memory)', (t) => {
  t.truthy(DockerWatcher);
  t.true(sshStubbed());
  t.deepEqual(ssh2Loaded(), []);
});

test('an ssh:// host given to dockerode directly fails with a clear error, never connects', async (t) => {
  const d = new Dockerode({ protocol: 'ssh', host: '127.0.0.1', port: 1 } as Dockerode.DockerOptions);
  const err = await t.throwsAsync(d.ping());
  t.regex(err!.message, /ssh:\/\/ Docker hosts are not supported/);
  t.deepEqual(ssh2Loaded(), []);
});

test('dockerode still talks to a unix-socket engine with the stand-in in place', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-nossh-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const sock = path.join(dir, 'd.sock');
  const srv = http.createServer((req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end(req.url === '/_ping' ? 'OK' : 'no');
  });
  srv.listen(sock);
  await once(srv, 'listening');
  t.teardown(() => srv.close());
  const d = new Dockerode({ socketPath: sock });
  const r: unknown = await d.ping();
  t.is(String(r), 'OK');
});
