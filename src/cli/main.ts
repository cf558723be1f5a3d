#!/usr/bin/env node
/**
 * `berth`: the command-line client. services/status ask the running berthd over its admin
 * socket; doctor and cleanup act on the host directly (they must work without a daemon).
 */
import path from 'node:path';
import { getJson } from '../api/server';
import { ConfigError, loadConfig } from '../daemon/config';
import { formatServices, formatStatus, type ServiceView, type StatusView } from './format';
import { runDoctor, formatDoctor } from './doctor';
import { cleanup } from './cleanup';
import { dnsCommand, DNS_USAGE } from './dns';
import { dnsChecks } from '../dns/doctor';

const USAGE = `usage: berth <command> [--json] [--socket PATH] [config flags]

commands:
  services   every service and ingress with VIPs, ports, backends, routes, errors
  status     daemon health: Docker, attach point, redirect mode, Envoy, label errors, config
  doctor     check this host for what berth needs and say what to fix
  cleanup    remove everything berth put in the kernel and on disk (stop berthd first)
${DNS_USAGE}

The admin socket is <runDir>/berth.sock (default /run/berth/berth.sock); --socket or
BERTH_SOCKET overrides it. Config flags (e.g. --run-dir, --bpf-pin-dir) and the config file
are read as berthd reads them, so doctor and cleanup look where berthd works.`;

function takeFlag(args: string[], name: string): boolean {
  const i = args.indexOf(name);
  if (i < 0) return false;
  args.splice(i, 1);
  return true;
}

function takeValue(args: string[], name: string): string | null {
  const i = args.findIndex((a) => a === name || a.startsWith(name + '='));
  if (i < 0) return null;
  const a = args[i];
  if (a.includes('=')) {
    args.splice(i, 1);
    return a.slice(a.indexOf('=') + 1);
  }
  const v = args[i + 1];
  if (v === undefined) throw new ConfigError(`flag ${name} needs a value`);
  args.splice(i, 2);
  return v;
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const cmd = args.shift();
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(USAGE + '\n');
    return cmd ? 0 : 2;
  }
  // `berth cleanup --help` must print help, never act (cleanup removes berth's datapath).
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const json = takeFlag(args, '--json');
  const force = takeFlag(args, '--force');
  const socketFlag = takeValue(args, '--socket');
  // dns takes positional arguments and flags of its own; it loads the config from the rest.
  if (cmd === 'dns') return dnsCommand(args, json);
  const cfg = loadConfig(args);
  const socket = socketFlag ?? process.env.BERTH_SOCKET ?? path.join(cfg.config.runDir, 'berth.sock');
  const print = (data: unknown, human: () => string) => process.stdout.write((json ? JSON.stringify(data, null, 2) : human()) + '\n');

  switch (cmd) {
    case 'services': {
      const services = await getJson<ServiceView[]>(socket, '/services');
      print(services, () => formatServices(services));
      return 0;
    }
    case 'status': {
      const status = await getJson<StatusView>(socket, '/status');
      print(status, () => formatStatus(status));
      return 0;
    }
    case 'doctor': {
      const report = [...await runDoctor(cfg.config), ...await dnsChecks(cfg.config, socket, __filename)];
      print(report, () => formatDoctor(report));
      return report.some((c) => c.level === 'FAIL') ? 1 : 0;
    }
    case 'cleanup': {
      // Cleaning up under a running berthd would be undone by its next reconcile.
      const alive = await getJson(socket, '/healthz', 1000).then(() => true, () => false);
      if (alive && !force) {
        process.stderr.write(`berth: berthd is running (it answers on ${socket}); stop it first (systemctl stop berthd), or pass --force\n`);
        return 1;
      }
      const removed = await cleanup(cfg.config);
      print({ removed }, () => (removed.length ? removed.map((r) => `removed ${r}`).join('\n') : 'nothing of berth was left on this host'));
      return 0;
    }
    default:
      process.stderr.write(`berth: unknown command "${cmd}"\n${USAGE}\n`);
      return 2;
  }
}

main().then(
  (code) => process.exit(code),
  (e: Error & { code?: string }) => {
    if (e instanceof ConfigError) {
      process.stderr.write(`berth: ${e.message}\n`);
      process.exit(2);
    }
    if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
      process.stderr.write(`berth: berthd is not running (no answer on its admin socket: ${e.message})\n`);
      process.exit(3);
    }
    process.stderr.write(`berth: ${e.message}\n`);
    process.exit(1);
  },
);
