/**
 * Push and pull of chunked image versions, wherever the disk is: the store (with credentials)
 * decides and presigns, the helper (without) moves the bytes. The CLI runs the helper locally;
 * the worker's activities run the same code with the helper on a Mac host over SSH.
 */
import { assertDigest, assertImageRef } from '../../domain/image-ref';
import {
  FORMAT,
  FORMAT_PATCHED,
  MAX_PATCH_DEPTH,
  PACK_TARGET_BYTES,
  DEFAULT_CHUNK_SIZE,
  patchDepth,
  type ChunkEntry,
  type ChunkLocation,
  type VersionManifest,
} from './format';
import { closestVersion, planPull, planPush, type MergeOptions, type PullPlan } from './plan';
import { HelperError, type HelperEvent, type HelperRunner } from './helper';
import { inspectPlaces, verifiedVersions, type CachedDisk, type Candidate, type ManifestLookup } from './integrity';
import type { ChunkedStore, PushResult } from './store';

export interface PushOptions {
  chunkSize?: number;
  level?: number;
  /** The VM's small files (config, NVRAM) as a tar.gz: stored beside the disk, part of the version. */
  extras?: Buffer;
  /** The guest's SSH host key (src/images/vm-host-key.ts), recorded in the version. */
  vmHostKey?: string;
  /** Where the disk sits in the VM directory, if not `disk.img` at its top (a Parallels bundle). */
  diskPath?: string;
  onProgress?: (p: { stage: 'hash' | 'upload'; bytes: number; total: number }) => void;
  signal?: AbortSignal;
  /**
   * Versions on the runner's side (checked with the helper: only verified ones count): the one
   * closest to the disk is the base changed chunks are stored as patches against.
   */
  candidates?: readonly Candidate[];
  /** 0 or absent: no cap. */
  maxBytesPerSecond?: number;
}

/**
 * Pushes `disk` (a path where the runner's helper runs) as version `ref`: the helper hashes every
 * chunk, the store says which it lacks, the helper uploads exactly those (each once) into packs
 * through presigned PUTs. Each pack's index is written as soon as the pack is stored, so a push
 * that is killed and run again reuses what reached the store. Version next, tag last.
 */
export async function pushDisk(
  store: ChunkedStore,
  runner: HelperRunner,
  ref: string,
  disk: string,
  opts: PushOptions = {},
): Promise<PushResult> {
  // Before a byte moves: a bad name must not leave packs behind, let alone a tag.
  assertImageRef(ref);
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  let hashes: Array<string | null> = [];
  let size = 0;
  await runner.run(
    'hash',
    { disk, chunkSize },
    (e) => {
      if (e.event === 'progress')
        opts.onProgress?.({ stage: 'hash', bytes: e.hashedBytes as number, total: e.size as number });
      if (e.event === 'done') [hashes, size] = [e.hashes as Array<string | null>, e.size as number];
    },
    opts.signal,
  );
  const stored = await store.storedChunks();
  const missing = new Set(planPush(hashes, new Set(stored.keys())));
  const upload: number[] = [];
  const queued = new Set<string>();
  hashes.forEach((h, i) => {
    if (!h || !missing.has(h) || queued.has(h)) return;
    queued.add(h);
    upload.push(i);
  });
  // Compressed chunks never exceed their size by more than zstd's frame overhead: this many packs suffice.
  const packCount = Math.ceil((upload.length * (chunkSize + 1024)) / PACK_TARGET_BYTES) + 1;
  const packs = upload.length ? await store.presignPackPuts(packCount) : [];
  const located = new Map(stored);
  const base = upload.length ? await patchBases(store, runner, hashes, chunkSize, upload, stored, opts) : undefined;
  let bytesUploaded = 0;
  let patched = 0;
  const indexes: Array<Promise<void>> = [];
  if (upload.length) {
    await runner.run(
      'push',
      {
        disk,
        chunkSize,
        upload,
        packs,
        packTarget: PACK_TARGET_BYTES,
        level: opts.level ?? 3,
        maxBytesPerSecond: opts.maxBytesPerSecond ?? 0,
        ...(base ? { baseDisk: base.disk, bases: base.bases } : {}),
      },
      (e: HelperEvent) => {
        if (e.event === 'progress')
          opts.onProgress?.({
            stage: 'upload',
            bytes: e.readBytes as number,
            total: upload.length * chunkSize,
          });
        if (e.event !== 'pack') return;
        const pack = e.pack as string;
        const chunks = e.chunks as Array<{ hash: string; offset: number; length: number; base?: string }>;
        bytesUploaded += e.bytes as number;
        for (const c of chunks) {
          patched += c.base ? 1 : 0;
          located.set(c.hash, {
            hash: c.hash,
            pack,
            offset: c.offset,
            length: c.length,
            ...(c.base ? { base: stored.get(c.base)! } : {}),
          });
        }
        indexes.push(store.writePackIndex(pack, chunks));
      },
      opts.signal,
    );
  }
  await Promise.all(indexes);
  const chunks: ChunkEntry[] = hashes.map((h) => (h ? located.get(h)! : null));
  const extras = opts.extras ? await store.putBlob(opts.extras) : undefined;
  // The older format whenever it can hold the version: older readers keep reading it.
  const format = chunks.some((c) => c?.base) ? FORMAT_PATCHED : FORMAT;
  const manifest: VersionManifest = {
    format,
    chunkSize,
    size,
    chunks,
    ...(extras ? { extras } : {}),
    ...(opts.vmHostKey ? { vmHostKey: opts.vmHostKey } : {}),
    ...(opts.diskPath && opts.diskPath !== 'disk.img' ? { disk: opts.diskPath } : {}),
  };
  const digest = await store.publishVersion(ref, manifest);
  const zero = hashes.filter((h) => h === null).length;
  return {
    ref,
    digest,
    chunks: {
      total: hashes.length,
      zero,
      reused: hashes.length - zero - countFrom(hashes, missing),
      uploaded: upload.length,
      patched,
    },
    bytesUploaded,
    size,
  };
}

/**
 * What the chunks to upload may be patched against: the verified local version closest to the disk,
 * chunk for chunk at the same place, where that chunk is stored (not in a condemned pack) and its
 * chain of patches is short enough.
 */
async function patchBases(
  store: ChunkedStore,
  runner: HelperRunner,
  hashes: ReadonlyArray<string | null>,
  chunkSize: number,
  upload: readonly number[],
  stored: ReadonlyMap<string, ChunkLocation>,
  opts: PushOptions,
): Promise<{ disk: string; bases: Array<{ index: number; baseIndex: number; hash: string }> } | undefined> {
  if (!opts.candidates?.length) return undefined;
  const verified = await verifiedVersions((d) => store.version(d), runner, opts.candidates, opts.signal);
  const closest = closestVersion(hashes, chunkSize, new Map([...verified].map(([d, c]) => [d, c.manifest])));
  if (!closest) return undefined;
  const { manifest, disk } = verified.get(closest)!;
  const bases = upload.flatMap((index) => {
    const b = manifest.chunks[index];
    const at = b && stored.get(b.hash);
    return at && patchDepth(at) < MAX_PATCH_DEPTH ? [{ index, baseIndex: index, hash: b.hash }] : [];
  });
  return bases.length ? { disk, bases } : undefined;
}

/** Chunks whose bytes a push had to send (repeats of one new chunk counted at each place). */
const countFrom = (hashes: ReadonlyArray<string | null>, missing: ReadonlySet<string>) =>
  hashes.filter((h) => h !== null && missing.has(h)).length;

export type { CachedDisk, Candidate } from './integrity';

/** What the helper's `pull` command reads (helper/pull.go). */
/** Where a pull writes: `dir/disk`, renamed to `final` once whole (the helper holds a lock meanwhile). */
export interface PullTarget {
  dir: string;
  disk: string;
  final?: string;
}

export interface PullOrder extends PullTarget {
  /** The version's digest: the helper writes it into the completion marker once every chunk verified. */
  digest: string;
  size: number;
  chunkSize: number;
  copies: Array<{ index: number; from: string; fromIndex: number; hash: string; base?: true }>;
  selfCopies: Array<{ index: number; fromIndex: number; hash: string }>;
  patched: PullPlan['patched'];
  urls: Record<string, string>;
  ranges: PullPlan['fetch'];
  extras: { url: string; sha256: string } | null;
  concurrency: number;
  attempts: number;
  /** 0: no cap. */
  maxBytesPerSecond: number;
}

/**
 * Makes a pull plan concrete: kept chunks become copies from the seed's disk, local chunks copies
 * from wherever they are cached, and every pack fetched gets a presigned URL. Pure but for `urls`.
 */
export function pullOrder(
  target: { digest: string; manifest: VersionManifest },
  plan: PullPlan,
  cached: ReadonlyMap<string, CachedDisk>,
  where: PullTarget,
  urls: Record<string, string>,
  extras: PullOrder['extras'],
  opts: { concurrency?: number; attempts?: number; maxBytesPerSecond?: number } = {},
): PullOrder {
  const { manifest } = target;
  const moving = new Set([
    ...plan.local.map((l) => l.index),
    ...plan.fetch.flatMap((r) => r.chunks.map((c) => c.index)),
  ]);
  const copies: PullOrder['copies'] = [];
  if (plan.seed) {
    const from = cached.get(plan.seed)!.disk;
    manifest.chunks.forEach((c, index) => {
      if (c && !moving.has(index)) copies.push({ index, from, fromIndex: index, hash: c.hash });
    });
  }
  for (const l of plan.local)
    if (l.from !== 'self')
      copies.push({
        index: l.index,
        from: cached.get(l.from)!.disk,
        fromIndex: l.fromIndex,
        hash: l.hash,
        ...(l.base ? { base: true as const } : {}),
      });
  return {
    ...where,
    digest: target.digest,
    size: manifest.size,
    chunkSize: manifest.chunkSize,
    copies,
    selfCopies: plan.local
      .filter((l) => l.from === 'self')
      .map((l) => ({ index: l.index, fromIndex: l.fromIndex, hash: l.hash })),
    patched: plan.patched,
    urls,
    ranges: plan.fetch,
    extras,
    concurrency: opts.concurrency ?? 8,
    attempts: opts.attempts ?? 4,
    maxBytesPerSecond: opts.maxBytesPerSecond ?? 0,
  };
}

export interface PullStats {
  fetchedBytes: number;
  writtenBytes: number;
  copiedBytes: number;
  ranges: number;
  rangesTotal: number;
  retries: number;
  resumedChunks: number;
  seconds: number;
  alreadyComplete?: boolean;
}

/**
 * Pulls version `digest` into `where` on the runner's side, seeded from the closest verified
 * candidate. Nothing counts as there unless the helper verified it (integrity.ts): a verified target
 * is not pulled again, an interrupted pull of it resumes from its journal, anything else is
 * overwritten. The helper writes the completion marker last. A cached disk that fails a chunk's
 * hash while it seeds loses its marker, and the pull is planned again without it.
 */
export async function pullVersion(
  store: ChunkedStore,
  runner: HelperRunner,
  target: { digest: string; manifest: VersionManifest },
  candidates: readonly Candidate[],
  where: PullTarget,
  opts: {
    concurrency?: number;
    attempts?: number;
    maxBytesPerSecond?: number;
    merge?: MergeOptions;
    onPlan?: (plan: PullPlan) => void;
    onProgress?: (s: PullStats) => void;
    signal?: AbortSignal;
    /** Where manifests of cached versions come from: the store by default. */
    manifests?: ManifestLookup;
  } = {},
): Promise<{ plan: PullPlan; stats: PullStats }> {
  const digest = assertDigest(target.digest);
  for (let attempt = 1; ; attempt++) {
    const place = { digest, dir: where.final ?? where.dir, disk: where.disk };
    const [state] = await inspectPlaces(runner, [place], opts.signal);
    if (state === 'verified') return { plan: NOTHING_TO_DO, stats: ALREADY_COMPLETE };
    const others = candidates.filter((c) => c.digest !== digest);
    const cached = await verifiedVersions(opts.manifests ?? ((d) => store.version(d)), runner, others, opts.signal);
    const plan = planPull(target.manifest, new Map([...cached].map(([d, c]) => [d, c.manifest])), opts.merge);
    opts.onPlan?.(plan);
    const urls = await store.presignPacks(plan.fetch.map((f) => f.pack));
    const extras = target.manifest.extras
      ? { url: await store.presignBlob(target.manifest.extras.sha256), sha256: target.manifest.extras.sha256 }
      : null;
    const order = pullOrder({ digest, manifest: target.manifest }, plan, cached, where, urls, extras, opts);
    let stats: PullStats | undefined;
    let badSource = false;
    try {
      await runner.run(
        'pull',
        order,
        (e) => {
          if (e.event === 'progress') opts.onProgress?.(e as unknown as PullStats);
          if (e.event === 'done') stats = e as unknown as PullStats;
          if (e.event === 'badSource') badSource = true;
        },
        opts.signal,
      );
    } catch (e) {
      // The helper took the damaged seed's marker away: planned again, the pull copies nothing from it.
      if (badSource && e instanceof HelperError && attempt < 3) continue;
      throw e;
    }
    return { plan, stats: stats! };
  }
}

const NOTHING_TO_DO: PullPlan = { kept: 0, zero: [], local: [], patched: [], fetch: [], fetchBytes: 0 };

const ALREADY_COMPLETE: PullStats = {
  fetchedBytes: 0,
  writtenBytes: 0,
  copiedBytes: 0,
  ranges: 0,
  rangesTotal: 0,
  retries: 0,
  resumedChunks: 0,
  seconds: 0,
  alreadyComplete: true,
};
