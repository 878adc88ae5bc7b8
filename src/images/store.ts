/**
 * The basic image store: one archive blob per image version in S3, addressed by
 * its SHA-256, and a small manifest per `name:tag` written after the blob (so a
 * version appears whole or not at all). The chunked delta store replaces this
 * behind the same three calls: resolve, presignDownload, publish.
 */
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import {
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  NoSuchKey,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { parseImageRef, formatImageRef } from '../domain/job';
import type { S3Location } from '../config/schema';

export interface ImageManifest {
  schema: 1;
  name: string;
  tag: string;
  /** `sha256:<hex>` of the archive */
  digest: string;
  size: number;
  /** S3 key of the archive blob */
  blob: string;
  format: 'tart-archive+tgz';
  createdAt: string;
}

/** What the workflow carries about an image: no URLs, no credentials. */
export interface ResolvedImage {
  ref: string;
  digest: string;
  size: number;
  blob: string;
}

export const manifestKey = (loc: S3Location, name: string, tag: string): string =>
  `${loc.prefix}manifests/${name}/${tag}.json`;
export const blobKey = (loc: S3Location, digest: string): string => `${loc.prefix}blobs/sha256/${hexOf(digest)}`;
export const hexOf = (digest: string): string => digest.replace(/^sha256:/, '');

/** An S3 answer that the object is not there (GetObject's NoSuchKey, HeadObject's bare 404). */
export const isMissing = (e: unknown): boolean =>
  e instanceof NoSuchKey ||
  (e as { name?: string }).name === 'NoSuchKey' ||
  (e as { name?: string }).name === 'NotFound' ||
  (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404;

export class ImageStore {
  constructor(
    private readonly s3: S3Client,
    readonly location: S3Location,
  ) {}

  async resolve(ref: string): Promise<ResolvedImage | undefined> {
    const { name, tag } = parseImageRef(ref);
    try {
      const out = await this.s3.send(
        new GetObjectCommand({ Bucket: this.location.bucket, Key: manifestKey(this.location, name, tag) }),
      );
      const m = JSON.parse(await out.Body!.transformToString()) as ImageManifest;
      return { ref: formatImageRef({ name, tag }), digest: m.digest, size: m.size, blob: m.blob };
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
  }

  async list(): Promise<string[]> {
    const refs: string[] = [];
    let token: string | undefined;
    do {
      const out = await this.s3.send(
        new ListObjectsV2Command({
          Bucket: this.location.bucket,
          Prefix: `${this.location.prefix}manifests/`,
          ContinuationToken: token,
        }),
      );
      for (const o of out.Contents ?? []) {
        const rest = o.Key!.slice(`${this.location.prefix}manifests/`.length).replace(/\.json$/, '');
        const slash = rest.lastIndexOf('/');
        refs.push(`${rest.slice(0, slash)}:${rest.slice(slash + 1)}`);
      }
      token = out.NextContinuationToken;
    } while (token);
    return refs.sort();
  }

  /** A short-lived URL the host downloads with; AWS credentials never leave the worker. */
  presignDownload(image: ResolvedImage, expiresSeconds = 6 * 3600): Promise<string> {
    return getSignedUrl(this.s3, new GetObjectCommand({ Bucket: this.location.bucket, Key: image.blob }), {
      expiresIn: expiresSeconds,
    });
  }

  presignUpload(digest: string, expiresSeconds = 6 * 3600): Promise<string> {
    return getSignedUrl(
      this.s3,
      new PutObjectCommand({ Bucket: this.location.bucket, Key: blobKey(this.location, digest) }),
      { expiresIn: expiresSeconds },
    );
  }

  async hasBlob(digest: string): Promise<boolean> {
    try {
      await this.s3.send(new HeadObjectCommand({ Bucket: this.location.bucket, Key: blobKey(this.location, digest) }));
      return true;
    } catch (e) {
      if (isMissing(e)) return false;
      throw e;
    }
  }

  /** Writes the manifest; call only once the blob is in place. */
  async publish(ref: string, digest: string, size: number): Promise<ImageManifest> {
    const { name, tag } = parseImageRef(ref);
    const manifest: ImageManifest = {
      schema: 1,
      name,
      tag,
      digest,
      size,
      blob: blobKey(this.location, digest),
      format: 'tart-archive+tgz',
      createdAt: new Date().toISOString(),
    };
    await this.s3.send(
      new PutObjectCommand({
        Bucket: this.location.bucket,
        Key: manifestKey(this.location, name, tag),
        Body: JSON.stringify(manifest, null, 2),
        ContentType: 'application/json',
      }),
    );
    return manifest;
  }

  /** Uploads a local archive (used by `marina image push` and the dev seed). */
  async pushFile(ref: string, file: string): Promise<ImageManifest> {
    const digest = `sha256:${await sha256File(file)}`;
    const size = statSync(file).size;
    if (!(await this.hasBlob(digest))) {
      await this.s3.send(
        new PutObjectCommand({
          Bucket: this.location.bucket,
          Key: blobKey(this.location, digest),
          Body: createReadStream(file),
          ContentLength: size,
        }),
      );
    }
    return this.publish(ref, digest, size);
  }
}

export function sha256File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('data', (d) => h.update(d))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}
