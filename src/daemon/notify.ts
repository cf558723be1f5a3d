/**
 * systemd's sd_notify protocol: READY=1, STATUS=..., WATCHDOG=1, STOPPING=1 as datagrams to
 * $NOTIFY_SOCKET.
 *
 * Why the addon and not the npm package `systemd-notify`: that package spawns the systemd-notify
 * binary per message. Under Type=notify with the default NotifyAccess=main systemd drops messages
 * whose sender is not the main PID, and a forked helper is not; a watchdog ping every few seconds
 * would also fork a process each time. Node has no AF_UNIX datagram sockets, so the addon sends
 * the datagram itself (sendto on a SOCK_DGRAM socket, abstract '@' names included), from berthd's
 * own PID. Without NOTIFY_SOCKET (not under systemd) every call is a no-op.
 */
import { loadNative } from '../native';

export class Notifier {
  private readonly socket = process.env.NOTIFY_SOCKET || null;

  get enabled(): boolean {
    return this.socket !== null;
  }

  send(state: string): void {
    if (!this.socket) return;
    try {
      loadNative().sdNotify(this.socket, state);
    } catch {
      // Notification is advisory; systemd notices a missing READY/WATCHDOG by itself.
    }
  }

  ready(): void { this.send('READY=1'); }
  watchdog(): void { this.send('WATCHDOG=1'); }
  stopping(): void { this.send('STOPPING=1'); }
  /** One line, newlines removed (the protocol is newline-separated KEY=VALUE). */
  status(line: string): void { this.send(`STATUS=${line.replace(/\n/g, ' ')}`); }
}
