/**
 * `marina run` is the job's owner while it waits: killed by SIGINT or SIGTERM (Ctrl-C, a CI runner
 * timing the step out), it cancels the job so the VM is not held until the job's own timeout.
 */
import { onStopSignals, SIGNAL_EXIT_CODES, type StopSignal } from './signals';

export interface JobCancelOnSignals {
  /** The signal that came, if one did. */
  readonly signal: StopSignal | undefined;
  /** The job exists now: cancel it on a signal (at once, if one came already). */
  attach(cancel: () => Promise<unknown>): void;
  dispose(): void;
}

/**
 * On the first signal the job is cancelled and the caller keeps waiting for the workflow to close
 * (its VM destroyed), at most `waitSeconds`, then the process exits with 130 or 143. A second
 * signal stops waiting at once.
 */
export function cancelJobOnSignals(jobId: string, waitSeconds: number): JobCancelOnSignals {
  let signal: StopSignal | undefined;
  let cancel: (() => Promise<unknown>) | undefined;
  const requestCancel = () =>
    cancel?.().catch((e: unknown) =>
      console.error(`marina: could not cancel job ${jobId}: ${(e as Error).message}; try: marina job cancel ${jobId}`),
    );
  const dispose = onStopSignals(
    (sig) => {
      signal = sig;
      console.error(
        `\nmarina: ${sig}: cancelling job ${jobId}; waiting up to ${waitSeconds} s for its VM to be cleaned up ` +
          `(${sig} again: stop waiting)`,
      );
      void requestCancel();
      setTimeout(() => {
        console.error(
          `marina: job ${jobId} did not confirm its cancellation within ${waitSeconds} s; ` +
            `it goes on cleaning up (see: marina job show ${jobId})`,
        );
        process.exit(SIGNAL_EXIT_CODES[sig]);
      }, waitSeconds * 1000).unref();
    },
    (sig) => {
      console.error(`marina: ${sig} again: not waiting; job ${jobId} goes on cleaning up (marina job show ${jobId})`);
      process.exit(SIGNAL_EXIT_CODES[sig]);
    },
  );
  return {
    get signal() {
      return signal;
    },
    attach(c) {
      cancel = c;
      if (signal) void requestCancel();
    },
    dispose,
  };
}
