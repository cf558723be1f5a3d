/**
 * Child of cluster-etcd.test.ts's exit test: a ClusterStore in a process of its own, so the test
 * can check what matters to berthd and to the test runner, that the process ends by itself after
 * stop() (no process.exit here: a timer, socket or gRPC channel left behind keeps it alive).
 *
 * argv: endpoint. Protocol on stdout, one word a line: "ready" once connected with a lease; then
 * it waits for a line on stdin ("stop" right away, or "stop-when-down": first wait until the
 * store has seen etcd go away, so stop() meets a watch that is reconnecting); "stopped" after
 * stop() returned.
 */
import pino from 'pino';
import readline from 'node:readline';
import { ClusterStore } from '../../src/cluster/store';

async function until(f: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!f()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function main(): Promise<void> {
  const s = new ClusterStore({
    endpoints: [process.argv[2]], caFile: null, certFile: null, keyFile: null, prefix: '/berth-exit', nodeName: 'x',
    nodeAddress: '127.0.0.1', serviceCidr: '10.96.0.0/16', serviceCidr6: 'fd00:96::/112', berthVersion: 'test',
    logger: pino({ level: 'silent' }), leaseTtl: 2,
  });
  await s.start();
  s.publish({ subnets: ['172.31.9.0/24'], services: [] });
  await until(() => s.status().etcd === 'connected' && s.status().lease !== null, 10000);
  process.stdout.write('ready\n');
  const rl = readline.createInterface({ input: process.stdin });
  const line = await new Promise<string>((r) => rl.once('line', r));
  rl.close();
  process.stdin.destroy();
  if (line === 'stop-when-down') await until(() => s.status().etcd !== 'connected', 10000);
  await s.stop();
  process.stdout.write('stopped\n');
}

main().catch((e) => {
  process.stderr.write(String((e as Error).stack));
  process.exit(1);
});
