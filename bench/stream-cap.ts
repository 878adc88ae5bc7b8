/**
 * A TCP proxy that caps every connection's download at a fixed rate, each on its own: the shape
 * of S3, where one connection carries 85–90 MB/s and throughput comes from many at once
 * (shared/reference/image-transfer.md). Loopback has no such cap, so without it a single stream
 * and parallel ranges cannot be told apart.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

export interface StreamCap {
  endpoint: string;
  connections(): number;
  stop(): Promise<void>;
}

/** Paces `from` → `to` at `bytesPerSecond`: pauses the source whenever it runs ahead of the clock. */
function pace(from: Socket, to: Socket, bytesPerSecond: number): void {
  const start = performance.now();
  let sent = 0;
  from.on('data', (chunk: Buffer) => {
    sent += chunk.length;
    if (!to.write(chunk)) from.pause();
    const ahead = start + (sent / bytesPerSecond) * 1000 - performance.now();
    if (ahead > 1) {
      from.pause();
      setTimeout(() => {
        if (to.writableNeedDrain) return; // 'drain' resumes it
        from.resume();
      }, ahead);
    }
  });
  to.on('drain', () => from.resume());
}

export async function startStreamCap(
  upstream: { host: string; port: number },
  bytesPerSecond: number,
): Promise<StreamCap> {
  let count = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    count++;
    const up = connect(upstream.port, upstream.host);
    for (const s of [client, up]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.on('close', () => up.destroy());
    up.on('close', () => client.destroy());
    // Requests go up unpaced (they are small); responses come down at the cap.
    client.pipe(up);
    pace(up, client, bytesPerSecond);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('stream cap: no port');
  return {
    endpoint: `http://127.0.0.1:${address.port}`,
    connections: () => count,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
