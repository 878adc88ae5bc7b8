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
import { S3Client } from '@aws-sdk/client-s3';
import { startJob } from '../src/client/jobs';
import type { LoadedConfig } from '../src/config/load';
import { ChunkedStore } from '../src/images/chunked/store';
import { pushVmArchive } from '../src/images/chunked/vm-files';
import { buildSeedImage, publicKeyOf } from '../src/emulator/seed-image';
import { DEV_S3_CREDENTIALS } from '../src/emulator/s3-server';
import { eventually, fileConfig, leftoverVms, readJobLog, spawnWorker, stack, uniqueId } from './helpers';

const POOL = 'crash';
let config: LoadedConfig;
let client: Client;
const workers: ChildProcess[] = [];

beforeAll(async () => {
  config = fileConfig(POOL);
  client = new Client({ connection: await Connection.connect({ address: config.temporal.address }) });
});

afterAll(async () => {
  for (const w of workers) w.kill('SIGKILL');
  await client?.connection.close();
});

/**
 * A fresh image per test; for the fetch test, big enough that its download is a stage one can kill a
 * worker in (the others use a small disk: cloning 256 MiB on each boot only slows them down).
 */
async function freshImage(name: string, diskMiB: number): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'marina-img-'));
  const file = join(dir, 'image.tgz');
  buildSeedImage(file, publicKeyOf(join(stack().stateDir, 'keys', 'vm_ed25519')), diskMiB);
  const s3 = new S3Client({
    region: 'us-east-1',
    endpoint: config.imageStore.endpoint,
    forcePathStyle: true,
    credentials: DEV_S3_CREDENTIALS,
  });
  try {
    await pushVmArchive(new ChunkedStore(s3, config.imageStore), `${name}:1`, file);
  } finally {
    s3.destroy();
  }
  return `${name}:1`;
}

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

const killDuring = (stage: 'ensureImage' | 'bootVm' | 'runScript') =>
  it(`completes a job whose worker is SIGKILLed during ${stage}`, async () => {
    const image = await freshImage(
      uniqueId(`crash-${stage.toLowerCase()}`).toLowerCase(),
      stage === 'ensureImage' ? 256 : 8,
    );
    const counter = join(mkdtempSync(join(tmpdir(), 'marina-counter-')), 'count');
    const spec = {
      id: uniqueId(`k-${stage}`),
      pool: POOL,
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
  killDuring('bootVm');
  killDuring('runScript');
});
