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
  /**
   * The chunks it carries: where each sits in the range, and where it goes in the disk. `base`: a
   * patch's base, written at `index` before the patch applies; `patch`: a patch frame (pull.go).
   */
  chunks: Array<{ index: number; hash: string; at: number; length: number; base?: true; patch?: true }>;
}

/** A chunk stored as patches: its base is put at `index` (copied or fetched), then `steps` apply in order. */
export interface PatchedChunk {
  index: number;
  hash: string;
  /** Hash of the base put at `index` first. */
  base: string;
  steps: Array<{ hash: string; pack: string; offset: number }>;
}

export interface PullPlan {
  /** The cached version to start from (its disk is cloned first), if any shares chunks. */
  seed?: string;
  /** Chunks the seed already holds at the same place: nothing to do. */
  kept: number;
  /** Chunks to make zero (holes punched where the seed had data). */
  zero: number[];
  /** Chunks present elsewhere in the seed or another cached version: copied locally (`base`: a patch's base). */
  local: Array<{ index: number; from: string; fromIndex: number; hash: string; base?: true }>;
  patched: PatchedChunk[];
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
/** The version sharing the most chunks at the same places with `hashes` (null: a zero chunk), if any shares one. */
export function closestVersion(
  hashes: ReadonlyArray<string | null>,
  chunkSize: number,
  cached: ReadonlyMap<string, VersionManifest>,
): string | undefined {
  let closest: string | undefined;
  let best = 0;
  for (const [digest, m] of cached) {
    if (m.chunkSize !== chunkSize) continue;
    let same = 0;
    hashes.forEach((h, i) => {
      if (h !== null && m.chunks[i]?.hash === h) same++;
    });
    if (same > best) [closest, best] = [digest, same];
  }
  return closest;
}

export function planPull(
  target: VersionManifest,
  cached: ReadonlyMap<string, VersionManifest>,
  opts: MergeOptions = DEFAULT_MERGE,
): PullPlan {
  const comparable = [...cached].filter(([, m]) => m.chunkSize === target.chunkSize);
  const seed = closestVersion(
    target.chunks.map((c) => c?.hash ?? null),
    target.chunkSize,
    cached,
  );
  const seedChunks = seed ? cached.get(seed)!.chunks : [];
  // Anywhere a cached disk holds a chunk's bytes, by hash.
  const anywhere = new Map<string, { from: string; fromIndex: number }>();
  // The seed first: its chunk at the same place is the likeliest base of a patch there.
  for (const [digest, m] of [...comparable].sort(([a], [b]) => Number(b === seed) - Number(a === seed)))
    m.chunks.forEach((c, i) => {
      if (c && !anywhere.has(c.hash)) anywhere.set(c.hash, { from: digest, fromIndex: i });
    });

  const plan: PullPlan = {
    ...(seed ? { seed } : {}),
    kept: 0,
    zero: [],
    local: [],
    patched: [],
    fetch: [],
    fetchBytes: 0,
  };
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
    if (there) return void plan.local.push({ index: i, ...there, hash: c.hash });
    wanted.push({ index: i, loc: c });
  });
  // A chunk repeated in the disk is fetched once; its other places copy it once it is written.
  const first = new Map<string, number>();
  for (const w of wanted) {
    if (first.has(w.loc.hash))
      plan.local.push({ index: w.index, from: 'self', fromIndex: first.get(w.loc.hash)!, hash: w.loc.hash });
    else first.set(w.loc.hash, w.index);
  }
  const fetches: Fetch[] = [];
  for (const w of wanted.filter((x) => first.get(x.loc.hash) === x.index)) {
    if (!w.loc.base) {
      fetches.push(w);
      continue;
    }
    // A patch: start from the nearest link of its chain held locally, else from the chain's whole chunk.
    const chain: ChunkLocation[] = [];
    for (let l: ChunkLocation | undefined = w.loc; l; l = l.base) chain.push(l);
    let k = chain.findIndex((l, n) => n > 0 && anywhere.has(l.hash));
    if (k >= 0) plan.local.push({ index: w.index, ...anywhere.get(chain[k]!.hash)!, hash: chain[k]!.hash, base: true });
    else {
      k = chain.length - 1;
      fetches.push({ index: w.index, loc: chain[k]!, base: true });
    }
    const steps = chain.slice(0, k).reverse();
    for (const s of steps) fetches.push({ index: w.index, loc: s, patch: true });
    plan.patched.push({
      index: w.index,
      hash: w.loc.hash,
      base: chain[k]!.hash,
      steps: steps.map((s) => ({ hash: s.hash, pack: s.pack, offset: s.offset })),
    });
  }
  plan.fetch = mergeRanges(fetches, opts);
  plan.fetchBytes = plan.fetch.reduce((n, r) => n + r.length, 0);
  return plan;
}

/** A stored frame to fetch for disk chunk `index`: the chunk, a patch's base, or a patch. */
interface Fetch {
  index: number;
  loc: ChunkLocation;
  base?: true;
  patch?: true;
}

const flags = (w: Fetch) => ({
  ...(w.base ? { base: true as const } : {}),
  ...(w.patch ? { patch: true as const } : {}),
});

/** Groups chunks by pack and merges neighbours into ranged GETs (small gaps read and thrown away). */
export function mergeRanges(wanted: Fetch[], opts: MergeOptions): FetchRange[] {
  const byPack = new Map<string, Fetch[]>();
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
        cur.chunks.push({
          index: w.index,
          hash: w.loc.hash,
          at: w.loc.offset - cur.offset,
          length: w.loc.length,
          ...flags(w),
        });
        cur.length = Math.max(cur.length, end - cur.offset);
      } else {
        cur = {
          pack,
          offset: w.loc.offset,
          length: w.loc.length,
          chunks: [{ index: w.index, hash: w.loc.hash, at: 0, length: w.loc.length, ...flags(w) }],
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
