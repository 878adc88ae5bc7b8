/**
 * An HTTP proxy in front of the S3 server that fails on demand, as S3 does under load: `errors(ms, rate)`
 * answers a share of requests 500 or 503 (S3's "InternalError" / "SlowDown" bodies), `stall(ms, rate)`
 * holds a share of requests for seconds before passing them on. Signatures stay valid: the proxy keeps the
 * Host header, and clients sign for the endpoint they were given (the proxy's).
 */
import { createServer, request, type Server } from 'node:http';

export class S3FaultProxy {
  private server?: Server;
  private mode: { kind: 'ok' } | { kind: 'errors' | 'stall'; until: number; rate: number } = { kind: 'ok' };
  port = 0;
  /** Requests answered with an injected error, and stalled. */
  injected = { errors: 0, stalls: 0 };

  constructor(
    private readonly target: { host: string; port: number },
    private readonly random: () => number,
  ) {}

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const mode = this.mode.kind !== 'ok' && Date.now() < this.mode.until ? this.mode : undefined;
      const hit = mode !== undefined && this.random() < mode.rate;
      if (hit && mode.kind === 'errors') {
        this.injected.errors++;
        const slow = this.random() < 0.5;
        req.resume();
        res
          .writeHead(slow ? 503 : 500, { 'content-type': 'application/xml' })
          .end(
            `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${slow ? 'SlowDown' : 'InternalError'}</Code><Message>chaos</Message></Error>`,
          );
        return;
      }
      const pass = () => {
        const up = request(
          { host: this.target.host, port: this.target.port, method: req.method, path: req.url, headers: req.headers },
          (r) => {
            res.writeHead(r.statusCode ?? 502, r.headers);
            r.pipe(res);
          },
        );
        up.on('error', () => res.destroy());
        req.pipe(up);
      };
      if (hit && mode.kind === 'stall') {
        this.injected.stalls++;
        req.pause();
        setTimeout(pass, 3000 + this.random() * 5000);
      } else pass();
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as { port: number }).port;
  }

  errors(ms: number, rate: number): void {
    this.mode = { kind: 'errors', until: Date.now() + ms, rate };
  }

  stall(ms: number, rate: number): void {
    this.mode = { kind: 'stall', until: Date.now() + ms, rate };
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise((r) => this.server?.close(r));
  }
}
