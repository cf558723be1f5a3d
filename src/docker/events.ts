/**
 * What a Docker event means to the watcher. Events are only hints ("something changed, re-list"),
 * with one exception: a container being stopped must leave the backend set at once, before it
 * dies, and only the event stream knows that early (its State is still "running").
 */
import os from 'node:os';

/** The fields of a Docker event message the watcher reads. */
export interface DockerEvent {
  Type?: string;
  Action?: string;
  /** Older engines: the status (action) and id at the top level. */
  status?: string;
  id?: string;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
  time?: number;
  timeNano?: number;
}

export type StoppingChange = 'mark' | 'clear' | 'forget' | null;

export interface EventMeaning {
  /** Worth a full re-list. */
  relist: boolean;
  /** The container (for container events). */
  id: string | null;
  /** mark: stopping from now; clear: started again; forget: destroyed. */
  stopping: StoppingChange;
  /**
   * A kill with a signal outside STOP_SIGNALS while the container's own StopSignal is unknown
   * (stopSignalOf gave null): it may be that StopSignal (SIGQUIT for nginx), which only an
   * inspect can tell.
   */
  askStopSignal: boolean;
}

const CONTAINER_ACTIONS = new Set(['start', 'die', 'kill', 'stop', 'destroy', 'rename', 'pause', 'unpause', 'restart', 'oom']);
const NETWORK_ACTIONS = new Set(['connect', 'disconnect', 'create', 'destroy']);

/**
 * Signals that end a container: SIGKILL, SIGTERM (docker stop's default) and SIGINT. A kill event
 * also fires for `docker kill -s HUP` (reload) or USR1 (log rotation): those containers keep
 * serving, so withdrawing them would be an outage of our own making. The container's own
 * StopSignal (e.g. SIGQUIT for nginx) is added by the caller, since `docker stop` sends that.
 */
export const STOP_SIGNALS: ReadonlySet<number> = new Set([9, 15, 2]);

/** "SIGTERM", "TERM", "15" → 15; unknown → null. */
export function signalNumber(s: string | undefined | null): number | null {
  if (s === undefined || s === null || s === '') return null;
  if (/^\d+$/.test(s)) return Number(s);
  const name = s.toUpperCase().startsWith('SIG') ? s.toUpperCase() : `SIG${s.toUpperCase()}`;
  const n = (os.constants.signals as Record<string, number>)[name];
  return typeof n === 'number' ? n : null;
}

/**
 * Classify one event. `stopSignalOf(id)` gives the container's configured StopSignal number when
 * the watcher knows it (from its last inspect).
 */
export function interpret(ev: DockerEvent, stopSignalOf: (id: string) => number | null): EventMeaning {
  const type = ev.Type ?? 'container';
  // health events arrive as "health_status: healthy"; exec events as "exec_start: sh -c …".
  const action = (ev.Action ?? ev.status ?? '').split(':')[0].trim();
  const id = ev.Actor?.ID ?? ev.id ?? null;
  if (type === 'network') return { relist: NETWORK_ACTIONS.has(action), id: null, stopping: null, askStopSignal: false };
  if (type !== 'container') return { relist: false, id: null, stopping: null, askStopSignal: false };
  if (action === 'health_status') return { relist: true, id, stopping: null, askStopSignal: false };
  if (!CONTAINER_ACTIONS.has(action)) return { relist: false, id, stopping: null, askStopSignal: false };
  let stopping: StoppingChange = null;
  let askStopSignal = false;
  if (action === 'start') stopping = 'clear';
  else if (action === 'destroy') stopping = 'forget';
  else if (action === 'stop') stopping = 'mark';
  else if (action === 'kill') {
    const sig = signalNumber(ev.Actor?.Attributes?.signal);
    // An unknown signal attribute is treated as a stop: missing one stop is worse than one
    // needless withdrawal, which the next start (or resync after a reconnect) undoes.
    const own = id !== null ? stopSignalOf(id) : null;
    if (sig === null || STOP_SIGNALS.has(sig) || (own !== null && sig === own)) stopping = 'mark';
    else if (own === null && id !== null) askStopSignal = true;
  }
  return { relist: true, id, stopping, askStopSignal };
}

/** Event time in ms since epoch (timeNano when present: `time` has only second resolution). */
export function eventTimeMs(ev: DockerEvent): number {
  if (typeof ev.timeNano === 'number') return Math.floor(ev.timeNano / 1e6);
  if (typeof ev.time === 'number') return ev.time * 1000;
  return Date.now();
}
