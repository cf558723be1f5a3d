/**
 * Follow a file another process appends to (Envoy's log and access log): poll its size, read what
 * was added, hand over whole lines. Envoy outlives berthd, so its output cannot be a pipe to berthd
 * (a dead reader would break Envoy's writes); files in the run dir are the hand-over point, and
 * whichever berthd runs reads them on.
 *
 * The file is truncated once it passes `maxBytes` and everything in it was read: Envoy opens it
 * with O_APPEND, so its next write lands at the new end (0). A file that shrank under us
 * (truncated or replaced) is read from its start.
 */
import fs from 'node:fs';

export interface FollowOptions {
  /** Poll period, ms. */
  everyMs?: number;
  /** Truncate after reading once the file is larger than this (bytes). */
  maxBytes?: number;
  /** Start at the current end (true: lines written before are skipped) or at the start. */
  fromEnd?: boolean;
  /** Longest line kept whole; longer ones are cut (a runaway writer must not grow our buffer). */
  maxLine?: number;
}

export class FileFollower {
  private offset = 0;
  private ino = 0;
  private partial = '';
  private timer: NodeJS.Timeout | null = null;
  private readonly buf = Buffer.alloc(256 * 1024);

  constructor(readonly file: string, private readonly onLine: (line: string) => void, private readonly o: FollowOptions = {}) {}

  start(): void {
    if (this.timer) return;
    if (this.o.fromEnd) {
      try {
        const st = fs.statSync(this.file);
        this.offset = st.size;
        this.ino = st.ino;
      } catch { /* not there yet: read from 0 when it appears */ }
    }
    this.timer = setInterval(() => this.poll(), this.o.everyMs ?? 200);
    this.timer.unref();
  }

  /** Read everything new now (also used by stop() so that the last lines are not lost). */
  poll(): void {
    let fd: number;
    try {
      fd = fs.openSync(this.file, 'r+');
    } catch {
      return;
    }
    try {
      const st = fs.fstatSync(fd);
      if (st.ino !== this.ino || st.size < this.offset) {
        this.ino = st.ino;
        this.offset = 0;
        this.partial = '';
      }
      // Bounded per poll: a burst is read over a few polls instead of blocking the loop.
      for (let rounds = 0; rounds < 64 && this.offset < st.size; rounds++) {
        const n = fs.readSync(fd, this.buf, 0, this.buf.length, this.offset);
        if (n <= 0) break;
        this.offset += n;
        const text = this.partial + this.buf.toString('utf8', 0, n);
        const lines = text.split('\n');
        this.partial = lines.pop() ?? '';
        if (this.partial.length > (this.o.maxLine ?? 65536)) {
          lines.push(this.partial);
          this.partial = '';
        }
        for (const l of lines) if (l.length) this.onLine(l);
      }
      if (this.o.maxBytes && this.offset >= st.size && st.size > this.o.maxBytes) {
        fs.ftruncateSync(fd, 0);
        this.offset = 0;
      }
    } catch { /* a vanished file is picked up again on the next poll */ } finally {
      fs.closeSync(fd);
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.poll();
  }
}
