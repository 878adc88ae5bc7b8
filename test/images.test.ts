/** The chunked image format's pure plans: digest, pull (seed, local copies, merged ranges), push, gc. */
import { describe, expect, it } from 'vitest';
import {
  FORMAT,
  manifestError,
  versionDigest,
  type ChunkEntry,
  type VersionManifest,
} from '../src/images/chunked/format';
import { DEFAULT_MERGE, planPull, planPush } from '../src/images/chunked/plan';
import { planGc, GC_GRACE_MS } from '../src/images/chunked/gc';

const MiB = 1024 * 1024;
const hash = (n: number) => n.toString(16).padStart(64, '0');

/** A version whose chunk i holds content ids[i] (0 = zero chunk), packed in order, 400 KiB each compressed. */
function version(ids: number[], pack = 'p1'): VersionManifest {
  let offset = 0;
  const chunks: ChunkEntry[] = ids.map((id) => {
    if (id === 0) return null;
    const c = { hash: hash(id), pack, offset, length: 400 * 1024 };
    offset += c.length;
    return c;
  });
  return { format: FORMAT, chunkSize: MiB, size: ids.length * MiB, chunks };
}

describe('chunked image format', () => {
  it('digests the chunk list: same content, same digest; one changed chunk, another', () => {
    expect(versionDigest(version([1, 2, 0, 3]))).toBe(versionDigest(version([1, 2, 0, 3], 'elsewhere')));
    expect(versionDigest(version([1, 2, 0, 3]))).not.toBe(versionDigest(version([1, 2, 0, 4])));
    expect(versionDigest(version([1, 0]))).not.toBe(versionDigest(version([1, 1])));
    expect(manifestError(version([1, 2]))).toBeUndefined();
    expect(manifestError({ ...version([1, 2]), size: 5 * MiB })).toMatch(/2 chunks cannot cover/);
    expect(manifestError({ ...version([1]), format: 'tart' as typeof FORMAT })).toMatch(/unknown format/);
  });

  it('plans a cold pull: every stored chunk once, neighbours merged into ranged GETs, zeros never fetched', () => {
    const v = version([1, 2, 3, 0, 0, 4, 1]); // chunk 1 appears twice
    const plan = planPull(v, new Map());
    expect(plan.seed).toBeUndefined();
    expect(plan.fetch).toHaveLength(1); // 4 distinct chunks, adjacent in one pack: one GET
    expect(plan.fetch[0]!.chunks.map((c) => c.index)).toEqual([0, 1, 2, 5]);
    expect(plan.fetchBytes).toBe(4 * 400 * 1024);
    expect(plan.local).toEqual([{ index: 6, from: 'self', fromIndex: 0 }]);
    expect(plan.zero).toEqual([]);
    // A GET never exceeds maxRange; a wide gap splits.
    const split = planPull(v, new Map(), { maxGap: 0, maxRange: 900 * 1024 });
    expect(split.fetch.map((r) => r.chunks.length)).toEqual([2, 2]);
    expect(Math.max(...split.fetch.map((r) => r.length))).toBeLessThanOrEqual(900 * 1024);
  });

  it('plans a delta pull from the closest cached version: only changed chunks move', () => {
    const ids = Array.from({ length: 100 }, (_, i) => (i % 10 === 9 ? 0 : i + 1));
    const old = version(ids, 'old');
    const changed = ids.map((id, i) => (i % 20 === 3 ? 1000 + i : id)); // 5 % changed in scattered places
    changed[9] = 7777; // a zero chunk gained data
    changed[0] = 0; // a data chunk became zero
    const next = version(changed, 'new');
    const unrelated = version(
      Array.from({ length: 100 }, (_, i) => 5000 + i),
      'other',
    );
    const plan = planPull(
      next,
      new Map([
        ['sha256:unrelated', unrelated],
        ['sha256:old', old],
      ]),
    );
    expect(plan.seed).toBe('sha256:old');
    const fetched = plan.fetch.flatMap((r) => r.chunks.map((c) => c.index)).sort((a, b) => a - b);
    expect(fetched).toEqual([3, 9, 23, 43, 63, 83]);
    expect(plan.zero).toEqual([0]);
    expect(plan.kept).toBe(100 - 6 - 1);
    expect(plan.fetchBytes).toBeLessThanOrEqual(fetched.length * 400 * 1024 + plan.fetch.length * DEFAULT_MERGE.maxGap);
  });

  it('copies a chunk another cached version holds instead of fetching it', () => {
    const a = version([1, 2, 3], 'a');
    const b = version([9, 8, 7], 'b');
    const plan = planPull(
      version([1, 8, 3], 'c'),
      new Map([
        ['sha256:a', a],
        ['sha256:b', b],
      ]),
    );
    expect(plan.seed).toBe('sha256:a');
    expect(plan.local).toEqual([{ index: 1, from: 'sha256:b', fromIndex: 1 }]);
    expect(plan.fetch).toEqual([]);
  });

  it('pushes only chunks the store lacks, each once', () => {
    expect(planPush([hash(1), null, hash(2), hash(1), hash(3)], new Set([hash(2)]))).toEqual([hash(1), hash(3)]);
  });

  it('gc condemns unreferenced packs first and deletes them only a grace period later, if still unreferenced', () => {
    const t0 = Date.UTC(2026, 10, 23);
    const old = t0 - 2 * GC_GRACE_MS;
    const packs = [
      { pack: 'p1', chunks: [hash(1), hash(2)], writtenAt: old, bytes: 10 },
      { pack: 'old', chunks: [hash(5)], writtenAt: old, bytes: 20 },
      { pack: 'young', chunks: [hash(7)], writtenAt: t0 - 60_000, bytes: 40 },
    ];
    // Run 1: 'old' is unreferenced: condemned, not deleted; the young pack of a push in flight is left alone.
    const run1 = planGc([version([1, 2], 'p1')], packs, {}, t0);
    expect(run1).toEqual({ deletePacks: [], freedBytes: 0, condemned: { old: t0 } });
    // Run 2 before the grace period: nothing deleted yet.
    expect(planGc([version([1, 2], 'p1')], packs, run1.condemned, t0 + 1000).deletePacks).toEqual([]);
    // A push that had chosen to reuse 'old' finished in between: its version references it, so it is spared.
    const reused = { ...version([5]), chunks: [{ hash: hash(5), pack: 'old', offset: 0, length: 1 }] };
    const later = t0 + GC_GRACE_MS;
    expect(planGc([version([1, 2], 'p1'), reused], packs, run1.condemned, later)).toEqual({
      deletePacks: [],
      freedBytes: 0,
      condemned: { young: later },
    });
    // Still unreferenced a grace period after it was condemned: deleted.
    expect(planGc([version([1, 2], 'p1')], packs, run1.condemned, later).deletePacks).toEqual(['old']);
  });
});
