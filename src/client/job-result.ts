/**
 * A job whose script failed fails its workflow (workflows/job.ts) so that Temporal's views count it;
 * callers still get its JobResult, as before that change: it is carried in the failure's details.
 */
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { JOB_FAILED, JOB_TIMED_OUT, type JobResult } from '../../workflows/definitions';
import type { jobWorkflow } from '../../workflows/job';

/** The JobResult inside a job workflow's JobFailed/JobTimedOut failure; undefined for any other error. */
export function jobResultOfFailure(e: unknown): JobResult | undefined {
  if (!(e instanceof WorkflowFailedError)) return undefined;
  const cause = e.cause;
  if (!(cause instanceof ApplicationFailure)) return undefined;
  if (cause.type !== JOB_FAILED && cause.type !== JOB_TIMED_OUT) return undefined;
  return cause.details?.[0] as JobResult | undefined;
}

/** Resolves to the job's result whether its workflow completed or failed with the script's failure. */
export async function unwrapJobResult(result: Promise<JobResult>): Promise<JobResult> {
  try {
    return await result;
  } catch (e) {
    const r = jobResultOfFailure(e);
    if (r) return r;
    throw e;
  }
}

/** A job workflow handle whose result() is the JobResult for succeeded, failed and timed-out jobs alike. */
export function jobHandle<H extends WorkflowHandle<typeof jobWorkflow>>(handle: H): H {
  return { ...handle, result: () => unwrapJobResult(handle.result()) };
}
