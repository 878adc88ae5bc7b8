/**
 * Garbage collection of the chunked store, decided without I/O, in two phases so that a push
 * running at the same time loses nothing:
 *
 * - a pack no kept version references is first *condemned* (recorded with the time), never
 *   deleted on sight: a push in flight may have chosen to reuse its chunks before the gc looked,
 *   and its version manifest is not written yet;
 * - a later run deletes a condemned pack only if it is still unreferenced a grace period after it
 *   was condemned. Pushes do not reuse chunks of condemned packs, and finish well within the grace
 *   period, so by then any push that reused them has written its version, which the run sees.
 *
 * Packs younger than the grace period are never condemned (a push writes its packs before its
 * version manifest).
 */
import type { VersionManifest } from './format';

/** A VM-files blob goes through the same two phases as a pack, under this name. */
export const blobEntry = (sha256: string): string => `blob:${sha256}`;

export interface PackInfo {
  /** The pack's id, or blobEntry(sha256) for a VM-files blob. */
  pack: string;
  /** Chunk hashes the pack holds (its index). */
  chunks: string[];
  /** When it was written (ms since the epoch). */
  writtenAt: number;
  bytes: number;
}

/** A push finishes well within this. */
export const GC_GRACE_MS = 6 * 60 * 60 * 1000;

export interface GcPlan {
  deletePacks: string[];
  freedBytes: number;
  /** Packs condemned after this run (pack -> when condemned): the next run's input. */
  condemned: Record<string, number>;
}

export function planGc(
  kept: readonly VersionManifest[],
  packs: readonly PackInfo[],
  condemned: Readonly<Record<string, number>>,
  now: number,
  graceMs = GC_GRACE_MS,
): GcPlan {
  const marked = new Set<string>();
  for (const m of kept) {
    // A patch is useless without its base: the packs of the whole chain are kept.
    for (const c of m.chunks) for (let l = c ?? undefined; l; l = l.base) marked.add(l.pack);
    if (m.extras) marked.add(blobEntry(m.extras.sha256));
  }
  const plan: GcPlan = { deletePacks: [], freedBytes: 0, condemned: {} };
  for (const p of packs) {
    if (marked.has(p.pack) || now - p.writtenAt < graceMs) continue;
    const since = condemned[p.pack];
    if (since !== undefined && now - since >= graceMs) {
      plan.deletePacks.push(p.pack);
      plan.freedBytes += p.bytes;
    } else plan.condemned[p.pack] = since ?? now;
  }
  return plan;
}

/** A tag, its current version and the versions it named before (newest first). */
export interface TagRecord {
  ref: string;
  digest: string;
  history: Array<{ digest: string; at: number }>;
}

/** How many earlier versions of each tag gc keeps, and for how long, so a bad push can be rolled back. */
export interface Retention {
  keepPrevious: number;
  keepDays: number;
}

export const DEFAULT_RETENTION: Retention = { keepPrevious: 2, keepDays: 30 };

/** The versions gc must keep: every tag's current one, and its last `keepPrevious` younger than `keepDays`. */
export function retainedDigests(tags: readonly TagRecord[], rule: Retention, now: number): Set<string> {
  const keep = new Set<string>();
  for (const t of tags) {
    keep.add(t.digest);
    t.history
      .slice(0, rule.keepPrevious)
      .filter((h) => now - h.at <= rule.keepDays * 86_400_000)
      .forEach((h) => keep.add(h.digest));
  }
  return keep;
}
