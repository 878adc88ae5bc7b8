/** Where a job's log lives in S3: chunks while it runs (for streaming), one object at the end. */
import type { S3Location } from '../config/schema';

export const logObjectKey = (loc: S3Location, jobId: string): string => `${loc.prefix}${jobId}/output.log`;
export const logChunkPrefix = (loc: S3Location, jobId: string): string => `${loc.prefix}${jobId}/chunks/`;
export const logChunkKey = (loc: S3Location, jobId: string, offset: number): string =>
  `${logChunkPrefix(loc, jobId)}${String(offset).padStart(16, '0')}`;
export const offsetOfChunkKey = (key: string): number => Number(key.slice(key.lastIndexOf('/') + 1));
