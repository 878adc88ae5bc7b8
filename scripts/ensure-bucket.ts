/**
 * Creates the S3 buckets a Marina config names (the image store's, and the logs' when it is another) unless this
 * account has them already: docker-compose's one-shot bucket step, with the very endpoint and credentials the
 * worker will use. A bucket someone else owns, or any other error, fails the step.
 *   node --import tsx scripts/ensure-bucket.ts     (reads MARINA_CONFIG, like the worker)
 */
import { CreateBucketCommand, HeadBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { loadConfig, logsLocation } from '../src/config/load';
import { s3ClientFor } from '../src/config/s3';

/** True if this account can use the bucket, false if there is none; anything else (403: another owner) throws. */
async function exists(s3: S3Client, bucket: string): Promise<boolean> {
  try {
    await s3.send(new HeadBucketCommand({ Bucket: bucket }));
    return true;
  } catch (e) {
    if ((e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false;
    throw e;
  }
}

async function main(): Promise<void> {
  const config = loadConfig();
  const done = new Set<string>();
  for (const loc of [config.imageStore, logsLocation(config)]) {
    const where = `${loc.endpoint ?? `AWS ${loc.region}`} bucket ${loc.bucket}`;
    if (done.has(where)) continue;
    done.add(where);
    const s3 = s3ClientFor(config, loc);
    try {
      // Asked first: AWS in us-east-1 (and moto) answer a CreateBucket for a bucket one owns with 200.
      if (await exists(s3, loc.bucket)) {
        console.log(`${where}: exists`);
        continue;
      }
      await s3.send(new CreateBucketCommand({ Bucket: loc.bucket }));
      console.log(`${where}: created`);
    } catch (e) {
      throw new Error(`${where}: ${(e as Error).name}: ${(e as Error).message}`, { cause: e });
    } finally {
      s3.destroy();
    }
  }
}

main().catch((e: unknown) => {
  console.error(`ensure-bucket: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
