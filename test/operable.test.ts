/**
 * Issue #21, "operable in production", through the real CLI: failed jobs look failed to Temporal,
 * logs are kept per run and their chunks removed, signals end `marina run` cleanly, and the CLI's
 * refusals say what is wrong and what to do.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@temporalio/client';
import type { LoadedConfig } from '../src/config/load';
import { SEED_IMAGE } from '../src/emulator/seed-image';
import { jobWorkflowId } from '../src/domain/job';
import { eventually, fileConfig, leftoverVms, runCli, startWorker, uniqueId } from './helpers';

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

    const d = await client.workflow.getHandle(jobWorkflowId(id)).describe();
    expect(d.status.name).toBe('FAILED');
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
