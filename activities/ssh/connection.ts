/**
 * SSH to hosts and, through them, to VMs, with ssh2. Connections are cached per
 * target and reused across activities; a dropped one is replaced on next use.
 */
import { recordSshError } from '../../src/telemetry/metrics';
import { Client, type ClientChannel, type ConnectConfig } from 'ssh2';
import { ApplicationFailure } from '@temporalio/common';
import { verifyHostKey, type KnownHostEntry } from './known-hosts';

export interface SshTarget {
  /** Cache key and name in errors, e.g. `host mac-1` or `vm marina-42 on mac-1`. */
  label: string;
  host: string;
  port: number;
  username: string;
  privateKey?: string;
  password?: string;
  /** Pinned keys; undefined means the key is not checked (only for VMs reached through a pinned host). */
  knownHosts?: KnownHostEntry[];
  /** How long TCP connect plus the SSH handshake may take; 20 s by default. */
  readyTimeoutMs?: number;
}

export interface ExecOptions {
  stdin?: string | Buffer;
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface ExecResult {
  code: number | null;
  signal?: string;
  stdout: string;
  stderr: string;
}

/** The kind of a failed connection, for `marina_ssh_errors`: a few stable words, not messages. */
function sshErrorKind(err: Error & { level?: string; code?: string }): string {
  if (err.level === 'client-timeout') return 'handshake-timeout';
  if (err.level === 'client-authentication') return 'auth';
  if (err.code === 'ECONNREFUSED') return 'refused';
  if (err.code === 'ETIMEDOUT' || err.code === 'EHOSTUNREACH' || err.code === 'ENETUNREACH') return 'unreachable';
  if (err.code === 'ECONNRESET') return 'reset';
  return 'connect';
}

export class SshError extends Error {
  override name = 'SshError';
}

export function hostKeyFailure(target: SshTarget, verdict: 'mismatch' | 'unknown' | 'revoked'): ApplicationFailure {
  const where = `${target.label} (${target.host}:${target.port})`;
  const message =
    verdict === 'unknown'
      ? `${where} has no pinned host key; add it to the configured known_hosts (ssh-keyscan -p ${target.port} ${target.host})`
      : verdict === 'revoked'
        ? `${where} presented a revoked host key`
        : `HOST KEY MISMATCH for ${where}: the key differs from the pinned one in known_hosts; refusing to connect`;
  return ApplicationFailure.create({ message, type: 'HostKeyMismatch', nonRetryable: true });
}

export class SshConnection {
  private constructor(
    readonly target: SshTarget,
    readonly client: Client,
  ) {}

  closed = false;

  static connect(target: SshTarget, sock?: NodeJS.ReadableStream): Promise<SshConnection> {
    return new Promise((resolve, reject) => {
      const client = new Client();
      let keyVerdict: 'mismatch' | 'unknown' | 'revoked' | undefined;
      const config: ConnectConfig = {
        host: target.host,
        port: target.port,
        username: target.username,
        privateKey: target.privateKey,
        password: target.password,
        readyTimeout: target.readyTimeoutMs ?? 20_000,
        keepaliveInterval: 10_000,
        keepaliveCountMax: 3,
        sock: sock as ConnectConfig['sock'],
        hostVerifier: (key: Buffer) => {
          if (!target.knownHosts) return true;
          const verdict = verifyHostKey(target.knownHosts, target.host, target.port, key);
          if (verdict === 'match') return true;
          keyVerdict = verdict;
          return false;
        },
      };
      const conn = new SshConnection(target, client);
      let ready = false;
      // Listening for the client's whole life, not once: ssh2 emits several errors for one failure
      // (a handshake timeout destroys the socket, whose close then emits "Connection lost before
      // handshake"; a reset likewise), and an 'error' without a listener kills the worker process.
      client
        .once('ready', () => {
          ready = true;
          resolve(conn);
        })
        .on('error', (err: Error & { level?: string }) => {
          conn.closed = true;
          if (ready) {
            // Whoever waits on this connection's channels learns it when the socket closes.
            client.destroy();
            return;
          }
          recordSshError(keyVerdict ? 'host-key' : sshErrorKind(err));
          if (keyVerdict) return reject(hostKeyFailure(target, keyVerdict));
          const why = err.level === 'client-timeout' ? `${err.message} (${config.readyTimeout} ms)` : err.message;
          // Only the first error settles the promise; the later ones say nothing new.
          reject(new SshError(`ssh to ${target.label} (${target.host}:${target.port}) failed: ${why}`));
        })
        .on('close', () => {
          conn.closed = true;
        })
        .connect(config);
    });
  }

  exec(command: string, options: ExecOptions = {}): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      this.client.exec(command, (err, stream: ClientChannel) => {
        if (err) {
          recordSshError('channel');
          reject(new SshError(`${this.target.label}: cannot open a channel: ${err.message}`));
          return;
        }
        const out: Buffer[] = [];
        const errs: Buffer[] = [];
        let timer: NodeJS.Timeout | undefined;
        let settled = false;
        const finish = (r: ExecResult) => {
          if (settled) return;
          settled = true;
          if (timer) clearTimeout(timer);
          options.signal?.removeEventListener('abort', onAbort);
          resolve(r);
        };
        // A remote loop that writes nothing never sees its channel close: signal it, and stop waiting for it.
        const abandon = () => {
          try {
            stream.signal('KILL');
          } catch {
            /* channel already gone */
          }
          stream.close();
        };
        const onAbort = () => {
          abandon();
          finish({ code: null, signal: 'ABORTED', stdout: '', stderr: '' });
        };
        if (options.timeoutMs) {
          timer = setTimeout(() => {
            abandon();
            settled = true;
            options.signal?.removeEventListener('abort', onAbort);
            recordSshError('command-timeout');
            reject(new SshError(`${this.target.label}: command timed out after ${options.timeoutMs} ms`));
          }, options.timeoutMs);
        }
        options.signal?.addEventListener('abort', onAbort, { once: true });
        stream.on('data', (d: Buffer) => (options.onStdout ? options.onStdout(d) : out.push(d)));
        stream.stderr.on('data', (d: Buffer) => (options.onStderr ? options.onStderr(d) : errs.push(d)));
        stream.on('close', (code: number | null, signal?: string) => {
          finish({
            code,
            signal,
            stdout: Buffer.concat(out).toString('utf8'),
            stderr: Buffer.concat(errs).toString('utf8'),
          });
        });
        if (options.signal?.aborted) onAbort();
        stream.end(options.stdin ?? '');
      });
    });
  }

  /** Runs a command that must succeed; throws with its stderr otherwise. */
  async run(command: string, options: ExecOptions = {}): Promise<string> {
    const r = await this.exec(command, options);
    if (r.code !== 0) {
      throw new SshError(
        `${this.target.label}: \`${firstLine(command)}\` exited ${r.code ?? r.signal}: ${r.stderr.trim() || r.stdout.trim()}`,
      );
    }
    return r.stdout;
  }

  /** Opens a TCP stream to an address seen from the host (a VM on its private network). */
  forward(host: string, port: number): Promise<ClientChannel> {
    return new Promise((resolve, reject) => {
      this.client.forwardOut('127.0.0.1', 0, host, port, (err, stream) => {
        if (err) reject(new SshError(`${this.target.label}: cannot reach ${host}:${port} through it: ${err.message}`));
        else resolve(stream);
      });
    });
  }

  end(): void {
    this.closed = true;
    this.client.end();
  }
}

function firstLine(s: string): string {
  const line = s.trim().split('\n')[0] ?? '';
  return line.length > 80 ? `${line.slice(0, 77)}...` : line;
}

/** Reuses live connections; activities on one worker share them. */
export class SshPool {
  private readonly conns = new Map<string, Promise<SshConnection>>();

  /** The open connection under this label, if any. */
  async live(label: string): Promise<SshConnection | undefined> {
    const conn = await this.conns.get(label)?.catch(() => undefined);
    return conn && !conn.closed ? conn : undefined;
  }

  async get(target: SshTarget, via?: () => Promise<NodeJS.ReadableStream>): Promise<SshConnection> {
    const cached = this.conns.get(target.label);
    if (cached) {
      const conn = await cached.catch(() => undefined);
      if (conn && !conn.closed) return conn;
      this.conns.delete(target.label);
    }
    const p = (async () => SshConnection.connect(target, via ? await via() : undefined))();
    this.conns.set(target.label, p);
    p.catch(() => this.conns.delete(target.label));
    return p;
  }

  drop(label: string): void {
    const p = this.conns.get(label);
    this.conns.delete(label);
    void p?.then((c) => c.end()).catch(() => undefined);
  }

  async closeAll(): Promise<void> {
    const all = [...this.conns.values()];
    this.conns.clear();
    await Promise.all(all.map((p) => p.then((c) => c.end()).catch(() => undefined)));
  }
}

/** Single-quotes a value for a POSIX shell. */
export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
