/**
 * SSH failure modes on real sockets. ssh2 emits more than one 'error' for a single failure (a
 * handshake timeout, then "Connection lost before handshake" when the socket it destroyed closes;
 * a reset, then the same), and an 'error' nobody listens to kills the worker process. Hosts here:
 * a TCP server that accepts and never speaks SSH, and a real emulated host (OpenSSH) behind a
 * proxy that breaks the connection after its handshake.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createServer, connect as tcpConnect, type AddressInfo, type Server, type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { SshPool } from '../activities/ssh/connection';
import { ActivityContext, HOST_HANDSHAKE_TIMEOUT_MS } from '../activities/context';
import { healthActivities } from '../activities/health';
import { eventually, fileConfig } from './helpers';

const ROOT = resolve(__dirname, '..');
const FIXTURE = join(__dirname, 'fixtures', 'ssh-connect.ts');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const uncaught: unknown[] = [];
const record = (e: unknown) => uncaught.push(e);
const servers: Server[] = [];
const sockets = new Set<Socket>();

beforeAll(() => {
  process.on('uncaughtException', record);
});

afterAll(async () => {
  process.off('uncaughtException', record);
  for (const s of sockets) s.destroy();
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
});

async function listen(server: Server): Promise<number> {
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

/** Accepts TCP and never writes a byte: `silent` keeps the connection open, `reset` resets it after 200 ms. */
function muteHost(mode: 'silent' | 'reset'): Promise<number> {
  return listen(
    createServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined);
      if (mode === 'reset') setTimeout(() => s.resetAndDestroy(), 200);
    }),
  );
}

/** Runs one SshConnection.connect in its own process (the fixture) and returns what it printed and how it ended. */
function connectInChild(
  port: number,
  readyTimeoutMs: number,
  lingerMs: number,
): Promise<{ code: number | null; lines: Array<Record<string, unknown>>; stderr: string }> {
  return new Promise((done) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', FIXTURE, String(port), String(readyTimeoutMs), String(lingerMs)],
      {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) =>
      done({
        code,
        lines: out
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Record<string, unknown>),
        stderr: err,
      }),
    );
  });
}

describe('a host that accepts TCP but never speaks SSH', () => {
  it.each([
    { mode: 'silent' as const, cause: 'Timed out while waiting for handshake' },
    { mode: 'reset' as const, cause: 'ECONNRESET' },
  ])('$mode: connect rejects naming the target, and the process survives every error', async ({ mode, cause }) => {
    const port = await muteHost(mode);
    // readyTimeout 400 ms; the process then stays 1.5 s: ssh2's second error comes ~1 ms after the first.
    const r = await connectInChild(port, 400, 1500);
    expect(r.stderr).not.toMatch(/Unhandled 'error' event|Connection lost before handshake/);
    expect(r.code).toBe(0);
    expect(r.lines).toHaveLength(2);
    const [rejected, alive] = r.lines as [Record<string, unknown>, Record<string, unknown>];
    expect(rejected.name).toBe('SshError');
    expect(rejected.rejected).toContain(`ssh to host fixture/hung (127.0.0.1:${port}) failed: `);
    expect(rejected.rejected).toContain(cause);
    if (mode === 'silent') expect(rejected.ms).toBeGreaterThanOrEqual(390);
    expect(rejected.ms).toBeLessThan(3000);
    expect(alive.alive).toBe(true);
  });
});

describe('host health against a hung host', () => {
  it('checkHostHealth answers ok:false with the SSH error, inside its 15 s bound', async () => {
    const port = await muteHost('silent');
    const config = fileConfig('ssh', (raw) => {
      raw.pools[0].hosts.push({ name: 'hung', address: '127.0.0.1', ssh: { port } });
    });
    const ctx = new ActivityContext(config);
    const started = Date.now();
    const r = await healthActivities(ctx).checkHostHealth({ pool: 'ssh', host: 'hung' });
    const ms = Date.now() - started;
    expect(ms).toBeLessThan(15_000);
    expect(r.ok).toBe(false);
    expect(r.error).toBe(
      `ssh to host ssh/hung (127.0.0.1:${port}) failed: Timed out while waiting for handshake (${HOST_HANDSHAKE_TIMEOUT_MS} ms)`,
    );
    expect(ms).toBeGreaterThanOrEqual(HOST_HANDSHAKE_TIMEOUT_MS - 50);
    await sleep(500);
    expect(uncaught).toEqual([]);
    await ctx.close();
  });
});

describe('a connection that breaks after its handshake', () => {
  it('marks itself closed, settles what ran on it, and the pool replaces it', async () => {
    const config = fileConfig('ssh');
    const ctx = new ActivityContext(config);
    const real = ctx.hostTarget({ pool: 'ssh', host: config.pools[0]!.hosts[0]!.name });
    // A proxy to the real sshd; the first connection through it can be broken on demand.
    const pairs: Array<{ down: Socket; up: Socket }> = [];
    const proxyPort = await listen(
      createServer((down) => {
        const up = tcpConnect(real.port, real.host);
        for (const s of [down, up]) {
          sockets.add(s);
          s.on('error', () => undefined);
        }
        down.pipe(up);
        up.pipe(down);
        pairs.push({ down, up });
      }),
    );
    // The host key is pinned for the real port, not the proxy's: this target does not check it.
    const target = { ...real, label: 'host ssh/proxied', port: proxyPort, knownHosts: undefined };
    const pool = new SshPool();
    const first = await pool.get(target);
    expect((await first.run('echo ok')).trim()).toBe('ok');
    const inFlight = first.exec('sleep 30');
    await sleep(300);

    // Garbage where an SSH packet should be (ssh2: "Bad packet length"), then a reset once the
    // client hangs up (ssh2: ECONNRESET): two 'error' events on a connection that was ready.
    const { down, up } = pairs[0]!;
    up.unpipe(down);
    down.unpipe(up);
    up.destroy();
    down.once('end', () => down.resetAndDestroy());
    setTimeout(() => down.destroyed || down.resetAndDestroy(), 3000);
    down.write(Buffer.alloc(64, 0xff));

    await eventually('the broken connection to mark itself closed', async () => first.closed, 10_000);
    const settled = await Promise.race([inFlight.then(() => 'settled'), sleep(5000).then(() => 'hanging')]);
    expect(settled).toBe('settled');
    await sleep(500);
    expect(uncaught).toEqual([]);

    const second = await pool.get(target);
    expect(second).not.toBe(first);
    expect((await second.run('echo ok')).trim()).toBe('ok');
    await pool.closeAll();
    await ctx.close();
  });
});
