/** The Marina worker: runs job and pool workflows and every activity, and keeps the configured pools running. */
import { hostname } from 'node:os';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { startTracing } from './telemetry/tracing';
import { startWorkerMetrics } from './telemetry/worker-metrics';
import { ScheduleAlreadyRunning, ScheduleOverlapPolicy, type Client } from '@temporalio/client';
import { reconcileScheduleId, type ReconcilerInput } from '../workflows/reconciler';
import { createActivities } from '../activities';
import { ActivityContext } from '../activities/context';
import type { LoadedConfig } from './config/load';
import { poolStartOptions } from './config/pool-settings';
import { connectClient } from './client/jobs';
import { temporalConnectionOptions } from './client/connection';
import type { poolWorkflow } from '../workflows/pool';
import { WORKFLOWS_PATH, WORKFLOW_INTERCEPTOR_MODULES } from './workflow-bundle';
import { ensureGithubSchedules } from './github/schedule';

// Where the workflows are bundled from (src/workflow-bundle.ts); still exported here for the tests that import it.
export { WORKFLOWS_PATH };

/**
 * Starts each configured pool's workflow if it is not running. A running pool keeps its settings: only
 * `marina pool apply` changes them (src/client/pool-settings.ts), so several workers can share one config,
 * and one with a stale file cannot undo an operator's change. A pool that is not running is also started by
 * whatever talks to it next (a job asking for a slot, a host reporting): activities/pool-keeper.ts.
 */
export async function ensurePools(client: Client, config: LoadedConfig): Promise<void> {
  for (const pool of config.pools) {
    await client.workflow.start<typeof poolWorkflow>('poolWorkflow', {
      ...poolStartOptions(config, pool, `worker on ${hostname()}`),
      workflowIdConflictPolicy: 'USE_EXISTING',
    });
    if (pool.aws) await ensureReconcileSchedule(client, config, pool.name, pool.aws);
  }
}

/** The reconciler's Temporal Schedule for an AWS pool: created, or updated to the current config. */
async function ensureReconcileSchedule(
  client: Client,
  config: LoadedConfig,
  pool: string,
  aws: NonNullable<LoadedConfig['pools'][number]['aws']>,
): Promise<void> {
  const input: ReconcilerInput = {
    pool,
    taskQueue: config.temporal.taskQueue,
    timeScale: aws.timeScale,
    pollSeconds: aws.pollSeconds,
  };
  const options = {
    spec: { intervals: [{ every: `${aws.reconcileSeconds}s` as const }] },
    action: {
      type: 'startWorkflow' as const,
      workflowType: 'reconcilerWorkflow',
      workflowId: reconcileScheduleId(pool),
      taskQueue: config.temporal.taskQueue,
      args: [input],
    },
    policies: { overlap: ScheduleOverlapPolicy.SKIP },
  };
  try {
    await client.schedule.create({ scheduleId: reconcileScheduleId(pool), ...options });
  } catch (e) {
    if (!(e instanceof ScheduleAlreadyRunning)) throw e;
    await client.schedule.getHandle(reconcileScheduleId(pool)).update((prev) => ({ ...prev, ...options }));
  }
}

/** How long past the grace time a worker waits for activities that do not give up when told to. */
export const SHUTDOWN_FORCE_AFTER_GRACE_SECONDS = 30;

export interface MarinaWorker {
  worker: Worker;
  client: Client;
  context: ActivityContext;
  close(): Promise<void>;
}

export async function createMarinaWorker(
  config: LoadedConfig,
  options: Partial<Pick<WorkerOptions, 'workflowBundle' | 'maxCachedWorkflows' | 'identity'>> = {},
): Promise<MarinaWorker> {
  const { apiKey, ...rest } = temporalConnectionOptions(config);
  const connection = await NativeConnection.connect({
    ...rest,
    apiKey: typeof apiKey === 'function' ? apiKey() : apiKey,
  });
  const client = await connectClient(config);
  const context = new ActivityContext(config, client);
  const tracing = startTracing(config);
  const worker = await Worker.create({
    connection,
    namespace: config.temporal.namespace,
    taskQueue: config.temporal.taskQueue,
    // A prebuilt bundle carries the workflow interceptors already (src/workflow-bundle.ts).
    ...(options.workflowBundle
      ? { workflowBundle: options.workflowBundle, interceptors: tracing.interceptors }
      : {
          workflowsPath: WORKFLOWS_PATH,
          interceptors: { ...tracing.interceptors, workflowModules: WORKFLOW_INTERCEPTOR_MODULES },
        }),
    activities: createActivities(context),
    ...(options.maxCachedWorkflows !== undefined ? { maxCachedWorkflows: options.maxCachedWorkflows } : {}),
    ...(options.identity ? { identity: options.identity } : {}),
    // Activities mostly wait on SSH and S3: many can run at once on a small worker. Each on-prem
    // host's watch (activities/watch.ts) holds a slot for hours, mostly asleep: on top, so that one
    // worker can carry every watch and still run jobs.
    maxConcurrentActivityTaskExecutions: 200 + config.pools.reduce((n, p) => n + p.hosts.length, 0),
    // On shutdown, short activities get to finish; long ones are then told the worker is going
    // (activities/shutdown.ts) and hand their work over to another worker's retry.
    shutdownGraceTime: config.worker.shutdownGraceSeconds * 1000,
    // An activity deaf to that would hold the exit for good; after this the worker gives up on it.
    shutdownForceTime: (config.worker.shutdownGraceSeconds + SHUTDOWN_FORCE_AFTER_GRACE_SECONDS) * 1000,
  });
  await ensurePools(client, config);
  const metrics = await startWorkerMetrics(config, client);
  // GitHub Actions: each target's missed-jobs scan (src/github/schedule.ts).
  await ensureGithubSchedules(client, config);
  return {
    worker,
    client,
    context,
    async close() {
      await metrics.stop();
      await tracing.stop();
      await context.close();
      await client.connection.close();
      await connection.close();
    },
  };
}
