import type { DockerSnapshot } from '../model/types';

export type DockerConnection = 'connecting' | 'connected' | 'disconnected';

/** The contract of src/docker/watcher.ts (class DockerWatcher implements it, an EventEmitter). */
export interface DockerWatcherApi {
  /** Subscribe to events, then list everything; reconnect forever with capped backoff. */
  start(): void;
  stop(): Promise<void>;
  readonly connection: DockerConnection;
  /** The last full snapshot, or null before the first full list succeeded. Never "empty because unreachable". */
  readonly snapshot: DockerSnapshot | null;
  readonly reconnects: number;
  /**
   * Events: 'snapshot' (snap: DockerSnapshot) after every full list (on relevant events, debounced,
   * on reconnect and on the periodic resync); 'connection' (state: DockerConnection); 'error' is
   * never emitted for Docker being unreachable (that is a 'connection' change, logged).
   */
  on(event: 'snapshot', fn: (snap: DockerSnapshot) => void): this;
  on(event: 'connection', fn: (state: DockerConnection) => void): this;
}
