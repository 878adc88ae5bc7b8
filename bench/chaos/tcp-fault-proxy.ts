/**
 * A TCP proxy in front of a host's sshd (and so of the VMs reached through it) that breaks on demand:
 * `cut()` drops every open connection mid-stream; `down(ms)` also refuses new ones for a while (a host
 * that vanished from the network).
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

export class TcpFaultProxy {
  private readonly open = new Set<Socket>();
  private downUntil = 0;
  private server?: Server;
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  async start(port = 0): Promise<void> {
    this.server = createServer((down) => {
      if (Date.now() < this.downUntil) return down.destroy();
      const up = connect(this.target.port, this.target.host);
      for (const s of [down, up]) {
        this.open.add(s);
        s.on('error', () => undefined);
        s.on('close', () => {
          this.open.delete(s);
          (s === down ? up : down).destroy();
        });
      }
      down.pipe(up);
      up.pipe(down);
    });
    await new Promise<void>((r) => this.server!.listen(port, '127.0.0.1', r));
    this.port = (this.server.address() as { port: number }).port;
  }

  get openConnections(): number {
    return this.open.size / 2;
  }

  /** Drops every connection now open; returns how many (client and upstream sockets count as one). */
  cut(): number {
    const n = this.openConnections;
    for (const s of this.open) s.destroy();
    return n;
  }

  /** Unreachable for `ms`: open connections dropped, new ones refused. */
  down(ms: number): void {
    this.downUntil = Date.now() + ms;
    this.cut();
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise((r) => this.server?.close(r));
  }
}
