import test from 'ava';
import { parseDockerHost } from '../../../src/docker/host';

const good: [string, ReturnType<typeof parseDockerHost>][] = [
  ['unix:///var/run/docker.sock', { socketPath: '/var/run/docker.sock' }],
  ['/var/run/docker.sock', { socketPath: '/var/run/docker.sock' }],
  ['  /run/other.sock ', { socketPath: '/run/other.sock' }],
  ['UNIX:///tmp/d.sock', { socketPath: '/tmp/d.sock' }],
  ['tcp://127.0.0.1:2375', { host: '127.0.0.1', port: 2375, protocol: 'http' }],
  ['tcp://docker.local', { host: 'docker.local', port: 2375, protocol: 'http' }],
  ['tcp://127.0.0.1:12345/', { host: '127.0.0.1', port: 12345, protocol: 'http' }],
  ['http://localhost:80', { host: 'localhost', port: 80, protocol: 'http' }],
  ['https://engine:2376', { host: 'engine', port: 2376, protocol: 'https' }],
  ['https://engine', { host: 'engine', port: 2376, protocol: 'https' }],
  ['tcp://[::1]:2375', { host: '::1', port: 2375, protocol: 'http' }],
  ['tcp://[fd00::2]', { host: 'fd00::2', port: 2375, protocol: 'http' }],
];
for (const [input, want] of good) {
  test(`parseDockerHost(${JSON.stringify(input)})`, (t) => {
    t.deepEqual(parseDockerHost(input), want);
  });
}

const bad: [string, RegExp][] = [
  ['', /empty/],
  ['docker.sock', /expected unix/],
  ['unix://relative.sock', /absolute path/],
  ['npipe:////./pipe/docker_engine', /npipe:\/\/ is not supported/],
  ['ssh://user@host', /ssh:\/\/ is not supported/],
  ['tcp://', /missing host/],
  ['tcp://host:0', /bad port/],
  ['tcp://host:65536', /bad port/],
  ['tcp://host:abc', /bad port/],
  ['tcp://::1:2375', /brackets/],
  ['tcp://host:2375/v1.41', /unexpected path/],
];
for (const [input, err] of bad) {
  test(`parseDockerHost rejects ${JSON.stringify(input)}`, (t) => {
    const e = t.throws(() => parseDockerHost(input));
    t.regex(e!.message, err);
    if (input.trim()) t.true(e!.message.includes(JSON.stringify(input)), 'the error names the value');
  });
}
