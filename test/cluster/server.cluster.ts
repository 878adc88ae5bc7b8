/**
 * The Temporal server process itself SIGKILLed in the middle of jobs and started again on the same
 * PostgreSQL: every job completes once and nothing is lost. And the Web UI's Failures view query
 * (`ExecutionStatus="Failed"`) finds a failed job through the cluster's SQL visibility store.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connection, Client } from '@temporalio/client';
import { startJob } from '../../src/client/jobs';
import type { LoadedConfig } from '../../src/config/load';
import { SEED_IMAGE } from '../../src/emulator/seed-image';
import { startTemporalServer, stopTemporalServer, temporalServerPid } from '../../src/emulator/temporal-cluster';
import { jobWorkflowId } from '../../src/domain/job';
import { eventually, fileConfig, leftoverVms, readJobLog, uniqueId } from '../helpers';
import {
  allPolling,
  clusterDir,
  expectWholeLog,
  gatedJob,
  runScriptAttempt,
  runScriptStarts,
  Workers,
} from './cluster-helpers';

const POOL = 'cluster-server';
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
  // A failed test may leave the server down: the next file (and the teardown) expect it up.
  if (!temporalServerPid(clusterDir())) await startTemporalServer(clusterDir());
});

describe('the Temporal server crashes', () => {
  it('SIGKILL to the Temporal server in the middle of 3 jobs, then a restart: each completes once, nothing is lost', async () => {
    const jobs = [0, 1, 2].map(() => gatedJob(POOL, 'cl-srv'));
    const handles = await Promise.all(jobs.map((j) => startJob(client, config, j.spec)));
    await eventually(
      'all three scripts running',
      async () => {
        for (const [i, j] of jobs.entries()) if (!j.started() || !(await runScriptAttempt(handles[i]!))) return false;
        return true;
      },
      180_000,
    );

    const before = temporalServerPid(clusterDir())!;
    const killedAt = Date.now();
    await stopTemporalServer(clusterDir(), 'SIGKILL');
    expect(temporalServerPid(clusterDir())).toBeUndefined();
    // While it is down the scripts run on (their witness says so), and the first one finishes: its
    // worker has a result it cannot report yet.
    const ticked = jobs[0]!.witness();
    expect(ticked).toBe('started\n');
    jobs[0]!.open();
    await eventually('job 0 finished its script while the server was down', async () =>
      jobs[0]!.witness().includes('finished'),
    );

    const restartAt = Date.now();
    await startTemporalServer(clusterDir());
    const servingAt = Date.now();
    expect(temporalServerPid(clusterDir())).not.toBe(before);
    // Workers reconnect by themselves (no restart of theirs).
    expect(workers.running()).toHaveLength(2);
    for (const j of jobs.slice(1)) j.open();

    const results = await Promise.all(handles.map((h) => h.result()));
    // Figures for the README ("Production topology"), not assertions.
    console.log(
      `cluster figures: server down ${((servingAt - killedAt) / 1000).toFixed(1)} s ` +
        `(restart to serving ${((servingAt - restartAt) / 1000).toFixed(1)} s); ` +
        `3 jobs done ${((Date.now() - servingAt) / 1000).toFixed(1)} s after it served again`,
    );
    for (const [i, r] of results.entries()) {
      expect(r.state).toBe('succeeded');
      expect(jobs[i]!.witness()).toBe('started\nfinished\n'); // started once, finished once
      expectWholeLog(await readJobLog(config, r.log.key));
      expect(leftoverVms(jobs[i]!.spec.id)).toEqual([]);
      await runScriptStarts(handles[i]!); // one runScript activity each, whatever its attempts
    }
    // Nothing lost: visibility (in PostgreSQL) lists every job as completed.
    const query = `WorkflowType="jobWorkflow" AND ExecutionStatus="Completed" AND MarinaPool="${POOL}"`;
    await eventually('all three jobs completed in visibility', async () => {
      const seen = new Set<string>();
      for await (const wf of client.workflow.list({ query })) seen.add(wf.workflowId);
      return jobs.every((j) => seen.has(jobWorkflowId(j.spec.id)));
    });
  });

  it('a job whose script exits 3 is found by the Failures view query (ExecutionStatus="Failed") on the cluster', async () => {
    const id = uniqueId('cl-fail');
    const handle = await startJob(client, config, {
      id,
      pool: POOL,
      image: SEED_IMAGE,
      script: 'echo failing; exit 3',
      timeoutSeconds: 300,
    });
    const r = await handle.result();
    expect(r).toMatchObject({ state: 'failed', exitCode: 3 });
    expect((await client.workflow.getHandle(jobWorkflowId(id)).describe()).status.name).toBe('FAILED');
    const query = `ExecutionStatus="Failed" AND WorkflowType="jobWorkflow" AND MarinaJobState="failed"`;
    await eventually(
      'the job in the Failures view',
      async () => {
        for await (const wf of client.workflow.list({ query })) if (wf.workflowId === jobWorkflowId(id)) return true;
        return false;
      },
      30_000,
    );
  });
});
