/**
 * A NOTIFY_SOCKET of the test's own: a unix datagram socket (Node cannot open one, so a tiny
 * python3 receiver does) that records every sd_notify message with its arrival time.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';

const RECEIVER = `
import socket, sys, json, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps({"bound": True}), flush=True)
while True:
    data, _ = s.recvfrom(65536)
    print(json.dumps({"t": time.time(), "msg": data.decode()}), flush=True)
`;

export interface NotifyMessage {
  t: number;
  msg: string;
}

export class NotifySocket {
  readonly messages: NotifyMessage[] = [];
  private proc: ChildProcess | null = null;
  constructor(readonly path: string) {}

  async open(): Promise<void> {
    fs.rmSync(this.path, { force: true });
    const proc = spawn('python3', ['-c', RECEIVER, this.path], { stdio: ['ignore', 'pipe', 'inherit'] });
    this.proc = proc;
    let buf = '';
    await new Promise<void>((resolve, reject) => {
      proc.once('error', reject);
      proc.stdout!.on('data', (d: Buffer) => {
        buf += d.toString();
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = JSON.parse(buf.slice(0, i)) as { bound?: boolean } & NotifyMessage;
          buf = buf.slice(i + 1);
          if (line.bound) resolve();
          else this.messages.push({ t: line.t, msg: line.msg });
        }
      });
    });
  }

  /** Each KEY=VALUE assignment of every message, in order. */
  assignments(): string[] {
    return this.messages.flatMap((m) => m.msg.split('\n').filter(Boolean));
  }

  close(): void {
    this.proc?.kill();
    fs.rmSync(this.path, { force: true });
  }
}
