/**
 * Two Marina worker processes on one config against a real Temporal cluster (server on PostgreSQL):
 * the worker running a script is SIGKILLed and the other finishes the job, the script having run once;
 * a burst of jobs all complete, spread over both workers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Connection, Client } from '@temporalio/client';
import { startJob } from '../../src/client/jobs';
import type { LoadedConfig } from '../../src/config/load';
import { SEED_IMAGE } from '../../src/emulator/seed-image';
import { eventually, fileConfig, leftoverVms, readJobLog, uniqueId } from '../helpers';
import {
  allPolling,
  exited,
  expectWholeLog,
  gatedJob,
  runScriptAttempt,
  runScriptStarts,
  Workers,
} from './cluster-helpers';

const POOL = 'cluster-workers';
let config: LoadedConfig;
let client: Client;
let workers: Workers;

beforeAll(async () => {
  config = fileConfig(POOL);
  client = new Client({ connection: await Connection.connect({ address: config.temporal.address }) });
  workers = new Workers(config);
  workers.spawn();
  workers.spawn();
  await eventually('both workers polling', () => allPolling(client, config, workers), 120_000);
});

afterAll(async () => {
  workers?.killAll();
  await client?.connection.close();
});

describe('two workers on a Temporal cluster', () => {
  it('the worker running a script is SIGKILLed: the other worker finishes the job, the script ran once', async () => {
    const job = gatedJob(POOL, 'cl-kill');
    const handle = await startJob(client, config, job.spec);
    const running = await eventually(
      'the script running',
      async () => job.started() && (await runScriptAttempt(handle)),
      120_000,
    );
    const victim = workers.byIdentity(running.worker);
    expect(victim, `a worker process with identity ${running.worker}`).toBeDefined();
    const killedAt = Date.now();
    victim!.kill('SIGKILL');
    await exited(victim!);
    // A replacement, as a supervisor would start; the survivor may take the retry first: either is right.
    workers.spawn();
    await eventually(
      'runScript re-attached by another worker',
      async () => {
        const at = await runScriptAttempt(handle);
        return at !== undefined && at.attempt >= 2 && !at.worker.startsWith(`${victim!.pid}@`);
      },
      120_000,
    );
    console.log(
      `cluster figures: script re-attached ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the SIGKILL`,
    );
    job.open();

    const r = await handle.result();
    expect(r.state).toBe('succeeded');
    expect(job.witness()).toBe('started\nfinished\n'); // started once, finished once
    expectWholeLog(await readJobLog(config, r.log.key));
    expect(leftoverVms(job.spec.id)).toEqual([]);
    const starts = await runScriptStarts(handle);
    expect(starts.at(-1)!.attempt).toBeGreaterThanOrEqual(2);
    expect(starts.at(-1)!.identity.startsWith(`${victim!.pid}@`)).toBe(false);
  });

  it('a burst of 20 jobs: every one completes, each script runs once, both workers take part', async () => {
    // The replacement started by the test before must be polling too, or the survivor alone might take the burst.
    await eventually('both workers polling', () => allPolling(client, config, workers), 120_000);
    const dir = mkdtempSync(join(tmpdir(), 'marina-burst-'));
    const ids = Array.from({ length: 20 }, (_, i) => uniqueId(`cl-burst-${i}`));
    const t0 = Date.now();
    const handles = await Promise.all(
      ids.map((id) =>
        startJob(client, config, {
          id,
          pool: POOL,
          image: SEED_IMAGE,
          script: `echo ran >> ${join(dir, id)}; echo "job ${id}"`,
          timeoutSeconds: 600,
        }),
      ),
    );
    const results = await Promise.all(handles.map((h) => h.result()));
    // A figure for the README ("Production topology"), not an assertion: 3 hosts of 2 VM slots each.
    console.log(`cluster figures: burst of 20 jobs done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    expect(results.map((r) => r.state)).toEqual(ids.map(() => 'succeeded'));
    for (const [i, id] of ids.entries()) {
      expect(readFileSync(join(dir, id), 'utf8')).toBe('ran\n');
      expect(await readJobLog(config, results[i]!.log.key)).toBe(`job ${id}\n`);
      expect(leftoverVms(id)).toEqual([]);
    }
    // Who ran the scripts: both workers share the load of one task queue.
    const identities = new Set<string>();
    for (const h of handles) for (const s of await runScriptStarts(h)) identities.add(s.identity.split('@')[0]!);
    expect(identities.size).toBeGreaterThanOrEqual(2);
  });
});
