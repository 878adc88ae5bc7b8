/**
 * A rolling restart: the worker running a job's script is sent SIGTERM while another worker is up.
 * The old worker stops taking tasks, gives its activities the grace time, leaves the script
 * running in the VM and exits 0; the new worker's attempt re-attaches and follows the log to its
 * end. The script starts once, finishes once, and the job succeeds.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { Connection, Client, type WorkflowHandle } from '@temporalio/client';
import { startJob } from '../src/client/jobs';
import type { LoadedConfig } from '../src/config/load';
import { SEED_IMAGE } from '../src/emulator/seed-image';
import { jobStatusQuery } from '../workflows/definitions';
import { eventually, fileConfig, leftoverVms, readJobLog, spawnWorker, uniqueId } from './helpers';

const POOL = 'rolling';
const GRACE_SECONDS = 2;
let config: LoadedConfig;
let client: Client;
const workers: ChildProcess[] = [];

beforeAll(async () => {
  config = fileConfig(POOL, (raw) => {
    raw.worker = { shutdownGraceSeconds: GRACE_SECONDS };
  });
  client = new Client({ connection: await Connection.connect({ address: config.temporal.address }) });
});

afterAll(async () => {
  for (const w of workers) if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
  await client?.connection.close();
});

function spawn(cfg: LoadedConfig): ChildProcess {
  const w = spawnWorker(cfg);
  workers.push(w);
  return w;
}

/** Worker identities are `pid@hostname` (the SDK's default). */
const identityOf = (w: ChildProcess) => `${w.pid}@`;

async function pollsActivities(w: ChildProcess): Promise<boolean> {
  const r = await client.workflowService.describeTaskQueue({
    namespace: config.temporal.namespace,
    taskQueue: { name: config.temporal.taskQueue },
    taskQueueType: 2 /* TASK_QUEUE_TYPE_ACTIVITY */,
  });
  return (r.pollers ?? []).some((p) => p.identity?.startsWith(identityOf(w)));
}

async function runScriptAttempt(handle: WorkflowHandle): Promise<{ attempt: number; worker: string } | undefined> {
  const d = await handle.describe();
  const a = d.raw.pendingActivities?.find((p) => p.activityType?.name === 'runScript');
  return a ? { attempt: a.attempt ?? 0, worker: a.lastWorkerIdentity ?? '' } : undefined;
}

function exited(w: ChildProcess, withinMs: number): Promise<{ code: number | null; signal: string | null }> {
  return new Promise((resolve, reject) => {
    if (w.exitCode !== null || w.signalCode !== null) return resolve({ code: w.exitCode, signal: w.signalCode });
    const t = setTimeout(() => reject(new Error(`worker ${w.pid} still running after ${withinMs} ms`)), withinMs);
    w.once('exit', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal });
    });
  });
}

/**
 * A script that marks its start and end in a witness file outside Marina and ticks until the test
 * opens its gate, so it spans the handover however slow the machine is.
 */
function gatedJob(prefix: string) {
  const dir = mkdtempSync(join(tmpdir(), 'marina-rolling-'));
  const witness = join(dir, 'witness');
  const gate = join(dir, 'gate');
  const spec = {
    id: uniqueId(prefix),
    pool: POOL,
    image: SEED_IMAGE,
    script:
      `echo begin; echo started >> ${witness}; i=0; ` +
      `while [ ! -f ${gate} ]; do echo "tick $i"; i=$((i+1)); sleep 0.2; done; ` +
      `echo finish; echo finished >> ${witness}`,
    timeoutSeconds: 300,
  };
  return { spec, witness, open: () => writeFileSync(gate, '') };
}

/** The log is whole: begin, every tick once and in order, finish. */
function expectWholeLog(log: string) {
  const lines = log.split('\n');
  expect(lines[0]).toBe('begin');
  expect(lines.at(-1)).toBe('');
  expect(lines.at(-2)).toBe('finish');
  const ticks = lines.slice(1, -2);
  expect(ticks.length).toBeGreaterThan(5);
  expect(ticks).toEqual(ticks.map((_, i) => `tick ${i}`));
}

/** The runScript attempt that completed: its number, worker, and why the attempt before it ended. */
async function completedRunScript(handle: WorkflowHandle) {
  const events = (await handle.fetchHistory()).events ?? [];
  const scheduled = new Set(
    events
      .filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'runScript')
      .map((e) => String(e.eventId)),
  );
  const started = events
    .map((e) => e.activityTaskStartedEventAttributes)
    .filter((a) => a && scheduled.has(String(a.scheduledEventId)));
  expect(started).toHaveLength(1);
  return started[0]!;
}

describe('rolling restart', () => {
  it('SIGTERM to the worker running a script: it exits 0 after the grace time, another worker finishes the job', async () => {
    const a = spawn(config);
    const job = gatedJob('roll');
    const handle = await startJob(client, config, job.spec);
    await eventually(
      'the script running on worker A',
      async () => (await handle.query(jobStatusQuery)).state === 'running' && existsSync(job.witness),
      90_000,
    );
    expect((await runScriptAttempt(handle))?.worker.startsWith(identityOf(a))).toBe(true);

    const b = spawn(config);
    await eventually('worker B polling', () => pollsActivities(b), 60_000);

    const sent = Date.now();
    a.kill('SIGTERM');
    const end = await exited(a, 30_000);
    const tookMs = Date.now() - sent;
    expect(end).toEqual({ code: 0, signal: null });
    // It waited for its running activity, as long as the grace time, then let it go.
    expect(tookMs).toBeGreaterThanOrEqual(GRACE_SECONDS * 1000);
    expect(readFileSync(job.witness, 'utf8')).toBe('started\n'); // the script was not stopped...

    // ...and the retry on B re-attaches to it while it still runs.
    await eventually(
      'runScript re-attached on worker B',
      async () => {
        const at = await runScriptAttempt(handle);
        return at !== undefined && at.attempt >= 2 && at.worker.startsWith(identityOf(b));
      },
      60_000,
    );
    await new Promise((r) => setTimeout(r, 1000));
    job.open();

    const r = await handle.result();
    expect(r.state).toBe('succeeded');
    expect(r.exitCode).toBe(0);
    expect(readFileSync(job.witness, 'utf8')).toBe('started\nfinished\n'); // started once, finished once
    expectWholeLog(await readJobLog(config, r.log.key));
    expect(leftoverVms(job.spec.id)).toEqual([]);

    const done = await completedRunScript(handle);
    expect(done.attempt).toBeGreaterThanOrEqual(2);
    expect(done.identity?.startsWith(identityOf(b))).toBe(true);
    expect(done.lastFailure?.applicationFailureInfo?.type).toBe('WorkerShutdown');
    expect(done.lastFailure?.applicationFailureInfo?.nonRetryable ?? false).toBe(false);

    b.kill('SIGTERM');
    expect(await exited(b, 30_000)).toEqual({ code: 0, signal: null });
  });

  it('a second SIGTERM exits at once; the script still runs and the job still completes', async () => {
    // Same pool and task queue, a grace time far longer than the test: only the second signal ends it.
    const patient = fileConfig(`${POOL}-patient`, (raw) => {
      raw.temporal.taskQueue = config.temporal.taskQueue;
      raw.pools[0].name = POOL;
      raw.worker = { shutdownGraceSeconds: 300 };
    });
    const a = spawn(patient);
    const job = gatedJob('roll2');
    const handle = await startJob(client, config, job.spec);
    await eventually(
      'the script running on worker A',
      async () => (await handle.query(jobStatusQuery)).state === 'running' && existsSync(job.witness),
      90_000,
    );

    a.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 2000));
    expect(a.exitCode).toBeNull(); // waiting on its running activity
    const sent = Date.now();
    a.kill('SIGTERM');
    expect(await exited(a, 5000)).toEqual({ code: 143, signal: null });
    expect(Date.now() - sent).toBeLessThan(5000);

    // A said nothing on its way out: B's attempt starts when A's heartbeat times out.
    const b = spawn(config);
    await eventually(
      'runScript re-attached on worker B',
      async () => {
        const at = await runScriptAttempt(handle);
        return at !== undefined && at.attempt >= 2 && at.worker.startsWith(identityOf(b));
      },
      60_000,
    );
    job.open();
    const r = await handle.result();
    expect(r.state).toBe('succeeded');
    expect(r.exitCode).toBe(0);
    expect(readFileSync(job.witness, 'utf8')).toBe('started\nfinished\n');
    expectWholeLog(await readJobLog(config, r.log.key));

    b.kill('SIGTERM');
    expect(await exited(b, 30_000)).toEqual({ code: 0, signal: null });
  });
});
