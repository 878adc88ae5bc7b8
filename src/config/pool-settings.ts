/** What a pool workflow is started with, from the config: its settings, id, search attributes and summary. */
import type { WorkflowStartOptions } from '@temporalio/client';
import { hostSpecs, hostTemplates, type LoadedConfig } from './load';
import { SA_POOL, poolWorkflowId, type PoolSettings } from '../../workflows/definitions';
import type { poolWorkflow } from '../../workflows/pool';

type PoolConfig = LoadedConfig['pools'][number];

export function poolSettings(pool: PoolConfig): PoolSettings {
  return {
    hosts: hostSpecs(pool),
    healthCheckSeconds: pool.healthCheckSeconds,
    leaseCheckSeconds: pool.leaseCheckSeconds,
    ...(pool.historyEventsPerRun ? { historyEventsPerRun: pool.historyEventsPerRun } : {}),
    queueLimit: pool.queueLimit,
    placement: pool.placement,
    ...(pool.security ? { security: pool.security } : {}),
    ...(pool.standby.length > 0 ? { standby: pool.standby } : {}),
    ...(pool.imageCache.prePull.length + pool.standby.length > 0
      ? { prePull: [...new Set([...pool.imageCache.prePull, ...pool.standby.map((s) => s.image)])] }
      : {}),
    ...(pool.aws
      ? {
          aws: {
            maxHosts: pool.aws.maxHosts,
            template: hostTemplates(pool)[0]!,
            timeScale: pool.aws.timeScale,
            pollSeconds: pool.aws.pollSeconds,
            minHosts: pool.aws.minHosts,
            headroomSlots: pool.aws.headroomSlots,
            keepWarmSeconds: pool.aws.keepWarmSeconds,
            park: pool.aws.park,
            billing: pool.aws.billing,
            refreshAfterJobs: pool.aws.refreshAfterJobs,
            rootVolumeReplacement: pool.aws.rootVolumeReplacement,
            schedules: pool.aws.schedules,
          },
        }
      : {}),
  };
}

/** Start options of a pool's workflow: one per pool, found by `MarinaPool` in the Web UI. */
export function poolStartOptions(
  config: LoadedConfig,
  pool: PoolConfig,
  /** Who starts it: recorded as the author of its first settings version. */
  by: string,
): WorkflowStartOptions<typeof poolWorkflow> & { workflowId: string; taskQueue: string } {
  return {
    workflowId: poolWorkflowId(pool.name),
    taskQueue: config.temporal.taskQueue,
    args: [
      {
        name: pool.name,
        settings: poolSettings(pool),
        settingsVersion: { version: 1, by, at: new Date().toISOString(), source: config.path },
      },
    ],
    typedSearchAttributes: [{ key: SA_POOL, value: pool.name }],
    staticSummary: pool.aws
      ? `Pool ${pool.name}: up to ${pool.aws.maxHosts} EC2 ${pool.aws.instanceType} host(s) in ${pool.aws.zones.join(', ')}`
      : `Pool ${pool.name}: ${pool.hosts.length} on-prem Mac host(s)`,
  };
}
