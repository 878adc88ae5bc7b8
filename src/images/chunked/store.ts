/**
 * The chunked store in S3 (docs/image-format.md): what it holds (pack indexes, versions, tags
 * with their history), presigned URLs for the helper's transfers (transfer.ts), and gc.
 * Runs where AWS credentials are (the worker, the CLI); hosts only ever get presigned URLs.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { S3Location } from '../../config/schema';
import { assertDigest, assertImageRef, formatImageRef } from '../../domain/image-ref';
import {
  MAX_PATCH_DEPTH,
  keys,
  manifestError,
  versionDigest,
  type ChunkLocation,
  type VersionManifest,
} from './format';
import {
  DEFAULT_RETENTION,
  blobEntry,
  planGc,
  retainedDigests,
  type GcPlan,
  type PackInfo,
  type Retention,
  type TagRecord,
} from './gc';

/** An S3 answer that the object is not there (GetObject's NoSuchKey, HeadObject's bare 404). */
export const isMissing = (e: unknown): boolean =>
  (e as { name?: string }).name === 'NoSuchKey' ||
  (e as { name?: string }).name === 'NotFound' ||
  (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404;

/** What a workflow carries about an image: no manifest (it can be megabytes), no URLs, no credentials. */
export interface ResolvedImage {
  ref: string;
  digest: string;
  /** Logical size of the disk, and how many bytes of it are data (not zero chunks). */
  size: number;
  dataBytes: number;
  /** The guest's SSH host key the version records; absent for images pushed without one. */
  vmHostKey?: string;
}

/** A manifest that does not match its digest or cannot be right: an integrity failure, not a missing image. */
export class ManifestIntegrityError extends Error {
  override name = 'ManifestIntegrityError';
}

/** A digest read back from the store (a tag file): malformed means the store is damaged, not that the caller erred. */
function storedDigest(digest: unknown, where: string): string {
  try {
    return assertDigest(digest, where);
  } catch (e) {
    throw new ManifestIntegrityError((e as Error).message);
  }
}

export interface PushResult {
  ref: string;
  digest: string;
  /** `patched`: uploaded as zstd patches against the base version's chunk at the same place. */
  chunks: { total: number; zero: number; reused: number; uploaded: number; patched: number };
  /** Compressed bytes uploaded in packs, and the disk's logical size. */
  bytesUploaded: number;
  size: number;
}

/** A fresh 128-bit pack id: packs are named at random, chunks inside them by hash. */
const newPackId = (): string => randomBytes(16).toString('hex');

interface TagFile {
  digest: string;
  /** What the tag named before, newest first (kept to 20). */
  history?: Array<{ digest: string; at: number }>;
}

interface PackIndex {
  pack: string;
  /** `base`: the hash of the chunk this one is a patch against (format.ts). */
  chunks: Array<{ hash: string; offset: number; length: number; base?: string }>;
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

  /**
   * Where each stored chunk lives, by hash (read from the pack indexes), leaving out condemned packs (gc.ts).
   * A patch comes with its chain of bases, and is left out when a base is (a patch cannot be read alone).
   */
  async storedChunks(): Promise<Map<string, ChunkLocation>> {
    const raw = new Map<string, PackIndex['chunks'][number] & { pack: string }>();
    const condemned = (await this.getJson<Record<string, number>>(this.condemnedKey())) ?? {};
    for (const o of (await this.list(`${this.prefix}v2/packs/`)).filter((x) => x.key.endsWith('.idx.json'))) {
      const idx = await this.getJson<PackIndex>(o.key);
      if (!idx || condemned[idx.pack] !== undefined) continue;
      // A whole copy beats a patch of the same chunk: nothing to fetch first.
      for (const c of idx.chunks)
        if (!raw.has(c.hash) || (raw.get(c.hash)!.base && !c.base)) raw.set(c.hash, { ...c, pack: idx.pack });
    }
    const stored = new Map<string, ChunkLocation>();
    const locate = (hash: string, depth: number): ChunkLocation | undefined => {
      const done = stored.get(hash);
      if (done) return done;
      const c = raw.get(hash);
      if (!c || depth > MAX_PATCH_DEPTH) return undefined;
      const loc: ChunkLocation = { hash, pack: c.pack, offset: c.offset, length: c.length };
      if (c.base) {
        const base = locate(c.base, depth + 1);
        if (!base) return undefined;
        loc.base = base;
      }
      stored.set(hash, loc);
      return loc;
    };
    for (const hash of raw.keys()) locate(hash, 0);
    return stored;
  }

  async resolve(ref: string): Promise<{ ref: string; digest: string; manifest: VersionManifest } | undefined> {
    const { name, tag } = assertImageRef(ref);
    const t = await this.getJson<{ digest: string }>(keys.tag(this.prefix, name, tag));
    if (!t) return undefined;
    const digest = storedDigest(t.digest, `tag ${name}:${tag}`);
    const manifest = await this.version(digest);
    if (!manifest) throw new Error(`tag ${name}:${tag} names version ${digest}, which is missing from the store`);
    return { ref: formatImageRef({ name, tag }), digest, manifest };
  }

  /**
   * A version's manifest, checked against its digest: a manifest that does not hash to the digest it
   * is stored under (damaged, or written by hand) would make a host write a disk nobody pushed.
   */
  async version(digest: string): Promise<VersionManifest | undefined> {
    const m = await this.getJson<VersionManifest>(keys.version(this.prefix, assertDigest(digest)));
    if (!m) return undefined;
    const error = manifestError(m);
    if (error) throw new ManifestIntegrityError(`version ${digest}: ${error}`);
    if (versionDigest(m) !== digest)
      throw new ManifestIntegrityError(
        `version ${digest}: its manifest hashes to ${versionDigest(m)}; the store is damaged`,
      );
    return m;
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

  /** Short-lived PUT URLs for `count` new packs: a host pushing a snapshot gets these, never credentials. */
  async presignPackPuts(count: number, expiresSeconds = 6 * 3600): Promise<Array<{ id: string; url: string }>> {
    const out: Array<{ id: string; url: string }> = [];
    for (let i = 0; i < count; i++) {
      const id = newPackId();
      const url = await getSignedUrl(
        this.s3,
        new PutObjectCommand({ Bucket: this.location.bucket, Key: keys.pack(this.prefix, id) }),
        { expiresIn: expiresSeconds },
      );
      out.push({ id, url });
    }
    return out;
  }

  /** Records what a stored pack holds: from then on pushes reuse its chunks. */
  writePackIndex(pack: string, chunks: PackIndex['chunks']): Promise<void> {
    const index: PackIndex = {
      pack,
      chunks: chunks.map(({ hash, offset, length, base }) => ({ hash, offset, length, ...(base ? { base } : {}) })),
    };
    return this.put(keys.packIndex(this.prefix, pack), JSON.stringify(index));
  }

  /** Stores a small content-addressed blob (a VM's config files); written again on every push, which is cheap. */
  async putBlob(body: Buffer): Promise<{ sha256: string; size: number }> {
    const sha256 = createHash('sha256').update(body).digest('hex');
    await this.put(keys.blob(this.prefix, sha256), body);
    return { sha256, size: body.length };
  }

  presignBlob(sha256: string, expiresSeconds = 6 * 3600): Promise<string> {
    return getSignedUrl(
      this.s3,
      new GetObjectCommand({ Bucket: this.location.bucket, Key: keys.blob(this.prefix, sha256) }),
      { expiresIn: expiresSeconds },
    );
  }

  /**
   * Writes a version (its packs must be stored) and then moves tag `ref` to it, remembering what
   * the tag named before (retention keeps those for a rollback). Returns the version's digest.
   */
  async publishVersion(ref: string, manifest: VersionManifest, now = Date.now()): Promise<string> {
    const error = manifestError(manifest);
    if (error) throw new Error(`refusing to publish ${ref}: ${error}`);
    const { name, tag } = assertImageRef(ref);
    const digest = versionDigest(manifest);
    await this.put(keys.version(this.prefix, digest), JSON.stringify(manifest));
    const before = await this.getJson<TagFile>(keys.tag(this.prefix, name, tag));
    const history = before
      ? [{ digest: before.digest, at: now }, ...(before.history ?? [])].filter((h) => h.digest !== digest).slice(0, 20)
      : [];
    await this.put(keys.tag(this.prefix, name, tag), JSON.stringify({ digest, history } satisfies TagFile));
    return digest;
  }

  async tags(): Promise<TagRecord[]> {
    const base = `${this.prefix}v2/tags/`;
    const out: TagRecord[] = [];
    for (const o of await this.list(base)) {
      const rest = o.key.slice(base.length).replace(/\.json$/, '');
      const slash = rest.lastIndexOf('/');
      const t = await this.getJson<TagFile>(o.key);
      if (t)
        out.push({
          ref: `${rest.slice(0, slash)}:${rest.slice(slash + 1)}`,
          digest: storedDigest(t.digest, o.key),
          history: (t.history ?? []).map((h) => ({ ...h, digest: storedDigest(h.digest, o.key) })),
        });
    }
    return out.sort((a, b) => a.ref.localeCompare(b.ref));
  }

  /** Points tag `to` at the version `from` names (history kept as on a push); nothing is copied. */
  async retag(from: string, to: string, now = Date.now()): Promise<string | undefined> {
    assertImageRef(to);
    const r = await this.resolve(from);
    return r && this.publishVersion(to, r.manifest, now);
  }

  async removeTag(ref: string): Promise<void> {
    const { name, tag } = assertImageRef(ref);
    await this.s3.send(
      new DeleteObjectCommand({ Bucket: this.location.bucket, Key: keys.tag(this.prefix, name, tag) }),
    );
  }

  /**
   * Condemns packs and blobs no retained version references (every tag's version and, by `retention`,
   * its recent earlier ones); deletes those condemned a grace period ago and still unreferenced (gc.ts).
   */
  async gc(now = Date.now(), graceMs?: number, retention: Retention = DEFAULT_RETENTION): Promise<GcPlan> {
    const condemned = (await this.getJson<Record<string, number>>(this.condemnedKey())) ?? {};
    // Packs and blobs are listed before versions: a push that finishes in between only adds references.
    const packs = await this.packs();
    for (const o of await this.list(`${this.prefix}v2/blobs/`))
      packs.push({
        pack: blobEntry(o.key.slice(o.key.lastIndexOf('/') + 1)),
        chunks: [],
        writtenAt: o.modified,
        bytes: o.size,
      });
    const kept: VersionManifest[] = [];
    for (const digest of retainedDigests(await this.tags(), retention, now)) {
      const m = await this.getJson<VersionManifest>(keys.version(this.prefix, digest));
      if (m) kept.push(m);
    }
    const plan = planGc(kept, packs, condemned, now, graceMs);
    await this.put(this.condemnedKey(), JSON.stringify(plan.condemned));
    for (const p of plan.deletePacks) {
      if (p.startsWith('blob:')) {
        await this.s3.send(
          new DeleteObjectCommand({ Bucket: this.location.bucket, Key: keys.blob(this.prefix, p.slice(5)) }),
        );
        continue;
      }
      await this.s3.send(
        new DeleteObjectCommand({ Bucket: this.location.bucket, Key: keys.packIndex(this.prefix, p) }),
      );
      await this.s3.send(new DeleteObjectCommand({ Bucket: this.location.bucket, Key: keys.pack(this.prefix, p) }));
    }
    return plan;
  }
}
