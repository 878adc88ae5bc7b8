/** Session-mode activities (workflows/session.ts): tidying the stage scripts a session was sent. */
import { DeleteObjectsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { ApplicationFailure } from '@temporalio/common';
import type { ActivityContext } from './context';
import { checkJobId, invalidInput } from './inputs';
import { scriptPrefix } from '../src/logs/script-keys';
import type { ScriptRef } from '../src/domain/session';

/** Largest stage script taken (GitLab's generated scripts are tens of KB). */
const MAX_SCRIPT_BYTES = 4 * 1024 * 1024;

/**
 * Reads a step's script from where `marina gitlab run` stored it: only from the job's own script
 * prefix in the logs bucket, and only the exact bytes its hash names.
 */
export async function fetchStepScript(ctx: ActivityContext, jobId: string, ref: ScriptRef): Promise<string> {
  const loc = ctx.logsLocation;
  const prefix = scriptPrefix(loc, checkJobId(jobId));
  if (ref?.bucket !== loc.bucket)
    throw invalidInput('scriptRef.bucket', ref?.bucket, `the logs bucket, "${loc.bucket}"`);
  if (typeof ref.key !== 'string' || !ref.key.startsWith(prefix) || ref.key.includes('..'))
    throw invalidInput('scriptRef.key', ref.key, `a key under the job's script prefix "${prefix}"`);
  if (typeof ref.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(ref.sha256))
    throw invalidInput('scriptRef.sha256', ref.sha256, '64 lower-case hex digits');
  const out = await ctx.s3(loc).send(new GetObjectCommand({ Bucket: loc.bucket, Key: ref.key }));
  const body = Buffer.from(await out.Body!.transformToByteArray());
  if (body.length > MAX_SCRIPT_BYTES)
    throw invalidInput('scriptRef', `${body.length} bytes`, `a script of at most ${MAX_SCRIPT_BYTES} bytes`);
  if (createHash('sha256').update(body).digest('hex') !== ref.sha256)
    throw ApplicationFailure.create({
      message: `the script at s3://${loc.bucket}/${ref.key} does not match its sha256 ${ref.sha256}`,
      type: 'ScriptMismatch',
      nonRetryable: true,
    });
  return body.toString('utf8');
}

export function sessionActivities(ctx: ActivityContext) {
  return {
    /** Idempotent: deletes whatever stage scripts of the job are left. */
    async deleteSessionScripts(jobId: string): Promise<number> {
      const loc = ctx.logsLocation;
      const s3 = ctx.s3(loc);
      const prefix = scriptPrefix(loc, checkJobId(jobId));
      let deleted = 0;
      for (;;) {
        const list = await s3.send(new ListObjectsV2Command({ Bucket: loc.bucket, Prefix: prefix }));
        const keys = (list.Contents ?? []).map((o) => ({ Key: o.Key! }));
        if (keys.length === 0) return deleted;
        await s3.send(new DeleteObjectsCommand({ Bucket: loc.bucket, Delete: { Objects: keys } }));
        deleted += keys.length;
      }
    },
  };
}
