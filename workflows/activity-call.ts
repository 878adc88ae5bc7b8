/** How the job workflow (both modes) calls its activities: with a summary for the Web UI. */
import { proxyActivities, type ActivityOptions } from '@temporalio/workflow';
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
