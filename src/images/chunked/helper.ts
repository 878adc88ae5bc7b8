/**
 * The host-side image helper (`helper/`, Go): one static binary per platform, built by
 * `npm run setup` into `.marina/helper/`, copied to each host by the worker under a name that
 * carries its SHA-256. It executes orders (JSON on stdin) and reports events (JSON lines on
 * stdout). Where it runs is the runner's business: a local process (CLI, tests, benchmark) or
 * an SSH session on a Mac host (activities/images.ts); the orders are the same.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export type HelperCommand = 'pull' | 'inspect' | 'hash' | 'push';
export type HelperEvent = { event: string } & Record<string, unknown>;

export interface HelperRunner {
  /** Runs one order to its end; rejects with a HelperError when the helper exits non-zero. */
  run(cmd: HelperCommand, order: object, onEvent: (e: HelperEvent) => void, signal?: AbortSignal): Promise<void>;
}

/** Exit codes (helper/main.go): 1 I/O or transport, 2 a bad order, 3 data (fetched or cached) that never matched its hash. */
export class HelperError extends Error {
  override name = 'HelperError';
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
  }
  get corrupt(): boolean {
    return this.code === 3;
  }
}

const repoRoot = resolve(__dirname, '..', '..', '..');

/** `darwin-arm64`, `linux-amd64`, ... from `uname -s` / `uname -m` (or Node's names). */
export function platformOf(os: string, arch: string): string {
  const o = os.toLowerCase();
  const a = arch === 'x86_64' || arch === 'x64' ? 'amd64' : arch === 'aarch64' || arch === 'arm64' ? 'arm64' : arch;
  return `${o}-${a}`;
}

export interface HelperBinary {
  path: string;
  /** SHA-256 of the binary: its name on hosts, so an upgrade never runs a stale copy. */
  sha256: string;
  platform: string;
}

const found = new Map<string, HelperBinary>();

export function helperBinary(platform = platformOf(process.platform, process.arch)): HelperBinary {
  let b = found.get(platform);
  if (b) return b;
  const dir = process.env.MARINA_HELPER_DIR ?? join(repoRoot, '.marina', 'helper');
  const path = join(dir, `marina-image-helper-${platform}`);
  if (!existsSync(path))
    throw new Error(
      `the image helper for ${platform} is not built (${path}); run \`npm run setup\` (scripts/build-helper.sh builds it with Go)`,
    );
  b = { path, platform, sha256: createHash('sha256').update(readFileSync(path)).digest('hex') };
  found.set(platform, b);
  return b;
}

/** Splits a byte stream into JSON event lines. */
export function eventLines(onEvent: (e: HelperEvent) => void): (d: Buffer) => void {
  let rest = '';
  return (d) => {
    const lines = (rest + d.toString('utf8')).split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) if (line.trim()) onEvent(JSON.parse(line) as HelperEvent);
  };
}

/**
 * Runs the helper as a local process: the CLI, tests and benchmarks. `killSignal` is what an abort
 * sends (SIGTERM by default; tests use SIGKILL to leave a pull exactly as a crash would).
 */
export const localHelper = (binary = helperBinary(), killSignal: NodeJS.Signals = 'SIGTERM'): HelperRunner => ({
  run: (cmd, order, onEvent, signal) =>
    new Promise((done, fail) => {
      const child = spawn(binary.path, [cmd], {
        stdio: ['pipe', 'pipe', 'pipe'],
        killSignal,
        ...(signal ? { signal } : {}),
      });
      let stderr = '';
      child.stdout.on('data', eventLines(onEvent));
      child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
      child.on('error', fail);
      child.on('close', (code, sig) => {
        if (code === 0) return done();
        fail(new HelperError(stderr.trim() || `helper ${cmd} ended by ${sig ?? `exit ${code}`}`, code ?? -1));
      });
      child.stdin.end(JSON.stringify(order));
    }),
});
