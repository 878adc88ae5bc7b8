/**
 * Issue #21, "operable in production", through the real CLI: failed jobs look failed to Temporal,
 * logs are kept per run and their chunks removed, signals end `marina run` cleanly, and the CLI's
 * refusals say what is wrong and what to do.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkflowFailedError, WorkflowIdReusePolicy, type Client } from '@temporalio/client';
import type { ApplicationFailure } from '@temporalio/common';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { checkJobSpec, followLog, startJob } from '../src/client/jobs';
import { jobHandle, jobResultOfFailure } from '../src/client/job-result';
import { logsLocation } from '../src/config/load';
import { s3ClientFor } from '../src/config/s3';
import type { LoadedConfig } from '../src/config/load';
import { SEED_IMAGE } from '../src/emulator/seed-image';
import { jobWorkflowId } from '../src/domain/job';
import { parseTrace } from '../src/sim/trace';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  eventually,
  fileConfig,
  leftoverVms,
  readJobLog,
  recordHistory,
  runCli,
  startWorker,
  uniqueId,
} from './helpers';

const POOL = 'ops';
let config: LoadedConfig;
let client: Client;
let stopWorker: () => Promise<void>;

beforeAll(async () => {
  config = fileConfig(POOL);
  const started = await startWorker(config);
  client = started.w.client;
  stopWorker = started.stop;
});

afterAll(async () => {
  await stopWorker?.();
});

const runArgs = (id: string, script: string, ...more: string[]) => [
  'run',
  '--pool',
  POOL,
  '--image',
  SEED_IMAGE,
  '--id',
  id,
  '--script',
  script,
  ...more,
];

describe('failed jobs look failed', () => {
  it("a script that exits 3 fails its workflow (the Web UI's Failures view finds it), and `marina run` still exits 3 with its output", async () => {
    const id = uniqueId('fail3');
    const run = await runCli(config, runArgs(id, 'echo output before failing; exit 3'));
    expect(run.stdout).toBe('output before failing\n');
    expect(run.stderr).toMatch(new RegExp(`job ${id} failed \\(exit 3\\)`));
    expect(run.code).toBe(3);

    const handle = client.workflow.getHandle(jobWorkflowId(id));
    // `marina run` returns at the script's end; the workflow ends once the VM is gone.
    await handle.result().catch(() => undefined);
    const d = await handle.describe();
    expect(d.status.name).toBe('FAILED');
    // What the Web UI shows of it: its state first in the current details, and what its query is for.
    const meta = await handle.query<{
      currentDetails: string;
      definition: { queryDefinitions: Array<{ name: string; description?: string }> };
    }>('__temporal_workflow_metadata');
    expect(meta.currentDetails).toMatch(/^\*\*failed\*\* · exit 3 · mac-\d\n\nstages: resolve /);
    expect(meta.definition.queryDefinitions.find((q) => q.name === 'status')?.description).toMatch(/stage times/);
    // With MARINA_RECORD_HISTORIES=<release>: the patched path's history, for later builds to replay.
    await recordHistory('job-exit-3-fails-workflow', handle);
    const query = 'ExecutionStatus="Failed" AND WorkflowType="jobWorkflow"';
    await eventually(
      'the job in the Failures view',
      async () => {
        for await (const wf of client.workflow.list({ query })) if (wf.workflowId === jobWorkflowId(id)) return true;
        return false;
      },
      30_000,
    );
    expect(leftoverVms(id)).toEqual([]);

    const show = await runCli(config, ['job', 'show', id]);
    expect(show.code).toBe(0);
    const shown = JSON.parse(show.stdout) as { status: string; result: { state: string; exitCode: number } };
    expect(shown.status).toBe('FAILED');
    expect(shown.result).toMatchObject({ state: 'failed', exitCode: 3 });
  });
});

/** Every log object stored for a job id, across its runs. */
async function logObjects(jobId: string): Promise<string[]> {
  const loc = logsLocation(config);
  const s3 = s3ClientFor(config, loc);
  try {
    const out = await s3.send(new ListObjectsV2Command({ Bucket: loc.bucket, Prefix: `${loc.prefix}${jobId}/` }));
    return (out.Contents ?? []).map((o) => o.Key!).sort();
  } finally {
    s3.destroy();
  }
}

const job = (over: Record<string, unknown> = {}) => ({
  id: uniqueId('ops'),
  pool: POOL,
  image: SEED_IMAGE,
  script: 'echo hello',
  timeoutSeconds: 120,
  ...over,
});

describe('timed-out jobs look failed too', () => {
  it('a script past its timeout fails the workflow with JobTimedOut, and the client still gets its result', async () => {
    const spec = job({ script: 'echo start; sleep 30', timeoutSeconds: 2 });
    const handle = await startJob(client, config, spec);
    const r = await handle.result(); // unwrapped: no change for callers
    expect(r).toMatchObject({ jobId: spec.id, state: 'timed_out' });
    const raw = await client.workflow
      .getHandle(jobWorkflowId(spec.id))
      .result()
      .catch((e: unknown) => e);
    expect(raw).toBeInstanceOf(WorkflowFailedError);
    const cause = (raw as WorkflowFailedError).cause as ApplicationFailure;
    expect([cause.type, cause.nonRetryable]).toEqual(['JobTimedOut', true]);
    expect(jobResultOfFailure(raw)).toEqual(r);
    expect(leftoverVms(spec.id)).toEqual([]);
  });
});

describe('log retention', () => {
  it('streams from chunks while the job runs, then keeps only the full log, under the run id', async () => {
    // Output over several flushes (500 ms apart), so several chunks are written.
    const spec = job({ script: 'for i in 1 2 3 4 5; do echo "line $i"; sleep 0.6; done' });
    const handle = await startJob(client, config, spec);
    const result = handle.result();
    let beforeDone = '';
    let ended = false;
    void result.finally(() => (ended = true));
    const streamed: Buffer[] = [];
    await followLog(
      config,
      { jobId: spec.id, runId: handle.firstExecutionRunId },
      (b) => {
        if (!ended) beforeDone += b.toString();
        streamed.push(b);
      },
      result,
      100,
    );
    const r = await result;
    const expected = 'line 1\nline 2\nline 3\nline 4\nline 5\n';
    expect(beforeDone.length).toBeGreaterThan(0); // followed live, from chunks
    expect(Buffer.concat(streamed).toString()).toBe(expected);
    expect(r.log.key).toBe(`logs/${spec.id}/${handle.firstExecutionRunId}/output.log`);
    expect(await logObjects(spec.id)).toEqual([r.log.key]); // no chunk left
    expect(await readJobLog(config, r.log.key)).toBe(expected);

    // A follower that comes late, when the chunks are gone, still gets the whole log.
    const late: Buffer[] = [];
    await followLog(config, { jobId: spec.id, runId: handle.firstExecutionRunId }, (b) => late.push(b), result, 50);
    expect(Buffer.concat(late).toString()).toBe(expected);
  });

  it("a job id used again (allowed once the first run is gone) keeps both runs' logs", async () => {
    const first = job({ script: 'echo first run' });
    const r1 = await (await startJob(client, config, first)).result();
    // What Temporal permits after retention, and a caller may ask for explicitly: the same workflow id again.
    const again = await checkJobSpec(config, { ...first, script: 'echo second run' }, { checkImage: false });
    const h2 = jobHandle(
      await client.workflow.start('jobWorkflow', {
        workflowId: jobWorkflowId(first.id),
        taskQueue: config.temporal.taskQueue,
        args: [again],
        workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
      }),
    );
    const r2 = await h2.result();
    expect(r2.log.key).not.toBe(r1.log.key);
    expect(await readJobLog(config, r1.log.key)).toBe('first run\n');
    expect(await readJobLog(config, r2.log.key)).toBe('second run\n');
    expect(await logObjects(first.id)).toEqual([r1.log.key, r2.log.key].sort());
  });
});

describe('the CLI says what is wrong and what to do', () => {
  let finished: string;
  beforeAll(async () => {
    const spec = job({ script: 'echo done' });
    await (await startJob(client, config, spec)).result();
    finished = spec.id;
  });

  it('a job id already used: names the job, its state, how to see it, and to pick another id', async () => {
    const r = await runCli(config, runArgs(finished, 'echo again'));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`job id "${finished}" is taken: job ${finished} (workflow job/${finished})`);
    expect(r.stderr).toContain('finished (COMPLETED), state succeeded');
    expect(r.stderr).toContain(`marina job show ${finished}`);
    expect(r.stderr).toContain('another --id');
    expect(r.stdout).toBe('');
  });

  it('`job list --state bogus` is refused with the valid states (exit 2), not an empty list', async () => {
    const r = await runCli(config, ['job', 'list', '--state', 'bogus']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--state: "bogus" is not a job state; use one of: validating, queued,');
    expect(r.stderr).toContain('timed_out, cancelled, error');
    expect(r.stdout).toBe('');
    const ok = await runCli(config, ['job', 'list', '--state', 'succeeded', '--limit', '1000']);
    expect(ok.code).toBe(0);
  });

  it('`job cancel` of a finished job says it already finished, with its state, and exits 1', async () => {
    const r = await runCli(config, ['job', 'cancel', finished]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(`job ${finished} already finished \\(COMPLETED, state succeeded, closed .*\\); nothing to cancel`),
    );
    expect(r.stderr).not.toContain('cancel requested');
    const none = await runCli(config, ['job', 'cancel', 'no-such-job-id']);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('no job no-such-job-id (workflow job/no-such-job-id not found)');
  });

  it('a snapshot name with upper case: the error says names are lower-case and offers the fix', async () => {
    const r = await runCli(config, runArgs(uniqueId('snap'), 'true', '--snapshot', 'ci/My-Cache:PR-1'));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      'snapshot.image: "ci/My-Cache:PR-1" is not an image reference: lower-case letters, digits, ".", "_", "-" and "/" in the name',
    );
    expect(r.stderr).toContain('did you mean "ci/my-cache:PR-1"?');
  });
});

describe('a planner re-prices the fleet on its own history', () => {
  it("`marina trace export` writes this pool's closed jobs, with their run times, as a trace `marina simulate` takes", async () => {
    const spec = { id: uniqueId('trace'), pool: POOL, image: SEED_IMAGE, script: 'sleep 1.5', timeoutSeconds: 60 };
    const r = await (await startJob(client, config, spec)).result();
    expect(r.stages.run).toBeGreaterThanOrEqual(1500);
    const out = join(mkdtempSync(join(tmpdir(), 'marina-trace-')), 'ops.csv');
    // Visibility catches up with the close a moment after it.
    const rows = await eventually('the job in the export', async () => {
      const e = await runCli(config, ['trace', 'export', '--since', '1h', '--pool', POOL, '--out', out]);
      expect(e.code).toBe(0);
      const jobs = parseTrace(readFileSync(out, 'utf8'), out);
      return jobs.some((j) => j.jobName === spec.id) && jobs;
    });
    const mine = rows.find((j) => j.jobName === spec.id)!;
    expect(mine).toMatchObject({ duration: Math.ceil(r.stages.run! / 1000), pool: POOL, image: SEED_IMAGE });
    expect(rows.every((j) => j.pool === POOL)).toBe(true);
    const sim = await runCli(config, ['simulate', out, '--policies', 'marina', '--json']);
    expect(sim.code).toBe(0);
    expect(JSON.parse(sim.stdout)).toBeTruthy();
  });
});
