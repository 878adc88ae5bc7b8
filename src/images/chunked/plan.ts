/**
 * What a pull moves and what a push uploads, decided without I/O: the host helper executes
 * these plans (ranged GETs, sparse writes) and the activity presigns what they name.
 */
import type { ChunkLocation, VersionManifest } from './format';

/** A ranged GET: one pack, one contiguous byte range holding one or more wanted chunks. */
export interface FetchRange {
  pack: string;
  offset: number;
  length: number;
  /** The chunks it carries: where each sits in the range, and where it goes in the disk. */
  chunks: Array<{ index: number; hash: string; at: number; length: number }>;
}

export interface PullPlan {
  /** The cached version to start from (its disk is cloned first), if any shares chunks. */
  seed?: string;
  /** Chunks the seed already holds at the same place: nothing to do. */
  kept: number;
  /** Chunks to make zero (holes punched where the seed had data). */
  zero: number[];
  /** Chunks present elsewhere in the seed or another cached version: copied locally. */
  local: Array<{ index: number; from: string; fromIndex: number }>;
  fetch: FetchRange[];
  /** Compressed bytes the fetch moves, gaps between merged chunks included. */
  fetchBytes: number;
}

export interface MergeOptions {
  /** Merge two chunks of a pack into one GET when at most this many unwanted bytes lie between them. */
  maxGap: number;
  /** Never build a GET larger than this (AWS: 8-16 MB ranges parallelize best). */
  maxRange: number;
}

export const DEFAULT_MERGE: MergeOptions = { maxGap: 64 * 1024, maxRange: 16 * 1024 * 1024 };

/**
 * Plans a pull of `target` onto a host whose cache holds `cached` (by digest). The seed is the
 * cached version sharing the most chunk positions; a chunk another cached version holds is
 * copied locally; only what no cached version holds is fetched, in merged ranges.
 */
export function planPull(
  target: VersionManifest,
  cached: ReadonlyMap<string, VersionManifest>,
  opts: MergeOptions = DEFAULT_MERGE,
): PullPlan {
  const comparable = [...cached].filter(([, m]) => m.chunkSize === target.chunkSize);
  let seed: string | undefined;
  let best = 0;
  for (const [digest, m] of comparable) {
    let same = 0;
    target.chunks.forEach((c, i) => {
      const s = m.chunks[i];
      if (c && s && s.hash === c.hash) same++;
    });
    if (same > best) [seed, best] = [digest, same];
  }
  const seedChunks = seed ? cached.get(seed)!.chunks : [];
  // Anywhere a cached disk holds a chunk's bytes, by hash.
  const anywhere = new Map<string, { from: string; fromIndex: number }>();
  for (const [digest, m] of comparable)
    m.chunks.forEach((c, i) => {
      if (c && !anywhere.has(c.hash)) anywhere.set(c.hash, { from: digest, fromIndex: i });
    });

  const plan: PullPlan = { ...(seed ? { seed } : {}), kept: 0, zero: [], local: [], fetch: [], fetchBytes: 0 };
  const wanted: Array<{ index: number; loc: ChunkLocation }> = [];
  target.chunks.forEach((c, i) => {
    const s = seedChunks[i];
    if (c === null) {
      if (s)
        plan.zero.push(i); // the seed had data here; a fresh disk is zero already
      else if (seed) plan.kept++;
      return;
    }
    if (s && s.hash === c.hash) return void plan.kept++;
    const there = anywhere.get(c.hash);
    if (there) return void plan.local.push({ index: i, ...there });
    wanted.push({ index: i, loc: c });
  });
  // A chunk repeated in the disk is fetched once; its other places copy it once it is written.
  const first = new Map<string, number>();
  for (const w of wanted) {
    if (first.has(w.loc.hash)) plan.local.push({ index: w.index, from: 'self', fromIndex: first.get(w.loc.hash)! });
    else first.set(w.loc.hash, w.index);
  }
  const unique = wanted.filter((w) => first.get(w.loc.hash) === w.index);
  plan.fetch = mergeRanges(unique, opts);
  plan.fetchBytes = plan.fetch.reduce((n, r) => n + r.length, 0);
  return plan;
}

/** Groups chunks by pack and merges neighbours into ranged GETs (small gaps read and thrown away). */
export function mergeRanges(wanted: Array<{ index: number; loc: ChunkLocation }>, opts: MergeOptions): FetchRange[] {
  const byPack = new Map<string, Array<{ index: number; loc: ChunkLocation }>>();
  for (const w of wanted) {
    let list = byPack.get(w.loc.pack);
    if (!list) byPack.set(w.loc.pack, (list = []));
    list.push(w);
  }
  const ranges: FetchRange[] = [];
  for (const [pack, list] of byPack) {
    list.sort((a, b) => a.loc.offset - b.loc.offset);
    let cur: FetchRange | undefined;
    for (const w of list) {
      const end = w.loc.offset + w.loc.length;
      if (cur && w.loc.offset - (cur.offset + cur.length) <= opts.maxGap && end - cur.offset <= opts.maxRange) {
        cur.chunks.push({ index: w.index, hash: w.loc.hash, at: w.loc.offset - cur.offset, length: w.loc.length });
        cur.length = Math.max(cur.length, end - cur.offset);
      } else {
        cur = {
          pack,
          offset: w.loc.offset,
          length: w.loc.length,
          chunks: [{ index: w.index, hash: w.loc.hash, at: 0, length: w.loc.length }],
        };
        ranges.push(cur);
      }
    }
  }
  return ranges;
}

/** Which chunk hashes of a new version the store lacks: a push uploads exactly these, each once. */
export function planPush(chunkHashes: ReadonlyArray<string | null>, stored: ReadonlySet<string>): string[] {
  const missing = new Set<string>();
  for (const h of chunkHashes) if (h !== null && !stored.has(h)) missing.add(h);
  return [...missing];
}
