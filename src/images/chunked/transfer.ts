/**
 * Push and pull of chunked image versions, wherever the disk is: the store (with credentials)
 * decides and presigns, the helper (without) moves the bytes. The CLI runs the helper locally;
 * the worker's activities run the same code with the helper on a Mac host over SSH.
 */
import { FORMAT, PACK_TARGET_BYTES, DEFAULT_CHUNK_SIZE, type ChunkEntry, type VersionManifest } from './format';
import { DEFAULT_MERGE, planPull, planPush, type MergeOptions, type PullPlan } from './plan';
import type { HelperEvent, HelperRunner } from './helper';
import type { ChunkedStore, PushResult } from './store';

export interface PushOptions {
  chunkSize?: number;
  level?: number;
  /** The VM's small files (config, NVRAM) as a tar.gz: stored beside the disk, part of the version. */
  extras?: Buffer;
  /** The guest's SSH host key (src/images/vm-host-key.ts), recorded in the version. */
  vmHostKey?: string;
  onProgress?: (p: { stage: 'hash' | 'upload'; bytes: number; total: number }) => void;
  signal?: AbortSignal;
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
  let bytesUploaded = 0;
  const indexes: Array<Promise<void>> = [];
  if (upload.length) {
    await runner.run(
      'push',
      { disk, chunkSize, upload, packs, packTarget: PACK_TARGET_BYTES, level: opts.level ?? 3 },
      (e: HelperEvent) => {
        if (e.event === 'progress')
          opts.onProgress?.({
            stage: 'upload',
            bytes: e.readBytes as number,
            total: upload.length * chunkSize,
          });
        if (e.event !== 'pack') return;
        const pack = e.pack as string;
        const chunks = e.chunks as Array<{ hash: string; offset: number; length: number }>;
        bytesUploaded += e.bytes as number;
        for (const c of chunks) located.set(c.hash, { hash: c.hash, pack, offset: c.offset, length: c.length });
        indexes.push(store.writePackIndex(pack, chunks));
      },
      opts.signal,
    );
  }
  await Promise.all(indexes);
  const chunks: ChunkEntry[] = hashes.map((h) => (h ? located.get(h)! : null));
  const extras = opts.extras ? await store.putBlob(opts.extras) : undefined;
  const manifest: VersionManifest = {
    format: FORMAT,
    chunkSize,
    size,
    chunks,
    ...(extras ? { extras } : {}),
    ...(opts.vmHostKey ? { vmHostKey: opts.vmHostKey } : {}),
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
    },
    bytesUploaded,
    size,
  };
}

/** Chunks whose bytes a push had to send (repeats of one new chunk counted at each place). */
const countFrom = (hashes: ReadonlyArray<string | null>, missing: ReadonlySet<string>) =>
  hashes.filter((h) => h !== null && missing.has(h)).length;

/** A cached version on the host: its manifest and where its disk is. */
export interface CachedDisk {
  manifest: VersionManifest;
  disk: string;
}

/** What the helper's `pull` command reads (helper/pull.go). */
/** Where a pull writes: `dir/disk`, renamed to `final` once whole (the helper holds a lock meanwhile). */
export interface PullTarget {
  dir: string;
  disk: string;
  final?: string;
}

export interface PullOrder extends PullTarget {
  size: number;
  chunkSize: number;
  copies: Array<{ index: number; from: string; fromIndex: number }>;
  selfCopies: Array<{ index: number; fromIndex: number }>;
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
  target: VersionManifest,
  plan: PullPlan,
  cached: ReadonlyMap<string, CachedDisk>,
  where: PullTarget,
  urls: Record<string, string>,
  extras: PullOrder['extras'],
  opts: { concurrency?: number; attempts?: number; maxBytesPerSecond?: number } = {},
): PullOrder {
  const moving = new Set([
    ...plan.local.map((l) => l.index),
    ...plan.fetch.flatMap((r) => r.chunks.map((c) => c.index)),
  ]);
  const copies: PullOrder['copies'] = [];
  if (plan.seed) {
    const from = cached.get(plan.seed)!.disk;
    target.chunks.forEach((c, index) => {
      if (c && !moving.has(index)) copies.push({ index, from, fromIndex: index });
    });
  }
  for (const l of plan.local)
    if (l.from !== 'self') copies.push({ index: l.index, from: cached.get(l.from)!.disk, fromIndex: l.fromIndex });
  return {
    ...where,
    size: target.size,
    chunkSize: target.chunkSize,
    copies,
    selfCopies: plan.local.filter((l) => l.from === 'self').map((l) => ({ index: l.index, fromIndex: l.fromIndex })),
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
 * Pulls version `digest` into `dir` on the runner's side, seeded from the closest cached version.
 * The helper writes `<dir>/.complete` last; a killed pull resumes from its journal.
 */
export async function pullVersion(
  store: ChunkedStore,
  runner: HelperRunner,
  target: { digest: string; manifest: VersionManifest },
  cached: ReadonlyMap<string, CachedDisk>,
  where: PullTarget,
  opts: {
    concurrency?: number;
    attempts?: number;
    maxBytesPerSecond?: number;
    merge?: MergeOptions;
    onPlan?: (plan: PullPlan) => void;
    onProgress?: (s: PullStats) => void;
    signal?: AbortSignal;
  } = {},
): Promise<{ plan: PullPlan; stats: PullStats }> {
  const others = new Map([...cached].filter(([d]) => d !== target.digest).map(([d, c]) => [d, c.manifest]));
  const plan = planPull(target.manifest, others, opts.merge ?? DEFAULT_MERGE);
  opts.onPlan?.(plan);
  const urls = await store.presignPacks(plan.fetch.map((f) => f.pack));
  const extras = target.manifest.extras
    ? { url: await store.presignBlob(target.manifest.extras.sha256), sha256: target.manifest.extras.sha256 }
    : null;
  const order = pullOrder(target.manifest, plan, cached, where, urls, extras, opts);
  let stats: PullStats | undefined;
  await runner.run(
    'pull',
    order,
    (e) => {
      if (e.event === 'progress') opts.onProgress?.(e as unknown as PullStats);
      if (e.event === 'done') stats = e as unknown as PullStats;
    },
    opts.signal,
  );
  return { plan, stats: stats! };
}
