import pino from 'pino';

export type Logger = pino.Logger;

/** berthd logs JSON lines to stdout (journald picks them up under systemd). */
export function createLogger(level: string = 'info'): Logger {
  return pino({ level, base: { name: 'berthd' } });
}

/** A logger that drops everything, for unit tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
