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
import { poolStateQuery, poolWorkflowId } from '../workflows/definitions';
import { SEED_IMAGE as SEED_IMAGE_FOR_CRASH } from '../src/emulator/seed-image';
import {
  DRIVERS,
  type Driver,
  eventually,
  fileConfig,
  freshImage,
  leftoverVms,
  readJobLog,
  recordHistory,
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
    // A version no host caches yet: the boot from the cache answers "not here", then fetch and boot.
    if (stage === 'ensureImage') await recordHistory('job-image-not-cached-worker-killed', handle);
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

type History = Awaited<ReturnType<ReturnType<Client['workflow']['getHandle']>['fetchHistory']>>;

/** The job's own record: destroyVm completed, and how many times it sent its lease back. */
function cleanupSteps(h: History): { destroyed: boolean; releases: number } {
  const destroy = new Set(
    h
      .events!.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'destroyVm')
      .map((e) => String(e.eventId)),
  );
  return {
    destroyed: h.events!.some(
      (e) =>
        e.activityTaskCompletedEventAttributes &&
        destroy.has(String(e.activityTaskCompletedEventAttributes.scheduledEventId)),
    ),
    releases: h.events!.filter(
      (e) => e.signalExternalWorkflowExecutionInitiatedEventAttributes?.signalName === 'releaseLease',
    ).length,
  };
}

/** How many `releaseLease` signals for this job the pool took in (its payload names the job). */
function releasesReceived(h: History, jobWorkflowId: string): number {
  return h.events!.filter((e) => {
    const a = e.workflowExecutionSignaledEventAttributes;
    if (a?.signalName !== 'releaseLease') return false;
    const p = a.input?.payloads?.[0]?.data;
    return p ? Buffer.from(p).toString('utf8').includes(JSON.stringify(jobWorkflowId)) : false;
  }).length;
}

describe('a worker lost between the VM destroyed and the slot released', () => {
  it('gives the slot back exactly once, and the next job gets it', async () => {
    // The window is a workflow task long: the worker is frozen (SIGSTOP) the moment the job's VM is gone,
    // then let run 2 ms at a time until its history shows destroyVm done. A try whose release got out
    // first missed the window and is run again.
    let hit: { id: string; workflowId: string; counter: string } | undefined;
    for (let attempt = 1; attempt <= 8 && !hit; attempt++) {
      const counter = join(mkdtempSync(join(tmpdir(), 'marina-counter-')), 'count');
      const spec = {
        id: uniqueId('k-release'),
        pool: POOL,
        image: SEED_IMAGE_FOR_CRASH,
        script: `echo ran >> ${counter}; sleep 1`,
        timeoutSeconds: 120,
      };
      let worker = spawnWorker(config);
      workers.push(worker);
      const handle = await startJob(client, config, spec);
      await eventually('the script running', async () => existsSync(counter), 90_000);
      await eventually('the VM gone', async () => leftoverVms(spec.id).length === 0, 60_000, 1);
      worker.kill('SIGSTOP');
      let steps = cleanupSteps(await handle.fetchHistory());
      while (!steps.destroyed && steps.releases === 0) {
        worker.kill('SIGCONT');
        await new Promise((r) => setTimeout(r, 2));
        worker.kill('SIGSTOP');
        steps = cleanupSteps(await handle.fetchHistory());
      }
      if (steps.destroyed && steps.releases === 0) hit = { id: spec.id, workflowId: handle.workflowId, counter };
      worker.kill('SIGKILL');
      await new Promise((r) => worker.once('exit', r));
      worker = spawnWorker(config);
      workers.push(worker);
      const r = await handle.result();
      expect(r.state).toBe('succeeded');
      expect(readFileSync(counter, 'utf8')).toBe('ran\n');
      const after = cleanupSteps(await handle.fetchHistory());
      expect(after.releases).toBe(1);
      if (hit) {
        const pool = client.workflow.getHandle(poolWorkflowId(POOL));
        await eventually(
          'the pool holding no lease for the job',
          async () => !(await pool.query(poolStateQuery)).leases.some((l) => l.jobWorkflowId === hit!.workflowId),
          60_000,
        );
        expect(releasesReceived(await pool.fetchHistory(), hit.workflowId)).toBe(1);
        // The slot is there to lease: a job right after runs.
        const next = await (
          await startJob(client, config, {
            id: uniqueId('k-next'),
            pool: POOL,
            image: SEED_IMAGE_FOR_CRASH,
            script: 'true',
            timeoutSeconds: 60,
          })
        ).result();
        expect(next.state).toBe('succeeded');
      }
      worker.kill('SIGTERM');
      await new Promise((r) => worker.once('exit', r));
    }
    expect(hit, 'a worker frozen after destroyVm and before the release in one of 8 tries').toBeDefined();
  });
});
