/**
 * The chunked store in S3 (docs/image-format.md): push a raw disk as packs of zstd-compressed
 * chunks (only chunks the store lacks), resolve tags, presign pack URLs for a pull, and gc.
 * Runs where AWS credentials are (the worker, the CLI); hosts only ever get presigned URLs.
 */
import { createHash, randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { compress } from 'zstd-napi';
import type { S3Location } from '../../config/schema';
import { formatImageRef, parseImageRef } from '../../domain/job';
import { isMissing } from '../store';
import {
  DEFAULT_CHUNK_SIZE,
  FORMAT,
  PACK_TARGET_BYTES,
  keys,
  versionDigest,
  type ChunkEntry,
  type ChunkLocation,
  type VersionManifest,
} from './format';
import { planGc, type GcPlan, type PackInfo } from './gc';

export interface PushResult {
  ref: string;
  digest: string;
  chunks: { total: number; zero: number; reused: number; uploaded: number };
  /** Compressed bytes uploaded in packs, and the disk's logical size. */
  bytesUploaded: number;
  size: number;
}

interface PackIndex {
  pack: string;
  chunks: Array<{ hash: string; offset: number; length: number }>;
}

export class ChunkedStore {
  constructor(
    private readonly s3: S3Client,
    readonly location: S3Location,
  ) {}

  private get prefix(): string {
    return this.location.prefix;
  }

  private async getJson<T>(key: string): Promise<T | undefined> {
    try {
      const out = await this.s3.send(new GetObjectCommand({ Bucket: this.location.bucket, Key: key }));
      return JSON.parse(await out.Body!.transformToString()) as T;
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
  }

  private async put(key: string, body: Buffer | string): Promise<void> {
    await this.s3.send(new PutObjectCommand({ Bucket: this.location.bucket, Key: key, Body: body }));
  }

  private async list(prefix: string): Promise<Array<{ key: string; size: number; modified: number }>> {
    const found: Array<{ key: string; size: number; modified: number }> = [];
    let token: string | undefined;
    do {
      const out = await this.s3.send(
        new ListObjectsV2Command({ Bucket: this.location.bucket, Prefix: prefix, ContinuationToken: token }),
      );
      for (const o of out.Contents ?? [])
        found.push({ key: o.Key!, size: o.Size ?? 0, modified: o.LastModified?.getTime() ?? 0 });
      token = out.NextContinuationToken;
    } while (token);
    return found;
  }

  /** Every pack with its index: what the store holds. */
  async packs(): Promise<PackInfo[]> {
    const objects = await this.list(`${this.prefix}v2/packs/`);
    const sizes = new Map(objects.filter((o) => !o.key.endsWith('.idx.json')).map((o) => [o.key, o]));
    const infos: PackInfo[] = [];
    for (const o of objects.filter((x) => x.key.endsWith('.idx.json'))) {
      const idx = await this.getJson<PackIndex>(o.key);
      if (!idx) continue;
      const pack = sizes.get(keys.pack(this.prefix, idx.pack));
      infos.push({
        pack: idx.pack,
        chunks: idx.chunks.map((c) => c.hash),
        writtenAt: pack?.modified ?? o.modified,
        bytes: pack?.size ?? 0,
      });
    }
    // A pack whose index was never written (a push that died between the two) is garbage too.
    for (const [key, o] of sizes) {
      const pack = key.slice(key.lastIndexOf('/') + 1);
      if (!infos.some((p) => p.pack === pack)) infos.push({ pack, chunks: [], writtenAt: o.modified, bytes: o.size });
    }
    return infos;
  }

  private condemnedKey(): string {
    return `${this.prefix}v2/gc/condemned.json`;
  }

  /** Where each stored chunk lives, by hash (read from the pack indexes), leaving out condemned packs (gc.ts). */
  async storedChunks(): Promise<Map<string, ChunkLocation>> {
    const stored = new Map<string, ChunkLocation>();
    const condemned = (await this.getJson<Record<string, number>>(this.condemnedKey())) ?? {};
    for (const o of (await this.list(`${this.prefix}v2/packs/`)).filter((x) => x.key.endsWith('.idx.json'))) {
      const idx = await this.getJson<PackIndex>(o.key);
      if (idx && condemned[idx.pack] !== undefined) continue;
      for (const c of idx?.chunks ?? []) if (!stored.has(c.hash)) stored.set(c.hash, { ...c, pack: idx!.pack });
    }
    return stored;
  }

  async resolve(ref: string): Promise<{ ref: string; digest: string; manifest: VersionManifest } | undefined> {
    const { name, tag } = parseImageRef(ref);
    const t = await this.getJson<{ digest: string }>(keys.tag(this.prefix, name, tag));
    if (!t) return undefined;
    const manifest = await this.getJson<VersionManifest>(keys.version(this.prefix, t.digest));
    if (!manifest) throw new Error(`tag ${name}:${tag} names version ${t.digest}, which is missing from the store`);
    return { ref: formatImageRef({ name, tag }), digest: t.digest, manifest };
  }

  async version(digest: string): Promise<VersionManifest | undefined> {
    return this.getJson<VersionManifest>(keys.version(this.prefix, digest));
  }

  /** Short-lived GET URLs for the packs a pull plan names: all a host needs, no credentials. */
  async presignPacks(packs: Iterable<string>, expiresSeconds = 6 * 3600): Promise<Record<string, string>> {
    const urls: Record<string, string> = {};
    for (const p of new Set(packs)) {
      urls[p] = await getSignedUrl(
        this.s3,
        new GetObjectCommand({ Bucket: this.location.bucket, Key: keys.pack(this.prefix, p) }),
        { expiresIn: expiresSeconds },
      );
    }
    return urls;
  }

  /**
   * Pushes a raw disk as version `ref`: zero chunks recorded, chunks the store holds reused,
   * the rest compressed into packs. Packs and their indexes first, the version next, the tag
   * last: a reader sees the new version whole or not at all.
   */
  async push(
    ref: string,
    disk: string,
    opts: { chunkSize?: number; level?: number; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<PushResult> {
    const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
    const stored = await this.storedChunks();
    const fh = await open(disk, 'r');
    const size = (await fh.stat()).size;
    const total = Math.ceil(size / chunkSize);
    const zero = Buffer.alloc(chunkSize);
    const buf = Buffer.alloc(chunkSize);
    const entries: ChunkEntry[] = [];
    const result: PushResult = {
      ref,
      digest: '',
      chunks: { total, zero: 0, reused: 0, uploaded: 0 },
      bytesUploaded: 0,
      size,
    };
    let pack = {
      id: randomBytes(16).toString('hex'),
      parts: [] as Buffer[],
      bytes: 0,
      index: [] as PackIndex['chunks'],
    };
    const flush = async () => {
      if (pack.parts.length === 0) return;
      await this.put(keys.pack(this.prefix, pack.id), Buffer.concat(pack.parts));
      await this.put(keys.packIndex(this.prefix, pack.id), JSON.stringify({ pack: pack.id, chunks: pack.index }));
      result.bytesUploaded += pack.bytes;
      pack = { id: randomBytes(16).toString('hex'), parts: [], bytes: 0, index: [] };
    };
    try {
      for (let i = 0; i < total; i++) {
        const len = Math.min(chunkSize, size - i * chunkSize);
        const { bytesRead } = await fh.read(buf, 0, len, i * chunkSize);
        const data = buf.subarray(0, bytesRead);
        if (data.equals(zero.subarray(0, bytesRead))) {
          entries.push(null);
          result.chunks.zero++;
        } else {
          const hash = createHash('sha256').update(data).digest('hex');
          const have = stored.get(hash);
          if (have) {
            entries.push(have);
            result.chunks.reused++;
          } else {
            const z = compress(data, { compressionLevel: opts.level ?? 3 });
            const loc = { hash, pack: pack.id, offset: pack.bytes, length: z.length };
            pack.parts.push(z);
            pack.index.push({ hash, offset: loc.offset, length: loc.length });
            pack.bytes += z.length;
            stored.set(hash, loc);
            entries.push(loc);
            result.chunks.uploaded++;
            if (pack.bytes >= PACK_TARGET_BYTES) await flush();
          }
        }
        opts.onProgress?.(i + 1, total);
      }
      await flush();
    } finally {
      await fh.close();
    }
    const manifest: VersionManifest = { format: FORMAT, chunkSize, size, chunks: entries };
    const digest = versionDigest(manifest);
    await this.put(keys.version(this.prefix, digest), JSON.stringify(manifest));
    const { name, tag } = parseImageRef(ref);
    await this.put(keys.tag(this.prefix, name, tag), JSON.stringify({ digest }));
    result.digest = digest;
    return result;
  }

  async tags(): Promise<Array<{ ref: string; digest: string }>> {
    const base = `${this.prefix}v2/tags/`;
    const out: Array<{ ref: string; digest: string }> = [];
    for (const o of await this.list(base)) {
      const rest = o.key.slice(base.length).replace(/\.json$/, '');
      const slash = rest.lastIndexOf('/');
      const t = await this.getJson<{ digest: string }>(o.key);
      if (t) out.push({ ref: `${rest.slice(0, slash)}:${rest.slice(slash + 1)}`, digest: t.digest });
    }
    return out.sort((a, b) => a.ref.localeCompare(b.ref));
  }

  async removeTag(ref: string): Promise<void> {
    const { name, tag } = parseImageRef(ref);
    await this.s3.send(
      new DeleteObjectCommand({ Bucket: this.location.bucket, Key: keys.tag(this.prefix, name, tag) }),
    );
  }

  /** Condemns packs no tagged version references; deletes those condemned a grace period ago and still unreferenced (gc.ts). */
  async gc(now = Date.now(), graceMs?: number): Promise<GcPlan> {
    const condemned = (await this.getJson<Record<string, number>>(this.condemnedKey())) ?? {};
    // Packs are listed before versions: a push that finishes in between only adds references.
    const packs = await this.packs();
    const kept: VersionManifest[] = [];
    for (const t of await this.tags()) {
      const m = await this.getJson<VersionManifest>(keys.version(this.prefix, t.digest));
      if (m) kept.push(m);
    }
    const plan = planGc(kept, packs, condemned, now, graceMs);
    await this.put(this.condemnedKey(), JSON.stringify(plan.condemned));
    for (const p of plan.deletePacks) {
      await this.s3.send(
        new DeleteObjectCommand({ Bucket: this.location.bucket, Key: keys.packIndex(this.prefix, p) }),
      );
      await this.s3.send(new DeleteObjectCommand({ Bucket: this.location.bucket, Key: keys.pack(this.prefix, p) }));
    }
    return plan;
  }
}
