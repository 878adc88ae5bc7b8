/**
 * Executes a pull plan where the disk is (the host-side helper runs this): chunks the seed or
 * another cached version holds are copied locally, the rest fetched with merged ranged GETs
 * through presigned URLs (no credentials), many at once, each retried on its own; every chunk is
 * decompressed and its SHA-256 checked before it is written at its offset. Zero chunks are never
 * written, so the disk stays sparse. A journal of written chunks lets a killed pull resume
 * without fetching again what it already has.
 */
import { createHash } from 'node:crypto';
import { appendFile, open, readFile, rm, type FileHandle } from 'node:fs/promises';
import { decompress } from 'zstd-napi';
import type { VersionManifest } from './format';
import type { FetchRange, PullPlan } from './plan';

export interface PullInput {
  manifest: VersionManifest;
  plan: PullPlan;
  /** Presigned GET URL of each pack the plan fetches from. */
  urls: Readonly<Record<string, string>>;
  /** The disk to write; with `<out>.journal` beside it while the pull is unfinished. */
  out: string;
  /** Cached disks by digest (the plan's seed and local copies read them). */
  cached: Readonly<Record<string, string>>;
  concurrency?: number;
  /** Attempts per range before the pull fails. */
  attempts?: number;
  signal?: AbortSignal;
  /** For tests that damage bytes in transit; the global fetch otherwise. */
  fetch?: typeof fetch;
  onProgress?: (p: PullStats) => void;
}

export interface PullStats {
  /** Compressed bytes received, retries and gaps included. */
  fetchedBytes: number;
  ranges: number;
  /** Ranges fetched again after a failure or a hash mismatch. */
  retries: number;
  copiedBytes: number;
  /** Chunks already written by an earlier, interrupted pull. */
  resumedChunks: number;
}

export class ChunkHashMismatch extends Error {}

/** Local copies journalled this many at a time: a killed pull copies at most this many again. */
const JOURNAL_BATCH = 64;

export async function pullToFile(i: PullInput): Promise<PullStats> {
  const { manifest, plan } = i;
  const cs = manifest.chunkSize;
  const journal = `${i.out}.journal`;
  const done = new Set((await readFile(journal, 'utf8').catch(() => '')).split('\n').filter(Boolean).map(Number));
  const fresh = done.size === 0;
  const out = await open(i.out, fresh ? 'w+' : 'r+');
  const stats: PullStats = { fetchedBytes: 0, ranges: 0, retries: 0, copiedBytes: 0, resumedChunks: done.size };
  const opened = new Map<string, FileHandle>();
  const source = async (path: string) => {
    let fh = opened.get(path);
    if (!fh) opened.set(path, (fh = await open(path, 'r')));
    return fh;
  };
  const lengthOf = (index: number) => Math.min(cs, manifest.size - index * cs);
  const record = (indexes: number[]) => appendFile(journal, indexes.map((x) => `${x}\n`).join(''));
  try {
    if (fresh) await out.truncate(manifest.size); // holes everywhere: zero chunks are never written
    await appendFile(journal, '');

    // Kept chunks (same hash at the same place in the seed) and local copies: disk to disk.
    const copies: Array<{ index: number; path: string; fromIndex: number }> = [];
    const moving = new Set([
      ...plan.local.map((l) => l.index),
      ...plan.fetch.flatMap((r) => r.chunks.map((c) => c.index)),
    ]);
    if (plan.seed) {
      manifest.chunks.forEach((c, index) => {
        if (c && !moving.has(index)) copies.push({ index, path: i.cached[plan.seed!]!, fromIndex: index });
      });
    }
    for (const l of plan.local)
      if (l.from !== 'self') copies.push({ index: l.index, path: i.cached[l.from]!, fromIndex: l.fromIndex });
    const buf = Buffer.alloc(cs);
    let copied: number[] = [];
    for (const c of copies) {
      if (done.has(c.index)) continue;
      i.signal?.throwIfAborted();
      const len = lengthOf(c.index);
      const fh = await source(c.path);
      await fh.read(buf, 0, len, c.fromIndex * cs);
      await out.write(buf, 0, len, c.index * cs);
      stats.copiedBytes += len;
      copied.push(c.index);
      if (copied.length >= JOURNAL_BATCH) {
        await record(copied);
        copied = [];
      }
    }
    await record(copied);

    // Fetches: N lanes over the ranges, each range retried on its own.
    const queue = plan.fetch.filter((r) => r.chunks.some((c) => !done.has(c.index)));
    const attempts = i.attempts ?? 4;
    const get = i.fetch ?? fetch;
    const fetchRange = async (r: FetchRange): Promise<void> => {
      for (let attempt = 1; ; attempt++) {
        i.signal?.throwIfAborted();
        try {
          const res = await get(i.urls[r.pack]!, {
            headers: { Range: `bytes=${r.offset}-${r.offset + r.length - 1}` },
            ...(i.signal ? { signal: i.signal } : {}),
          });
          if (res.status !== 206 && res.status !== 200) throw new Error(`GET ${r.pack}: HTTP ${res.status}`);
          const body = Buffer.from(await res.arrayBuffer());
          stats.fetchedBytes += body.length;
          // A server that ignores Range sends the whole pack: cut our range out of it.
          const bytes = res.status === 200 ? body.subarray(r.offset, r.offset + r.length) : body;
          const written: number[] = [];
          for (const c of r.chunks) {
            if (done.has(c.index)) continue;
            const data = decompress(bytes.subarray(c.at, c.at + c.length));
            if (createHash('sha256').update(data).digest('hex') !== c.hash)
              throw new ChunkHashMismatch(
                `chunk ${c.index} from pack ${r.pack} does not match its hash ${c.hash.slice(0, 12)}…`,
              );
            await out.write(data, 0, data.length, c.index * cs);
            written.push(c.index);
          }
          await record(written);
          for (const x of written) done.add(x);
          stats.ranges++;
          i.onProgress?.(stats);
          return;
        } catch (e) {
          if (i.signal?.aborted || attempt >= attempts) throw e;
          stats.retries++;
          await new Promise((res) => setTimeout(res, 100 * 2 ** attempt));
        }
      }
    };
    let next = 0;
    const lane = async () => {
      while (next < queue.length) await fetchRange(queue[next++]!);
    };
    await Promise.all(Array.from({ length: Math.min(i.concurrency ?? 8, queue.length) }, lane));

    // A chunk repeated in the disk was fetched once; its other places copy it now.
    for (const l of plan.local.filter((x) => x.from === 'self')) {
      if (done.has(l.index)) continue;
      const len = lengthOf(l.index);
      await out.read(buf, 0, len, l.fromIndex * cs);
      await out.write(buf, 0, len, l.index * cs);
      stats.copiedBytes += len;
      await record([l.index]);
    }
    await out.sync();
  } finally {
    await out.close();
    for (const fh of opened.values()) await fh.close();
  }
  await rm(journal, { force: true }); // complete
  return stats;
}
