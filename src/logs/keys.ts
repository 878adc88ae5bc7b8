/**
 * Where a job's log lives in S3: chunks while it runs (for streaming), one object at the end.
 * Each workflow run has its own directory, `<prefix><jobId>/<runId>/`: Temporal lets a job id be used
 * again once the first run's history is gone, and that must not overwrite the first run's log. Logs
 * written before that (no run id) stay at `<prefix><jobId>/`; a JobResult names its key either way.
 */
import type { S3Location } from '../config/schema';

/** A job's log: by job id and, from this layout on, its workflow run id. */
export interface LogRef {
  jobId: string;
  runId?: string;
}

const logDir = (loc: S3Location, ref: LogRef): string =>
  `${loc.prefix}${ref.jobId}/${ref.runId ? `${ref.runId}/` : ''}`;

export const logObjectKey = (loc: S3Location, ref: LogRef): string => `${logDir(loc, ref)}output.log`;
export const logChunkPrefix = (loc: S3Location, ref: LogRef): string => `${logDir(loc, ref)}chunks/`;
export const logChunkKey = (loc: S3Location, ref: LogRef, offset: number): string =>
  `${logChunkPrefix(loc, ref)}${String(offset).padStart(16, '0')}`;
export const offsetOfChunkKey = (key: string): number => Number(key.slice(key.lastIndexOf('/') + 1));
