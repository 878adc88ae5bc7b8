/**
 * Checks that the S3 store a Marina config names does what Marina asks of it, with throwaway objects under
 * `<imageStore.prefix>marina-s3-check/`: PUT, GET, ranged GET, presigned PUT and ranged presigned GET (how the image
 * helper on the hosts moves packs), ListObjectsV2 across pages, multipart upload, DeleteObjects and DeleteObject.
 *   MARINA_CONFIG=deploy/marina.yaml node --import tsx scripts/check-s3.ts
 */
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { randomBytes } from 'node:crypto';
import { loadConfig } from '../src/config/load';
import { s3ClientFor } from '../src/config/s3';

type Check = [name: string, run: () => Promise<void>];

function same(what: string, got: Buffer, want: Buffer): void {
  if (!got.equals(want)) throw new Error(`${what}: got ${got.length} bytes that differ from the ${want.length} sent`);
}

async function get(s3: S3Client, Bucket: string, Key: string, Range?: string): Promise<Buffer> {
  const out = await s3.send(new GetObjectCommand({ Bucket, Key, Range }));
  return Buffer.from(await out.Body!.transformToByteArray());
}

async function list(s3: S3Client, Bucket: string, Prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const out = await s3.send(new ListObjectsV2Command({ Bucket, Prefix, MaxKeys: 2, ContinuationToken: token }));
    keys.push(...(out.Contents ?? []).map((o) => o.Key!));
    token = out.IsTruncated ? out.NextContinuationToken : undefined;
  } while (token);
  return keys.sort();
}

async function main(): Promise<void> {
  const config = loadConfig();
  const { bucket: Bucket, prefix } = config.imageStore;
  const dir = `${prefix}marina-s3-check/${Date.now().toString(36)}/`;
  const s3 = s3ClientFor(config, config.imageStore);
  const data = randomBytes(256 * 1024);
  const keys = ['a', 'b', 'c', 'd', 'e'].map((k) => dir + k);
  const checks: Check[] = [
    ['PutObject', async () => void (await s3.send(new PutObjectCommand({ Bucket, Key: keys[0], Body: data })))],
    ['GetObject', async () => same('GetObject', await get(s3, Bucket, keys[0]!), data)],
    [
      'GetObject with Range',
      async () => same('Range', await get(s3, Bucket, keys[0]!, 'bytes=1000-4999'), data.subarray(1000, 5000)),
    ],
    [
      'presigned PUT',
      async () => {
        const url = await getSignedUrl(s3, new PutObjectCommand({ Bucket, Key: keys[1] }), { expiresIn: 600 });
        const r = await fetch(url, { method: 'PUT', body: data });
        if (!r.ok) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
        same('presigned PUT, read back', await get(s3, Bucket, keys[1]!), data);
      },
    ],
    [
      'presigned GET with Range',
      async () => {
        const url = await getSignedUrl(s3, new GetObjectCommand({ Bucket, Key: keys[1] }), { expiresIn: 600 });
        const r = await fetch(url, { headers: { Range: 'bytes=4096-8191' } });
        if (r.status !== 206) throw new Error(`HTTP ${r.status} (want 206): ${await r.text()}`);
        same('presigned ranged GET', Buffer.from(await r.arrayBuffer()), data.subarray(4096, 8192));
      },
    ],
    [
      'multipart upload',
      async () => {
        const part1 = randomBytes(5 * 1024 * 1024); // the smallest part S3 allows but the last
        const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key: keys[2] }));
        const parts = [];
        for (const [i, Body] of [part1, data].entries()) {
          const { ETag } = await s3.send(
            new UploadPartCommand({ Bucket, Key: keys[2], UploadId, PartNumber: i + 1, Body }),
          );
          parts.push({ ETag, PartNumber: i + 1 });
        }
        await s3.send(
          new CompleteMultipartUploadCommand({ Bucket, Key: keys[2], UploadId, MultipartUpload: { Parts: parts } }),
        );
        same('multipart, read back', await get(s3, Bucket, keys[2]!), Buffer.concat([part1, data]));
      },
    ],
    [
      'ListObjectsV2, 2 keys a page',
      async () => {
        for (const Key of keys.slice(3)) await s3.send(new PutObjectCommand({ Bucket, Key, Body: 'x' }));
        const got = await list(s3, Bucket, dir);
        if (got.join() !== keys.join()) throw new Error(`listed ${got.join(', ')}; want ${keys.join(', ')}`);
      },
    ],
    [
      'DeleteObjects',
      async () => {
        const out = await s3.send(
          new DeleteObjectsCommand({ Bucket, Delete: { Objects: keys.slice(1).map((Key) => ({ Key })) } }),
        );
        if (out.Errors?.length) throw new Error(out.Errors.map((e) => `${e.Key}: ${e.Code}`).join('; '));
      },
    ],
    ['DeleteObject', async () => void (await s3.send(new DeleteObjectCommand({ Bucket, Key: keys[0] })))],
    [
      'nothing left',
      async () => {
        const left = await list(s3, Bucket, dir);
        if (left.length) throw new Error(`still listed: ${left.join(', ')}`);
      },
    ],
  ];
  let failed = 0;
  try {
    for (const [name, run] of checks) {
      try {
        await run();
        console.log(`ok    ${name}`);
      } catch (e) {
        failed++;
        console.log(`FAIL  ${name}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
      }
    }
  } finally {
    s3.destroy();
  }
  console.log(
    `${config.imageStore.endpoint ?? 'AWS'} bucket ${Bucket}: ${checks.length - failed}/${checks.length} checks passed`,
  );
  if (failed) process.exit(1);
}

main().catch((e: unknown) => {
  console.error(`check-s3: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
