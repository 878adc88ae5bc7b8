/**
 * A host's image cache: versions it holds, by digest, each a Tart VM (`marina-img-<hex>`) with an
 * index entry whose time is its last use. Pure: which to evict when the cache is over its budget.
 */
export interface CacheEntry {
  digest: string;
  vm: string;
  /** Bytes the VM takes on disk (allocated: a sparse disk counts only its data). */
  bytes: number;
  /** Last used (ms since the epoch): pulled, or cloned for a job. */
  usedAt: number;
}

/** A version used this recently may be about to be cloned by a job that found it cached: never evicted. */
export const RECENT_USE_MS = 30 * 60 * 1000;

/**
 * Least recently used first, until what stays fits `budgetBytes`. `keep` (the version just pulled)
 * and versions used in the last RECENT_USE_MS are never evicted, even if the cache stays over budget.
 */
export function planEviction(
  entries: readonly CacheEntry[],
  budgetBytes: number,
  keep: ReadonlySet<string>,
  now: number,
): CacheEntry[] {
  let total = entries.reduce((n, e) => n + e.bytes, 0);
  const evict: CacheEntry[] = [];
  for (const e of [...entries].sort((a, b) => a.usedAt - b.usedAt)) {
    if (total <= budgetBytes) break;
    if (keep.has(e.digest) || now - e.usedAt < RECENT_USE_MS) continue;
    evict.push(e);
    total -= e.bytes;
  }
  return evict;
}
