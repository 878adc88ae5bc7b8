/** Helpers of the cluster suite: worker processes on one config, gated jobs with a witness file outside Marina. */
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { expect, inject } from 'vitest';
import type { Client, WorkflowHandle } from '@temporalio/client';
import type { LoadedConfig } from '../../src/config/load';
import { SEED_IMAGE } from '../../src/emulator/seed-image';
import { spawnWorker, uniqueId } from '../helpers';

export const clusterDir = () => inject('clusterDir');

/** Worker processes of one config (the production shape: several workers, one marina.yaml). */
export class Workers {
  readonly all: ChildProcess[] = [];
  constructor(private readonly config: LoadedConfig) {}

  spawn(): ChildProcess {
    const w = spawnWorker(this.config);
    this.all.push(w);
    return w;
  }

  running(): ChildProcess[] {
    return this.all.filter((w) => w.exitCode === null && w.signalCode === null);
  }

  /** The running worker whose identity (the SDK's default, `pid@hostname`) is `identity`. */
  byIdentity(identity: string): ChildProcess | undefined {
    return this.running().find((w) => identity.startsWith(`${w.pid}@`));
  }

  killAll(): void {
    for (const w of this.running()) w.kill('SIGKILL');
  }
}

/** True once every running worker polls the task queue for activities and workflow tasks. */
export async function allPolling(client: Client, config: LoadedConfig, workers: Workers): Promise<boolean> {
  for (const taskQueueType of [1 /* WORKFLOW */, 2 /* ACTIVITY */]) {
    const r = await client.workflowService.describeTaskQueue({
      namespace: config.temporal.namespace,
      taskQueue: { name: config.temporal.taskQueue },
      taskQueueType,
    });
    const ids = (r.pollers ?? []).map((p) => p.identity ?? '');
    if (!workers.running().every((w) => ids.some((id) => id.startsWith(`${w.pid}@`)))) return false;
  }
  return true;
}

export function exited(w: ChildProcess): Promise<void> {
  if (w.exitCode !== null || w.signalCode !== null) return Promise.resolve();
  return new Promise((r) => w.once('exit', () => r()));
}

/**
 * A job whose script marks its start and end in a witness file outside Marina and ticks until the test
 * opens its gate, so it spans whatever the test does to the cluster however slow the machine is.
 */
export function gatedJob(pool: string, prefix: string) {
  const dir = mkdtempSync(join(tmpdir(), 'marina-cluster-job-'));
  const witness = join(dir, 'witness');
  const gate = join(dir, 'gate');
  const spec = {
    id: uniqueId(prefix),
    pool,
    image: SEED_IMAGE,
    script:
      `echo begin; echo started >> ${witness}; i=0; ` +
      `while [ ! -f ${gate} ]; do echo "tick $i"; i=$((i+1)); sleep 0.2; done; ` +
      `echo finish; echo finished >> ${witness}`,
    timeoutSeconds: 600,
  };
  return {
    spec,
    started: () => existsSync(witness),
    witness: () => readFileSync(witness, 'utf8'),
    open: () => writeFileSync(gate, ''),
  };
}

/** The log is whole: begin, every tick once and in order, finish. */
export function expectWholeLog(log: string, minTicks = 1): void {
  const lines = log.split('\n');
  expect(lines[0]).toBe('begin');
  expect(lines.at(-1)).toBe('');
  expect(lines.at(-2)).toBe('finish');
  const ticks = lines.slice(1, -2);
  expect(ticks.length).toBeGreaterThanOrEqual(minTicks);
  expect(ticks).toEqual(ticks.map((_, i) => `tick ${i}`));
}

/** The started runScript activity of a running job: its attempt and the worker running it. */
export async function runScriptAttempt(
  handle: WorkflowHandle,
): Promise<{ attempt: number; worker: string } | undefined> {
  const d = await handle.describe();
  const a = d.raw.pendingActivities?.find((p) => p.activityType?.name === 'runScript' && p.state === 2 /* STARTED */);
  return a ? { attempt: a.attempt ?? 0, worker: a.lastWorkerIdentity ?? '' } : undefined;
}

/** Every runScript start in a job's history (one per attempt that reached a worker). */
export async function runScriptStarts(handle: WorkflowHandle) {
  const events = (await handle.fetchHistory()).events ?? [];
  const scheduled = new Set(
    events
      .filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'runScript')
      .map((e) => String(e.eventId)),
  );
  // One scheduled runScript: it was never scheduled twice, so it cannot have run as two activities.
  expect(scheduled.size).toBe(1);
  return events
    .map((e) => e.activityTaskStartedEventAttributes)
    .filter((a) => a && scheduled.has(String(a.scheduledEventId)))
    .map((a) => ({ attempt: a!.attempt ?? 1, identity: a!.identity ?? '' }));
}
