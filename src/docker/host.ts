/**
 * `dockerHost` (config key, or $DOCKER_HOST) → dockerode connection options.
 *
 * Accepted forms, as the docker CLI spells them:
 *   unix:///var/run/docker.sock   a unix socket
 *   /var/run/docker.sock          a bare path (what people paste from `ls`)
 *   tcp://host:2375               plain HTTP over TCP (also http://); port defaults to 2375
 *   https://host:2376             TLS; port defaults to 2376 (certificates from dockerode's DOCKER_CERT_PATH handling)
 * Anything else (npipe://, ssh://, a typo) is an error naming the value, never a silent default:
 * watching the wrong engine would make berth withdraw every backend.
 */
export type DockerConnectOptions =
  | { socketPath: string }
  | { host: string; port: number; protocol: 'http' | 'https' };

export function parseDockerHost(s: string): DockerConnectOptions {
  const v = s.trim();
  if (v === '') throw new Error('dockerHost is empty (expected unix:///path, /path or tcp://host:port)');
  if (v.startsWith('/')) return { socketPath: v };
  const m = /^([a-z]+):\/\/(.*)$/i.exec(v);
  if (!m) throw new Error(`dockerHost ${JSON.stringify(s)}: expected unix:///path, /path or tcp://host:port`);
  const scheme = m[1].toLowerCase();
  const rest = m[2];
  if (scheme === 'unix') {
    if (!rest.startsWith('/')) throw new Error(`dockerHost ${JSON.stringify(s)}: a unix socket needs an absolute path (unix:///var/run/docker.sock)`);
    return { socketPath: rest };
  }
  if (scheme !== 'tcp' && scheme !== 'http' && scheme !== 'https') {
    throw new Error(`dockerHost ${JSON.stringify(s)}: scheme ${scheme}:// is not supported (use unix:// or tcp://)`);
  }
  const protocol = scheme === 'https' ? 'https' : 'http';
  // Host part only: the engine API has no base path worth honouring, but tolerate a trailing '/'.
  const hostPort = rest.replace(/\/+$/, '');
  if (hostPort.includes('/')) throw new Error(`dockerHost ${JSON.stringify(s)}: unexpected path after host:port`);
  let host: string;
  let portText: string | undefined;
  const v6 = /^\[([0-9a-fA-F:.%\w]+)\](?::(\d*))?$/.exec(hostPort);
  if (v6) {
    host = v6[1];
    portText = v6[2];
  } else {
    const parts = hostPort.split(':');
    if (parts.length > 2) throw new Error(`dockerHost ${JSON.stringify(s)}: write an IPv6 host in brackets, e.g. tcp://[::1]:2375`);
    host = parts[0];
    portText = parts[1];
  }
  if (!host) throw new Error(`dockerHost ${JSON.stringify(s)}: missing host`);
  let port = protocol === 'https' ? 2376 : 2375;
  if (portText !== undefined && portText !== '') {
    if (!/^\d+$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      throw new Error(`dockerHost ${JSON.stringify(s)}: bad port ${JSON.stringify(portText)}`);
    }
    port = Number(portText);
  }
  return { host, port, protocol };
}

/** The default when neither config nor $DOCKER_HOST says otherwise (SPEC: `dockerHost`). */
export const DEFAULT_DOCKER_HOST = 'unix:///var/run/docker.sock';
