/**
 * Where a session's stage scripts wait in S3 between `marina gitlab run` and the run activity: next to
 * the job's logs, under `<logs prefix><jobId>/scripts/`. A GitLab stage script carries the job's
 * variables (its CI_JOB_TOKEN among them), so it travels by reference and never enters a workflow's
 * history; the session deletes its scripts when it ends.
 */
import type { S3Location } from '../config/schema';

export const scriptPrefix = (loc: S3Location, jobId: string): string => `${loc.prefix}${jobId}/scripts/`;

/** One script version per stage: its hash in the name, so a stage sent again with other content gets its own object. */
export const scriptKey = (loc: S3Location, jobId: string, stage: string, sha256: string): string =>
  `${scriptPrefix(loc, jobId)}${stage}-${sha256.slice(0, 16)}.sh`;
