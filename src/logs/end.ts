/**
 * How a script ended, as metadata on its whole log object: a follower learns the end from the log
 * itself, without waiting for the job's cleanup (src/client/jobs.ts, followJobLog).
 */
export const LOG_EXIT_META = 'marina-exit-code';
export const LOG_TIMED_OUT_META = 'marina-timed-out';
