#!/usr/bin/env node
/**
 * berthd entry point: parse the configuration (a bad flag or key stops start-up with a message
 * naming it, exit 2), run the daemon, stop cleanly on SIGTERM/SIGINT. Stopping leaves the
 * datapath in place: VIPs keep working across restarts and upgrades; `berth cleanup` removes it.
 */
// First: glibc's arena limit must precede the threads that the other modules start.
import './malloc-first';
import { ConfigError, loadConfig, usage } from './config';
import { createLogger } from '../util/log';
import { systemdRestartPending } from './restart';
import { Daemon } from './daemon';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(usage() + '\n');
    return;
  }
  let cfg;
  try {
    cfg = loadConfig(argv);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`berthd: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  const log = createLogger(cfg.config.logLevel);
  log.info({ config: cfg.config, sources: cfg.sources, configFile: cfg.configFile }, 'berthd starting');
  const daemon = new Daemon(cfg, log);

  let exiting = false;
  // SIGUSR2: exit for a restart or upgrade, Envoy keeps serving and the next berthd adopts it.
  // SIGTERM/SIGINT: stop everything, unless systemd is restarting this unit (restart.ts).
  const shutdown = (signal: string) => {
    if (exiting) return;
    exiting = true;
    const force = setTimeout(() => process.exit(1), 10000);
    force.unref();
    const keep = signal === 'SIGUSR2' ? Promise.resolve(true) : systemdRestartPending().catch(() => false);
    keep.then((keepEnvoy) => {
      log.info({ signal, keepEnvoy }, keepEnvoy ? 'shutting down for a restart; Envoy keeps serving' : 'shutting down');
      return daemon.stop({ keepEnvoy });
    }).then(() => process.exit(0), (e: Error) => {
      log.error({ err: e }, 'error while stopping');
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGUSR2', () => shutdown('SIGUSR2'));
  process.on('uncaughtException', (e) => {
    log.fatal({ err: e }, 'uncaught exception');
    process.exit(1);
  });
  process.on('unhandledRejection', (e) => {
    log.fatal({ err: e }, 'unhandled rejection');
    process.exit(1);
  });

  try {
    await daemon.start();
  } catch (e) {
    log.fatal({ err: e }, `berthd failed to start: ${(e as Error).message}`);
    await daemon.stop().catch(() => undefined);
    process.exit(1);
  }
}

void main();
