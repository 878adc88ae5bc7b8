/** The streaming chunks of a job's log: once its full log object is stored they are only clutter. */
import { DeleteObjectsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';

/**
 * Deletes every chunk under `prefix`. Idempotent (a retry lists what is left); a follower that loses
 * a chunk it listed finishes from the full object, which holds the same bytes.
 */
export async function deleteLogChunks(s3: S3Client, bucket: string, prefix: string): Promise<number> {
  let deleted = 0;
  for (;;) {
    // Always the first page: what was deleted is gone, so the next page is the next first page.
    const out = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, MaxKeys: 1000 }));
    const keys = (out.Contents ?? []).map((o) => ({ Key: o.Key! }));
    if (keys.length === 0) return deleted;
    const res = await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }));
    const failed = res.Errors ?? [];
    if (failed.length > 0)
      throw new Error(`deleting log chunks under s3://${bucket}/${prefix}: ${failed[0]!.Key}: ${failed[0]!.Message}`);
    deleted += keys.length;
  }
}
