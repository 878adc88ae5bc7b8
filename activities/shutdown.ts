/**
 * A worker shutting down is not a job being cancelled. The SDK tells activities both through the
 * same cancellation signal; only the reason differs. On a shutdown the job goes on: an activity
 * leaves its work where it is (a script runs on in its VM, a pull or push resumes from what it
 * stored) and fails its attempt retryably, so another worker's attempt carries on from there.
 */
import type { Context } from '@temporalio/activity';
import { ApplicationFailure, ApplicationFailureCategory, CancelledFailure } from '@temporalio/common';

/** True once the worker running this activity is shutting down and its grace time is over. */
export function isWorkerShutdown(actx: Context): boolean {
  if (!actx.cancellationSignal.aborted) return false;
  // The worker cancels with the reason 'WORKER_SHUTDOWN' (worker.js: Core's reason, or none after a Lang-side shutdown).
  const reason: unknown = actx.cancellationSignal.reason;
  return (
    actx.cancellationDetails?.workerShutdown === true ||
    (reason instanceof CancelledFailure && reason.message === 'WORKER_SHUTDOWN')
  );
}

/** Retryable and benign: not a fault of the job, and the next attempt picks the work up. */
export function workerShutdownFailure(what: string): ApplicationFailure {
  return ApplicationFailure.create({
    message: `worker shutting down: ${what}`,
    type: 'WorkerShutdown',
    nonRetryable: false,
    category: ApplicationFailureCategory.BENIGN,
  });
}
