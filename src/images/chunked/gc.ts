/**
 * Garbage collection of the chunked store, decided without I/O. Mark: every chunk a kept
 * version references. Sweep: a pack none of whose chunks is marked, and old enough that no push
 * still in flight can be about to reference it. A push writes packs, then the version manifest,
 * then the tag, so a pack younger than the grace period may belong to a manifest not yet written.
 */
import type { VersionManifest } from './format';

export interface PackInfo {
  pack: string;
  /** Chunk hashes the pack holds (its index). */
  chunks: string[];
  /** When it was written (ms since the epoch). */
  writtenAt: number;
  bytes: number;
}

/** A push finishes well within this: packs younger are never swept. */
export const GC_GRACE_MS = 6 * 60 * 60 * 1000;

export interface GcPlan {
  deletePacks: string[];
  freedBytes: number;
  /** Packs kept only because they are young: swept by a later run if still unreferenced. */
  youngUnreferenced: string[];
}

export function planGc(
  kept: readonly VersionManifest[],
  packs: readonly PackInfo[],
  now: number,
  graceMs = GC_GRACE_MS,
): GcPlan {
  const marked = new Set<string>();
  for (const m of kept) for (const c of m.chunks) if (c) marked.add(c.hash);
  const plan: GcPlan = { deletePacks: [], freedBytes: 0, youngUnreferenced: [] };
  for (const p of packs) {
    if (p.chunks.some((h) => marked.has(h))) continue;
    if (now - p.writtenAt < graceMs) plan.youngUnreferenced.push(p.pack);
    else {
      plan.deletePacks.push(p.pack);
      plan.freedBytes += p.bytes;
    }
  }
  return plan;
}
