/**
 * A cleanup that cannot finish for longer than it used to be allowed (issue #22): destroyVm had a 2 h
 * schedule-to-close timeout, so an outage past it (every worker stopped: the timeout counts queued time too; or
 * attempts that keep dying) turned a job whose script had succeeded into an error and left its VM. On Temporal's
 * time-skipping test server: the script succeeds, every destroy attempt fails for 3 h of workflow time, then one
 * succeeds, and the job ends succeeded. (The test server stops skipping while an activity task waits for a
 * worker, so "no worker for 3 h" itself cannot be skipped through here; the timeout that gave up is the same.
 * The chaos soak stops every worker in real time: README, "Chaos".) With the old options this test fails:
 * the job ends in error, retry state TIMEOUT. Activities are stand-ins; the pool one that grants at once
 * (test/fixtures/outage-workflows.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import {
  bundleWorkflowCode,
  DefaultLogger,
  Runtime,
  Worker,
  type WorkflowBundleWithSourceMap,
} from '@temporalio/worker';
import { temporalTestServer } from '../src/tools/binaries';
import { jobWorkflowId, type JobSpec } from '../src/domain/job';
import { poolWorkflowId, SEARCH_ATTRIBUTES, type JobResult } from '../workflows/definitions';
import type { Activities } from '../activities/types';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';

const QUEUE = 'outage';
const POOL = 'outage';
let env: TestWorkflowEnvironment;
let bundle: WorkflowBundleWithSourceMap;

beforeAll(async () => {
  try {
    Runtime.install({ logger: new DefaultLogger('ERROR') });
  } catch {
    /* installed by another file in this process */
  }
  env = await TestWorkflowEnvironment.createTimeSkipping({
    server: { executable: { type: 'existing-path', path: temporalTestServer() } },
  });
  const KEYWORD = 2; // temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
  await env.connection.operatorService.addSearchAttributes({
    namespace: env.namespace ?? 'default',
    searchAttributes: Object.fromEntries(Object.keys(SEARCH_ATTRIBUTES).map((k) => [k, KEYWORD])),
  });
  bundle = await bundleWorkflowCode({ workflowsPath: join(__dirname, 'fixtures', 'outage-workflows.ts') });
}, 120_000);
afterAll(async () => {
  await env?.teardown();
});

const image = { ref: 'outage/seed:1', digest: `sha256:${'a'.repeat(64)}`, size: 1, dataBytes: 1 };

/** What a pull answers (a pre-pull's details print its figures). */
const PULLED: Awaited<ReturnType<Activities['ensureImage']>> = {
  cached: false,
  fetchedBytes: 0,
  copiedBytes: 0,
  seconds: 0,
  evicted: [],
};

/** The job's activities on a host that works; `destroyVm` as given. */
function activities(destroyVm: Activities['destroyVm']): Partial<Activities> {
  return {
    resolveImage: async () => image,
    ensureImage: async () => PULLED,
    bootVm: async () => ({ ip: '10.0.0.2' }) as Awaited<ReturnType<Activities['bootVm']>>,
    // No host holds the image: the job fetches and boots it (main's boot-from-cache path answers nothing).
    bootCachedVm: async () => null as unknown as Awaited<ReturnType<Activities['bootCachedVm']>>,
    runScript: async () => ({
      exitCode: 0,
      timedOut: false,
      attached: false,
      bytes: 3,
      log: { bucket: 'marina', key: 'logs/outage-1' },
    }),
    destroyVm,
  };
}

describe('a cleanup that cannot finish for hours', () => {
  it('a job whose VM cannot be destroyed for 3 h (past the old 2 h) keeps trying, then ends succeeded', async () => {
    const spec: JobSpec = { id: 'outage-1', pool: POOL, image: image.ref, script: 'echo ok', timeoutSeconds: 60 };
    await env.client.workflow.start('grantingPoolWorkflow', { taskQueue: QUEUE, workflowId: poolWorkflowId(POOL) });
    // Every attempt fails for 3 h of workflow time, as each would with its worker SIGKILLed or its host away.
    let firstAt: number | undefined;
    const attempts: number[] = [];
    const worker = await Worker.create({
      connection: env.nativeConnection,
      taskQueue: QUEUE,
      workflowBundle: bundle,
      activities: activities(async (target) => {
        const now = await env.currentTimeMs();
        firstAt ??= now;
        attempts.push(now - firstAt);
        if (now - firstAt < 3 * 3600 * 1000) throw new Error(`ssh: connection reset destroying ${target.vm}`);
        return { existed: true };
      }),
    });
    const result = (await worker.runUntil(async () => {
      const job = await env.client.workflow.start('jobWorkflow', {
        taskQueue: QUEUE,
        workflowId: jobWorkflowId(spec.id),
        args: [spec],
      });
      return job.result();
    })) as JobResult;
    expect(result.state).toBe('succeeded');
    expect(result.exitCode).toBe(0);
    // It went on past the old 2 h bound, at most a minute apart (the retry's maximum interval), and the last
    // attempt destroyed the VM.
    expect(attempts.at(-1)!).toBeGreaterThanOrEqual(3 * 3600 * 1000);
    expect(attempts.filter((t) => t > 2 * 3600 * 1000).length).toBeGreaterThan(30);
  }, 120_000);

  it('a destroy attempt whose worker died is tried again within its heartbeat timeout, not after 5 minutes', async () => {
    const spec: JobSpec = { id: 'outage-2', pool: `${POOL}2`, image: image.ref, script: 'echo ok', timeoutSeconds: 60 };
    await env.client.workflow.start('grantingPoolWorkflow', {
      taskQueue: QUEUE,
      workflowId: poolWorkflowId(spec.pool),
    });
    // The first attempt never answers (its worker was SIGKILLed: no heartbeat, no result); the retry works.
    const attempts: number[] = [];
    const worker = await Worker.create({
      connection: env.nativeConnection,
      taskQueue: QUEUE,
      workflowBundle: bundle,
      activities: activities(async () => {
        const { attempt } = Context.current().info;
        attempts.push(attempt);
        // (It lets go when this worker shuts down at the end.)
        if (attempt === 1)
          await Promise.race([new Promise((r) => setTimeout(r, 90_000)), Context.current().cancelled.catch(() => 0)]);
        return { existed: true };
      }),
    });
    const result = (await worker.runUntil(async () => {
      const job = await env.client.workflow.start('jobWorkflow', {
        taskQueue: QUEUE,
        workflowId: jobWorkflowId(spec.id),
        args: [spec],
      });
      return job.result();
    })) as JobResult;
    expect(result.state).toBe('succeeded');
    expect(attempts).toEqual([1, 2]);
  }, 60_000);

  it('a job whose host left the pool right after the grant waits for the revoke and runs on another host', async () => {
    const spec: JobSpec = { id: 'outage-3', pool: `${POOL}3`, image: image.ref, script: 'echo ok', timeoutSeconds: 60 };
    // The pool took the host out and revokes its lease 30 s later (its message on the way); the job's first
    // step on it answers UnknownHost before that.
    await env.client.workflow.start('grantingPoolWorkflow', {
      taskQueue: QUEUE,
      workflowId: poolWorkflowId(spec.pool),
      args: [{ revokeFirstAfterMs: 30_000 }],
    });
    const fetchedOn: string[] = [];
    const worker = await Worker.create({
      connection: env.nativeConnection,
      taskQueue: QUEUE,
      workflowBundle: bundle,
      activities: {
        ...activities(async () => ({ existed: true })),
        ensureImage: async (...[target]: Parameters<Activities['ensureImage']>) => {
          fetchedOn.push(target.host);
          if (target.host === 'mac-1')
            throw ApplicationFailure.create({
              type: 'UnknownHost',
              message: `host "mac-1" is not (or no longer) in pool "${spec.pool}"`,
              nonRetryable: true,
            });
          return PULLED;
        },
      },
    });
    const result = (await worker.runUntil(async () => {
      const job = await env.client.workflow.start('jobWorkflow', {
        taskQueue: QUEUE,
        workflowId: jobWorkflowId(spec.id),
        args: [spec],
      });
      return job.result();
    })) as JobResult;
    expect(result.state).toBe('succeeded');
    expect(result.host).toBe('mac-2');
    expect(fetchedOn).toEqual(['mac-1', 'mac-2']);
  }, 60_000);
});
