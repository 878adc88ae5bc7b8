/** How the job workflow (both modes) calls its activities: with a summary for the Web UI. */
import {
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
