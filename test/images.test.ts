/** The chunked image format's pure plans: digest, pull (seed, local copies, merged ranges), push, gc. */
import { describe, expect, it } from 'vitest';
import { assertDigest, assertImageRef } from '../src/domain/image-ref';
import { validateJobSpec } from '../src/domain/job';
import {
  FORMAT,
  FORMAT_PATCHED,
  keys,
  manifestError,
  versionDigest,
  type ChunkEntry,
  type VersionManifest,
} from '../src/images/chunked/format';
import { DEFAULT_MERGE, planPull, planPush } from '../src/images/chunked/plan';
import { planGc, GC_GRACE_MS, blobEntry, retainedDigests } from '../src/images/chunked/gc';
import { pullOrder } from '../src/images/chunked/transfer';
import { planEviction, RECENT_USE_MS } from '../src/images/cache';
import { prePullsDue, PREPULL_RECHECK_MS } from '../src/policy/prepull';
import type { HostState } from '../src/domain/pool';

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
    expect(plan.local).toEqual([{ index: 6, from: 'self', fromIndex: 0, hash: hash(1) }]);
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
    expect(plan.local).toEqual([{ index: 1, from: 'sha256:b', fromIndex: 1, hash: hash(8) }]);
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

describe('pull orders, host cache and pre-pull (pure)', () => {
  it('turns a plan into helper work: kept chunks copied from the seed, others from where they are cached, a URL per pack', () => {
    const seed = version([1, 2, 3, 0]);
    const other = version([9, 0, 0, 0], 'p2');
    const target = version([1, 5, 9, 5], 'p3');
    const cached = new Map([
      ['sha256:seed', { manifest: seed, disk: '/vms/seed/disk.img' }],
      ['sha256:other', { manifest: other, disk: '/vms/other/disk.img' }],
    ]);
    const plan = planPull(target, new Map([...cached].map(([d, c]) => [d, c.manifest])));
    const order = pullOrder(
      { digest: `sha256:${hash(77)}`, manifest: target },
      plan,
      cached,
      { dir: '/p', disk: 'disk.img', final: '/vms/new' },
      { p3: 'https://u' },
      null,
    );
    expect(order.copies).toEqual([
      { index: 0, from: '/vms/seed/disk.img', fromIndex: 0, hash: hash(1) },
      { index: 2, from: '/vms/other/disk.img', fromIndex: 0, hash: hash(9) },
    ]);
    expect(order.ranges.flatMap((r) => r.chunks.map((c) => c.index))).toEqual([1]);
    expect(order.selfCopies).toEqual([{ index: 3, fromIndex: 1, hash: hash(5) }]);
    expect(order).toMatchObject({
      digest: `sha256:${hash(77)}`,
      size: 4 * MiB,
      chunkSize: MiB,
      urls: { p3: 'https://u' },
      final: '/vms/new',
    });
  });

  it('evicts least recently used versions until the cache fits its budget, never the one just pulled or one in use', () => {
    const now = 10 * RECENT_USE_MS;
    const e = (digest: string, gib: number, usedAgo: number) => ({
      digest,
      vm: digest,
      bytes: gib * 2 ** 30,
      usedAt: now - usedAgo,
    });
    const entries = [
      e('old', 40, 9 * RECENT_USE_MS),
      e('older', 40, 10 * RECENT_USE_MS),
      e('busy', 40, 1000),
      e('new', 40, 0),
    ];
    expect(planEviction(entries, 100 * 2 ** 30, new Set(['new']), now).map((x) => x.digest)).toEqual(['older', 'old']);
    expect(planEviction(entries, 200 * 2 ** 30, new Set(['new']), now)).toEqual([]);
    // Over budget with nothing evictable: it stays over rather than delete what a job is about to clone.
    expect(planEviction(entries, 10 * 2 ** 30, new Set(['new']), now).map((x) => x.digest)).toEqual(['older', 'old']);
  });

  it('keeps each tag and its recent earlier versions through gc (retention), and the VM-files blobs they name', () => {
    const day = 86_400_000;
    const now = 100 * day;
    const tags = [
      {
        ref: 'a:1',
        digest: 'A3',
        history: [
          { digest: 'A2', at: now - day },
          { digest: 'A1', at: now - 2 * day },
          { digest: 'A0', at: now - 3 * day },
        ],
      },
      { ref: 'b:1', digest: 'B1', history: [{ digest: 'B0', at: now - 40 * day }] },
    ];
    expect([...retainedDigests(tags, { keepPrevious: 2, keepDays: 30 }, now)].sort()).toEqual(['A1', 'A2', 'A3', 'B1']);
    expect([...retainedDigests(tags, { keepPrevious: 0, keepDays: 30 }, now)].sort()).toEqual(['A3', 'B1']);
    const withBlob = { ...version([1]), extras: { sha256: hash(77), size: 10 } };
    const blobs = [
      { pack: blobEntry(hash(77)), chunks: [], writtenAt: 0, bytes: 10 },
      { pack: blobEntry(hash(78)), chunks: [], writtenAt: 0, bytes: 10 },
    ];
    const plan = planGc([withBlob], blobs, {}, 2 * GC_GRACE_MS);
    expect(Object.keys(plan.condemned)).toEqual([blobEntry(hash(78))]);
  });

  it('pre-pulls onto idle, healthy, schedulable hosts, one image at a time, again when evicted or due for a recheck', () => {
    const host = (name: string, over: Partial<HostState> = {}): HostState => ({
      name,
      resources: { vm: 2 },
      labels: {},
      consecutiveHealthFailures: 0,
      images: [],
      ...over,
    });
    const hosts = [
      host('idle'),
      host('busy'),
      host('down', { consecutiveHealthFailures: 2 }),
      host('cordoned', { cordoned: 'operator' }),
      host('unchecked', { images: undefined }),
    ];
    const leases = [{ leaseId: 'l', jobWorkflowId: 'j', host: 'busy', resources: { vm: 1 }, grantedAt: 0 }] as never[];
    const now = 10 * PREPULL_RECHECK_MS;
    expect(prePullsDue(hosts, leases, ['a:1', 'b:1'], {}, now)).toEqual([{ host: 'idle', image: 'a:1' }]);
    // a:1 running: nothing else starts on that host.
    expect(prePullsDue(hosts, leases, ['a:1', 'b:1'], { 'idle|a:1': { at: now, running: true } }, now)).toEqual([]);
    // a:1 landed: b:1 next; once both landed, nothing until evicted or the recheck is due.
    const landed = {
      'idle|a:1': { at: now, cacheName: 'marina-img-a' },
      'idle|b:1': { at: now, cacheName: 'marina-img-b' },
    };
    const idleWithBoth = [host('idle', { images: ['marina-img-a', 'marina-img-b'] })];
    expect(prePullsDue(idleWithBoth, [], ['a:1', 'b:1'], { 'idle|a:1': landed['idle|a:1'] }, now)).toEqual([
      { host: 'idle', image: 'b:1' },
    ]);
    expect(prePullsDue(idleWithBoth, [], ['a:1', 'b:1'], landed, now)).toEqual([]);
    expect(prePullsDue([host('idle', { images: ['marina-img-b'] })], [], ['a:1', 'b:1'], landed, now)).toEqual([
      { host: 'idle', image: 'a:1' },
    ]);
    expect(prePullsDue(idleWithBoth, [], ['a:1', 'b:1'], landed, now + PREPULL_RECHECK_MS)).toEqual([
      { host: 'idle', image: 'a:1' },
    ]);
  });
});

describe('image names, digests and patched chunks (pure)', () => {
  it('refuses dot segments, empty segments, upper case and malformed digests, naming the fix', () => {
    for (const bad of ['test/../../escape:1', 'test/vm:..', 'Test/VM:1', 'a//b:1', './a:1', 'a/:1', 'a/.:2', 'a:.'])
      expect(() => assertImageRef(bad), bad).toThrow(/e\.g\. "macos-xcode:16"/);
    expect(assertImageRef('team/macos-base:15.1')).toEqual({ name: 'team/macos-base', tag: '15.1' });
    expect(assertImageRef('macos-base')).toEqual({ name: 'macos-base', tag: 'latest' });
    // A job spec refuses what the store refuses.
    expect(validateJobSpec({ id: 'j', pool: 'p', image: 'a/../b:1', script: 'x', timeoutSeconds: 1 })).toEqual([
      { field: 'image', message: expect.stringMatching(/"\.\." segment/) },
    ]);
    expect(assertDigest(`sha256:${hash(1)}`)).toBe(`sha256:${hash(1)}`);
    for (const bad of ['sha256:../../x', `sha256:${hash(0xabc).toUpperCase()}`, hash(1), `sha256:${hash(1)}/`, 7])
      expect(() => assertDigest(bad)).toThrow(/is not a version digest/);
    expect(() => keys.version('images/', 'sha256:../../etc')).toThrow(/not a version digest/);
    expect(() => keys.tag('images/', 'a/..', 'x')).toThrow(/segment/);
  });

  it('plans a patched chunk: its base copied from the seed on a delta pull, fetched whole on a cold one', () => {
    const v1 = version([1, 2, 3], 'p1');
    const patch = { hash: hash(22), pack: 'p2', offset: 0, length: 5000, base: v1.chunks[1]! };
    const v2: VersionManifest = { ...v1, format: FORMAT_PATCHED, chunks: [v1.chunks[0]!, patch, v1.chunks[2]!] };
    expect(manifestError(v2)).toBeUndefined();
    expect(manifestError({ ...v2, format: FORMAT })).toMatch(/is a patch/);
    const delta = planPull(v2, new Map([['sha256:v1', v1]]));
    expect(delta.kept).toBe(2);
    expect(delta.local).toEqual([{ index: 1, from: 'sha256:v1', fromIndex: 1, hash: hash(2), base: true }]);
    expect(delta.patched).toEqual([
      { index: 1, hash: hash(22), base: hash(2), steps: [{ hash: hash(22), pack: 'p2', offset: 0 }] },
    ]);
    expect(delta.fetchBytes).toBe(5000); // the patch only
    const cold = planPull(v2, new Map());
    expect(
      cold.fetch.flatMap((r) => r.chunks.map(({ index, hash: h, base, patch: p }) => ({ index, h, base, p }))),
    ).toEqual(
      expect.arrayContaining([
        { index: 1, h: hash(2), base: true, p: undefined },
        { index: 1, h: hash(22), base: undefined, p: true },
      ]),
    );
    // gc keeps the base's pack as long as the patch is referenced.
    const gc = planGc([v2], [{ pack: 'p1', chunks: [], writtenAt: 0, bytes: 1 }], {}, 10 * GC_GRACE_MS);
    expect(gc.condemned).toEqual({});
  });
});
