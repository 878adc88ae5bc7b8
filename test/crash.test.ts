/**
 * A worker SIGKILLed in the middle of a job: a new worker picks the job up, the
 * script runs exactly once, its output is complete, and no VM is left.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { Connection, Client } from '@temporalio/client';
import { startJob } from '../src/client/jobs';
import type { LoadedConfig } from '../src/config/load';
import {
  DRIVERS,
  type Driver,
  eventually,
  fileConfig,
  freshImage,
  leftoverVms,
  readJobLog,
  spawnWorker,
  uniqueId,
} from './helpers';

const POOL = 'crash';
let config: LoadedConfig;
let client: Client;
const workers: ChildProcess[] = [];

beforeAll(async () => {
  // Pulls capped at 8 MB/s: the ensureImage test's 32 MB of image data take seconds, long enough to kill a worker in.
  config = fileConfig(
    POOL,
    (raw) => {
      for (const p of raw.pools) p.imageCache = { pullMBps: 8 };
    },
    { parallels: `${POOL}${DRIVERS[1].suffix}` },
  );
  client = new Client({ connection: await Connection.connect({ address: config.temporal.address }) });
});

afterAll(async () => {
  for (const w of workers) w.kill('SIGKILL');
  await client?.connection.close();
});

async function pendingActivity(workflowId: string): Promise<string | undefined> {
  const d = await client.workflow.getHandle(workflowId).describe();
  const started = d.raw.pendingActivities?.find((a) => a.state === 2 /* STARTED */);
  return started?.activityType?.name ?? undefined;
}

function startedAttempts(
  history: Awaited<ReturnType<ReturnType<Client['workflow']['getHandle']>['fetchHistory']>>,
  type: string,
): number {
  const scheduled = new Set(
    history
      .events!.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === type)
      .map((e) => String(e.eventId)),
  );
  // A retried attempt after a heartbeat timeout shows up as a higher attempt number on the final start event.
  const starts = history.events!.filter(
    (e) =>
      e.activityTaskStartedEventAttributes &&
      scheduled.has(String(e.activityTaskStartedEventAttributes.scheduledEventId)),
  );
  return Math.max(0, ...starts.map((e) => e.activityTaskStartedEventAttributes!.attempt ?? 0));
}

const killDuring = (stage: 'ensureImage' | 'bootVm' | 'runScript', d: Driver = DRIVERS[0]) =>
  it(`completes a job whose worker is SIGKILLed during ${stage}${d.suffix ? ` (${d.hypervisor})` : ''}`, async () => {
    const image = await freshImage(
      config,
      uniqueId(`crash-${stage.toLowerCase()}`).toLowerCase(),
      stage === 'ensureImage' ? 256 : 8,
      d.hypervisor,
    );
    const counter = join(mkdtempSync(join(tmpdir(), 'marina-counter-')), 'count');
    const spec = {
      id: uniqueId(`k-${stage}`),
      pool: `${POOL}${d.suffix}`,
      image,
      script: `echo begin; echo ran >> ${counter}; for i in 1 2 3 4 5 6; do echo "tick $i"; sleep 0.5; done; echo finish`,
      timeoutSeconds: 300,
    };
    let worker = spawnWorker(config);
    workers.push(worker);
    const handle = await startJob(client, config, spec);
    await eventually(
      `${stage} running`,
      async () =>
        (await pendingActivity(handle.workflowId)) === stage && (stage !== 'runScript' || existsSync(counter)),
      90_000,
    );
    worker.kill('SIGKILL');
    await new Promise((r) => worker.once('exit', r));
    worker = spawnWorker(config);
    workers.push(worker);
    const r = await handle.result();
    expect(r.state).toBe('succeeded');
    expect(readFileSync(counter, 'utf8')).toBe('ran\n'); // exactly once
    expect(await readJobLog(config, r.log.key)).toBe(
      `begin\n${[1, 2, 3, 4, 5, 6].map((i) => `tick ${i}\n`).join('')}finish\n`,
    );
    expect(leftoverVms(spec.id)).toEqual([]);
    // The kill really landed inside the stage: it took a second attempt.
    expect(startedAttempts(await handle.fetchHistory(), stage)).toBeGreaterThanOrEqual(2);
    worker.kill('SIGTERM');
    await new Promise((r) => worker.once('exit', r));
  });

describe('worker crash and resume', () => {
  killDuring('ensureImage');
});

// The kills that land in the hypervisor's steps (boot) and in the VM (run), on each hypervisor.
describe.each(DRIVERS)('worker crash and resume on $hypervisor', (d) => {
  killDuring('bootVm', d);
  killDuring('runScript', d);
});
