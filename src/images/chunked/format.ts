/**
 * The chunked image format (docs/image-format.md): an image version is a manifest listing
 * fixed-size chunks of the raw disk. All-zero chunks are recorded, not stored; every other
 * chunk is compressed on its own (zstd) and addressed by the SHA-256 of its uncompressed
 * bytes, and chunks are packed into larger S3 objects. Pure: no I/O here.
 */
import { createHash } from 'node:crypto';
import { isVmHostKey } from '../vm-host-key';
import { assertImageRef, digestHex, formatImageRef } from '../../domain/image-ref';

/** Every chunk stored whole. Still written when no chunk is a patch, so older readers read it. */
export const FORMAT = 'marina-chunked/1';
/** Some chunks are zstd patches against an earlier chunk (`base`): older readers refuse it by name. */
export const FORMAT_PATCHED = 'marina-chunked/2';
export type Format = typeof FORMAT | typeof FORMAT_PATCHED;
/**
 * A patch of a patch of ...: a cold pull fetches the whole chain, so it is kept short; a chunk
 * whose base is this deep is stored whole again.
 */
export const MAX_PATCH_DEPTH = 4;
/**
 * 256 KiB: on a modelled OS update (bench/chunk-size.ts) it moves 2.5x less than 1 MiB chunks when a fifth of
 * the changed bytes are scattered small writes, and as little when changes are whole files; pull and push ran
 * at the same speed at 256 KiB and 1 MiB (bench/image-store.ts). The cost is a manifest of ~19 MiB per 100 GiB
 * version, which only the worker reads.
 */
export const DEFAULT_CHUNK_SIZE = 256 * 1024;
/** Packs are closed at this many compressed bytes: tens of MiB, few S3 requests per GB. */
export const PACK_TARGET_BYTES = 32 * 1024 * 1024;

/** Where a stored chunk lives: its pack and its compressed byte range there. */
export interface ChunkLocation {
  /** SHA-256 (hex) of the chunk's uncompressed bytes. */
  hash: string;
  pack: string;
  offset: number;
  length: number;
  /**
   * Present when the stored bytes are a zstd patch, to be decoded with this chunk (itself
   * whole or a patch) as the dictionary. Only in FORMAT_PATCHED manifests.
   */
  base?: ChunkLocation;
}

/** How many patches lie between a chunk and a whole one (0: stored whole). */
export function patchDepth(c: ChunkLocation): number {
  let depth = 0;
  for (let b = c.base; b; b = b.base) depth++;
  return depth;
}

/** One chunk of a version's disk, in order: null for an all-zero chunk. */
export type ChunkEntry = ChunkLocation | null;

export interface VersionManifest {
  format: Format;
  chunkSize: number;
  /** Logical size of the raw disk in bytes (the last chunk may be short). */
  size: number;
  chunks: ChunkEntry[];
  /** The VM's small files (Tart: config.json, nvram.bin) as one tar.gz blob, by SHA-256. */
  extras?: { sha256: string; size: number };
  /** The guest's SSH host key, `<type> <base64>` (src/images/vm-host-key.ts): jobs trust no other. */
  vmHostKey?: string;
  /**
   * Where the disk sits in the VM's directory when not at its top as `disk.img`: a Parallels bundle's
   * `harddisk.hdd/harddisk.hdd.0.{…}.hds` (src/images/chunked/pvm.ts). Absent: a Tart VM.
   */
  disk?: string;
}

/** A relative path inside a VM directory, no `..`, no leading `/`: where a manifest may put the disk. */
export const DISK_PATH = /^(?!.*(^|\/)\.\.?(\/|$))[A-Za-z0-9._{}-]+(\/[A-Za-z0-9._{}-]+)*$/;

/** A version's digest: SHA-256 over its chunk list, so the same disk content has one digest. */
export function versionDigest(m: VersionManifest): string {
  const h = createHash('sha256');
  h.update(`${m.format}\n${m.chunkSize}\n${m.size}\n`);
  for (const c of m.chunks) h.update(c ? `${c.hash}\n` : '0\n');
  if (m.extras) h.update(`extras ${m.extras.sha256}\n`);
  // Part of the version: the same disk with another trusted key is another version.
  if (m.vmHostKey) h.update(`vm-host-key ${m.vmHostKey}\n`);
  // Part of the version: the same bytes laid out as another hypervisor's VM are another version.
  if (m.disk) h.update(`disk ${m.disk}\n`);
  return `sha256:${h.digest('hex')}`;
}

const PACK_ID = /^[0-9a-f]{32}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;

/** A pack id or blob hash read back from the store, checked before it becomes part of a key. */
function checked(what: string, value: string, pattern: RegExp): string {
  if (!pattern.test(value)) throw new Error(`${what} "${value.slice(0, 80)}" read from the store is malformed`);
  return value;
}

/**
 * S3 keys under the store's prefix. Packs and chunk hashes go under hashed prefixes so S3 spreads their load.
 * Every part is checked here, so no caller can build a key from an unchecked name or a digest read back.
 */
export const keys = {
  tag: (prefix: string, name: string, tag: string) => {
    const ref = assertImageRef(formatImageRef({ name, tag }));
    return `${prefix}v2/tags/${ref.name}/${ref.tag}.json`;
  },
  version: (prefix: string, digest: string) => `${prefix}v2/versions/${digestHex(digest)}.json`,
  pack: (prefix: string, pack: string) => `${prefix}v2/packs/${pack.slice(0, 2)}/${checked('pack', pack, PACK_ID)}`,
  packIndex: (prefix: string, pack: string) =>
    `${prefix}v2/packs/${pack.slice(0, 2)}/${checked('pack', pack, PACK_ID)}.idx.json`,
  blob: (prefix: string, sha256: string) => `${prefix}v2/blobs/${checked('blob', sha256, SHA256_HEX)}`,
};

/** Why a manifest cannot be right, or undefined: checked before a pull trusts it. */
export function manifestError(m: VersionManifest): string | undefined {
  if (m.format !== FORMAT && m.format !== FORMAT_PATCHED)
    return `unknown format "${String(m.format)}"; this Marina reads ${FORMAT} and ${FORMAT_PATCHED}`;
  if (!Number.isInteger(m.chunkSize) || m.chunkSize < 4096) return `chunkSize ${m.chunkSize} is not a size in bytes`;
  if (m.chunks.length !== Math.ceil(m.size / m.chunkSize))
    return `${m.chunks.length} chunks cannot cover ${m.size} bytes of ${m.chunkSize}`;
  if (m.extras && !/^[0-9a-f]{64}$/.test(m.extras.sha256)) return 'extras has no SHA-256 hash';
  if (m.vmHostKey !== undefined && !isVmHostKey(m.vmHostKey)) return 'vmHostKey is not an SSH public key';
  if (m.disk !== undefined && (typeof m.disk !== 'string' || !DISK_PATH.test(m.disk)))
    return 'disk is not a relative path inside the VM directory';
  const bad = m.chunks.findIndex((c) => c !== null && !/^[0-9a-f]{64}$/.test(c.hash));
  if (bad >= 0) return `chunk ${bad} has no SHA-256 hash`;
  const patched = m.chunks.findIndex((c) => c?.base);
  if (patched >= 0 && m.format === FORMAT) return `chunk ${patched} is a patch, which ${FORMAT} cannot hold`;
  const deep = m.chunks.findIndex((c) => c && patchDepth(c) > MAX_PATCH_DEPTH);
  return deep >= 0 ? `chunk ${deep} is a chain of more than ${MAX_PATCH_DEPTH} patches` : undefined;
}
