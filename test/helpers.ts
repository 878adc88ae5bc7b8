/** Test helpers: a pool and task queue of its own per test file, workers in-process or as a child process. */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse, stringify } from 'yaml';
import { inject } from 'vitest';
import { Runtime, DefaultLogger } from '@temporalio/worker';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { loadConfig, logsLocation, type LoadedConfig } from '../src/config/load';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
import { createMarinaWorker, type MarinaWorker } from '../src/worker';
import { s3ClientFor } from '../src/config/s3';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { ChunkedStore } from '../src/images/chunked/store';
import { pushVmArchive } from '../src/images/chunked/vm-files';
import {
  buildSeedImage,
  buildSeedPvm,
  publicKeyOf,
  PVM_SEED_IMAGE,
  SEED_IMAGE,
  vmHostKeyOfArchive,
  vmHostKeyOfPvm,
} from '../src/emulator/seed-image';
import { pushPvmBundle } from '../src/images/chunked/pvm';

/**
 * The hypervisors the job tests run on, each with its seed image: the same tests, on a Tart pool and on a
 * Parallels pool of the local stack (emulated hosts mac-N answer `tart`, mac-pN `prlctl`).
 */
export const DRIVERS = [
  { hypervisor: 'tart', image: SEED_IMAGE, suffix: '' },
  { hypervisor: 'parallels', image: PVM_SEED_IMAGE, suffix: '-prl' },
] as const;
export type Driver = (typeof DRIVERS)[number];

/**
 * Pushes a new image `<name>:1` that no host caches yet (the VM key of the stack baked in), so a job
 * on it really pulls. `diskMiB` sets how long that pull takes.
 */
export async function freshImage(
  config: LoadedConfig,
  name: string,
  diskMiB: number,
  hypervisor: Driver['hypervisor'] = 'tart',
): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'marina-img-'));
  const key = publicKeyOf(join(stack().stateDir, 'keys', 'vm_ed25519'));
  const s3 = s3ClientFor(config, config.imageStore);
  const store = new ChunkedStore(s3, config.imageStore);
  try {
    if (hypervisor === 'parallels') {
      const bundle = join(dir, `${name}.pvm`);
      buildSeedPvm(bundle, key, name, diskMiB);
      await pushPvmBundle(store, `${name}:1`, bundle, { vmHostKey: vmHostKeyOfPvm(bundle) });
    } else {
      const file = join(dir, 'image.tgz');
      buildSeedImage(file, key, diskMiB);
      await pushVmArchive(store, `${name}:1`, file, { vmHostKey: vmHostKeyOfArchive(file) });
    }
  } finally {
    s3.destroy();
  }
  return `${name}:1`;
}

let runtimeInstalled = false;
function quietRuntime() {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  try {
    Runtime.install({ logger: new DefaultLogger((process.env.MARINA_TEST_LOG as 'WARN' | undefined) ?? 'ERROR') });
  } catch {
    /* already installed */
  }
}

export const stack = () => inject('stack');

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- raw YAML that tests edit freely
type RawConfig = Record<string, any>;

/**
 * Writes a config for one test file: its own pool and task queue over the shared
 * emulated hosts, so no other file's worker takes its tasks. With `parallels`, a second pool of
 * that name over the stack's Parallels hosts (raw.pools[1]).
 */
export function fileConfig(
  name: string,
  edit?: (raw: RawConfig) => void,
  opts: { parallels?: string; hypervisor?: Driver['hypervisor'] } = {},
): LoadedConfig {
  const s = stack();
  const raw = parse(readFileSync(s.configPath, 'utf8')) as RawConfig;
  raw.temporal.taskQueue = `test-${name}`;
  const prl = raw.pools.find((p: RawConfig) => p.hypervisor === 'parallels');
  const tart = raw.pools.filter((p: RawConfig) => p.hypervisor !== 'parallels');
  raw.pools = opts.hypervisor === 'parallels' ? [prl] : tart;
  if (opts.parallels) raw.pools.push({ ...prl, name: opts.parallels });
  raw.pools[0].name = name;
  edit?.(raw);
  const path = join(s.stateDir, `${name}.yaml`);
  writeFileSync(path, stringify(raw));
  return loadConfig(path);
}

export async function startWorker(config: LoadedConfig): Promise<{ w: MarinaWorker; stop: () => Promise<void> }> {
  quietRuntime();
  const w = await createMarinaWorker(config, { workflowBundle: { codePath: stack().bundlePath } });
  const running = w.worker.run();
  return {
    w,
    async stop() {
      w.worker.shutdown();
      await running.catch(() => undefined);
      await w.close();
    },
  };
}

const ROOT = resolve(__dirname, '..');

/** A worker in its own process, so a test can SIGKILL it like a crashed machine. */
export function spawnWorker(config: LoadedConfig): ChildProcess {
  return spawn(
    process.execPath,
    ['--import', 'tsx', join(ROOT, 'src/cli/main.ts'), '--config', config.path, 'worker'],
    {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, MARINA_WORKFLOW_BUNDLE: stack().bundlePath, MARINA_LOG_LEVEL: 'ERROR' },
    },
  );
}

export function hostDirs(): string[] {
  const dir = join(stack().stateDir, 'hosts');
  return readdirSync(dir).map((h) => join(dir, h));
}

/** VM directories (Tart's, Parallels' bundles) left on any emulated host for a job (should be none after a job ends). */
export function leftoverVms(jobId: string): string[] {
  return hostDirs()
    .flatMap((h) => [join(h, 'tart', 'vms', `marina-${jobId}`), join(h, 'home', 'Parallels', `marina-${jobId}.pvm`)])
    .filter((d) => existsSync(d));
}

/** Processes still running inside a job's VM, found by the emulator's tag. */
export function vmProcesses(jobId: string): number[] {
  const pids: number[] = [];
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const env = readFileSync(`/proc/${p}/environ`, 'utf8');
      if (env.includes(`/vms/marina-${jobId}\0`) || env.includes(`/Parallels/marina-${jobId}.pvm\0`))
        pids.push(Number(p));
    } catch {
      /* gone */
    }
  }
  return pids;
}

export async function readJobLog(config: LoadedConfig, key: string): Promise<string> {
  const loc = logsLocation(config);
  const s3 = s3ClientFor(config, loc);
  try {
    const out = await s3.send(new GetObjectCommand({ Bucket: loc.bucket, Key: key }));
    return await out.Body!.transformToString();
  } finally {
    s3.destroy();
  }
}

export const uniqueId = (prefix: string) =>
  `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;

export async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 60_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * What a job learnt of its image on its host, read from its history: each completed ensureImage's answer,
 * and a boot straight from the host's cache (bootCachedVm answered a VM) as `{ cached: true, fetchedBytes: 0 }`.
 */
export async function ensureImageResults(
  client: { workflow: { getHandle(id: string): { fetchHistory(): Promise<{ events?: unknown[] | null }> } } },
  workflowId: string,
): Promise<Array<{ cached: boolean; fetchedBytes: number }>> {
  type Event = {
    eventId?: { toString(): string } | number | null;
    activityTaskScheduledEventAttributes?: { activityType?: { name?: string | null } | null } | null;
    activityTaskCompletedEventAttributes?: {
      scheduledEventId?: { toString(): string } | number | null;
      result?: { payloads?: Array<{ data?: Uint8Array | null }> | null } | null;
    } | null;
  };
  const events = ((await client.workflow.getHandle(workflowId).fetchHistory()).events ?? []) as Event[];
  const types = new Map<string, string>();
  for (const e of events)
    if (e.activityTaskScheduledEventAttributes)
      types.set(String(e.eventId), e.activityTaskScheduledEventAttributes.activityType?.name ?? '');
  return events.flatMap((e) => {
    const done = e.activityTaskCompletedEventAttributes;
    if (!done) return [];
    const data = done.result?.payloads?.[0]?.data;
    const text = data ? Buffer.from(data).toString() : '';
    const type = types.get(String(done.scheduledEventId));
    if (type === 'bootCachedVm') return text && text !== 'null' ? [{ cached: true, fetchedBytes: 0 }] : [];
    return type === 'ensureImage' ? [JSON.parse(text) as { cached: boolean; fetchedBytes: number }] : [];
  });
}

/**
 * With MARINA_RECORD_HISTORIES=<release> set, saves a workflow's history under test/histories/<release>/
 * (the History protobuf, base64, in JSON with the workflow's id and type): test/replay.test.ts replays every
 * committed history against each later build. (The SDK's historyToJSON fails in this install.)
 */
export async function recordHistory(
  name: string,
  handle: { workflowId: string; fetchHistory(): Promise<unknown>; describe(): Promise<{ type: string }> },
): Promise<void> {
  const release = process.env.MARINA_RECORD_HISTORIES;
  if (!release) return;
  const { temporal } = await import('@temporalio/proto');
  const { mkdirSync } = await import('node:fs');
  const dir = join(ROOT, 'test', 'histories', release);
  mkdirSync(dir, { recursive: true });
  const history = (await handle.fetchHistory()) as Parameters<typeof temporal.api.history.v1.History.encode>[0];
  const bytes = temporal.api.history.v1.History.encode(history).finish();
  writeFileSync(
    join(dir, `${name}.json`),
    JSON.stringify({
      workflowId: handle.workflowId,
      workflowType: (await handle.describe()).type,
      events: history.events?.length ?? 0,
      history: Buffer.from(bytes).toString('base64'),
    }),
  );
}

/** The `marina` CLI in its own process, as an operator or a CI system runs it. */
export function spawnCli(config: LoadedConfig | undefined, args: string[]): ChildProcess {
  return spawn(
    process.execPath,
    ['--import', 'tsx', join(ROOT, 'src/cli/main.ts'), ...(config ? ['--config', config.path] : []), ...args],
    {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      // The suite's workflow bundle: `marina dev` starts without a webpack run.
      env: { ...process.env, MARINA_WORKFLOW_BUNDLE: stack().bundlePath, MARINA_LOG_LEVEL: 'ERROR' },
    },
  );
}

export interface CliOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Collects a spawned CLI's output and how it ended. */
export function cliOutcome(child: ChildProcess): Promise<CliOutcome> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
}

export const runCli = (config: LoadedConfig | undefined, args: string[]): Promise<CliOutcome> =>
  cliOutcome(spawnCli(config, args));
