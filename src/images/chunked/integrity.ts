/**
 * What counts as a cached version, on a Mac host (`~/.marina/images`, Tart's VM directories) and in
 * the CLI's cache directory alike: only a directory whose completion marker names the version's
 * digest, written by the helper after it checked every chunk of the disk against its hash. A
 * directory with a journal is an interrupted pull (resumed by the next pull of that version);
 * anything else is neither cached nor a seed. The helper decides (`inspect`, helper/integrity.go),
 * so both places apply one rule.
 */
import { assertDigest } from '../../domain/image-ref';
import type { VersionManifest } from './format';
import type { HelperRunner } from './helper';

/** Reads a version's manifest (the store's, or a worker's memo of it). */
export type ManifestLookup = (digest: string) => Promise<VersionManifest | undefined>;

/** A directory that may hold a version: `dir/disk` is its disk. */
export interface Candidate {
  digest: string;
  dir: string;
  disk: string;
}

export type PlaceState = 'verified' | 'partial' | 'absent' | 'unusable';

/** A verified cached version: its manifest and its disk's path. */
export interface CachedDisk {
  manifest: VersionManifest;
  disk: string;
}

export async function inspectPlaces(
  runner: HelperRunner,
  places: readonly Candidate[],
  signal?: AbortSignal,
): Promise<PlaceState[]> {
  if (places.length === 0) return [];
  for (const p of places) assertDigest(p.digest, p.dir);
  let states: PlaceState[] | undefined;
  await runner.run(
    'inspect',
    { dirs: places },
    (e) => {
      if (e.event === 'done') states = e.states as PlaceState[];
    },
    signal,
  );
  if (states?.length !== places.length) throw new Error('the image helper did not answer the inspect order');
  return states;
}

/** The candidates that are verified versions, with their manifests (read only for those). */
export async function verifiedVersions(
  manifestOf: ManifestLookup,
  runner: HelperRunner,
  candidates: readonly Candidate[],
  signal?: AbortSignal,
): Promise<Map<string, CachedDisk>> {
  const states = await inspectPlaces(runner, candidates, signal);
  const out = new Map<string, CachedDisk>();
  for (const [i, c] of candidates.entries()) {
    if (states[i] !== 'verified' || out.has(c.digest)) continue;
    const manifest = await manifestOf(c.digest);
    // Gone from the store (collected): its disk is still right, but nothing says where its chunks are.
    if (manifest) out.set(c.digest, { manifest, disk: `${c.dir}/${c.disk}` });
  }
  return out;
}
