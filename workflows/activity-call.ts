/** How the job workflow (both modes) calls its activities: with a summary for the Web UI. */
import {
  patched,
  proxyActivities,
  proxyLocalActivities,
  type ActivityOptions,
  type LocalActivityOptions,
} from '@temporalio/workflow';
import type { Activities } from '../activities/types';

/** Errors no retry can fix: a retry would only repeat them. */
export const NON_RETRYABLE = [
  'InvalidJobSpec',
  'ImageNotFound',
  'HostKeyMismatch',
  'UnknownSecret',
  'UnknownHost',
  'ConfigError',
];

/** An activity bound to its options; each call names itself (the summary the Web UI shows). */
export function withOptions<K extends keyof Activities>(name: K, options: ActivityOptions) {
  return (summary: string, ...args: Parameters<Activities[K]>): Promise<Awaited<ReturnType<Activities[K]>>> => {
    const fn = proxyActivities<Activities>(options)[name] as unknown as {
      executeWithOptions(o: ActivityOptions, a: unknown[]): Promise<Awaited<ReturnType<Activities[K]>>>;
    };
    return fn.executeWithOptions({ ...options, summary }, args);
  };
}

/**
 * The same, run as a local activity: in the worker that runs the workflow task, with no trip through the
 * task queue and no history events of its own but a marker. For short reads only (a retry waits in the
 * workflow task; past a minute it becomes a timer).
 */
export function withLocalOptions<K extends keyof Activities>(name: K, options: LocalActivityOptions) {
  return (summary: string, ...args: Parameters<Activities[K]>): Promise<Awaited<ReturnType<Activities[K]>>> => {
    const fn = proxyLocalActivities<Activities>(options)[name] as unknown as {
      executeWithOptions(o: LocalActivityOptions, a: unknown[]): Promise<Awaited<ReturnType<Activities[K]>>>;
    };
    return fn.executeWithOptions({ ...options, summary }, args);
  };
}

/**
 * Options for a cleanup (destroyVm) that must go on until the VM is gone: no schedule-to-close timeout. With one
 * (2 h before), a worker outage longer than it turned a job whose script had succeeded into an error and left
 * the VM behind; without it, the attempt waits for a worker and the job ends as it would have (issue #22). A
 * host that left the pool ends the retries: destroyVm then fails `UnknownHost`, which is not retried.
 * And a heartbeat timeout (destroyVm heartbeats): an attempt whose worker was killed is tried again within
 * 10 s, not after its 5 min start-to-close (the chaos soak found jobs waiting those 5 minutes in cleanup).
 * Patch `cleanup-until-gone`: runs recorded before keep the options they scheduled with.
 */
export function untilGone(options: ActivityOptions): ActivityOptions {
  if (!patched('cleanup-until-gone')) return options;
  const { scheduleToCloseTimeout: _dropped, ...rest } = options;
  return { ...rest, heartbeatTimeout: CLEANUP_HEARTBEAT };
}

const CLEANUP_HEARTBEAT = '10s';
