/**
 * Image references (`name:tag`) and version digests (`sha256:<hex>`): the one place that decides
 * which are acceptable. Both end up in S3 keys (`v2/tags/<name>/<tag>.json`, `v2/versions/<hex>.json`)
 * and in paths on hosts, so everything that writes, reads or deletes by them checks them here first.
 * Pure: workflows import it through job.ts.
 */

/** Lower case only: a job spec must be able to name every image the store holds. */
export const IMAGE_REF_PATTERN = /^[a-z0-9][a-z0-9._/-]{0,127}(:[A-Za-z0-9._-]{1,64})?$/;
export const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;

export interface ImageRef {
  name: string;
  tag: string;
}

export class ImageRefError extends Error {
  override name = 'ImageRefError';
}

/** Splits `name[:tag]` without judging it (the tag defaults to `latest`). */
export function parseImageRef(ref: string): ImageRef {
  const at = ref.lastIndexOf(':');
  if (at <= 0) return { name: ref, tag: 'latest' };
  return { name: ref.slice(0, at), tag: ref.slice(at + 1) };
}

export function formatImageRef(ref: ImageRef): string {
  return `${ref.name}:${ref.tag}`;
}

/** Why `ref` is not a usable image reference, or undefined. */
export function imageRefError(ref: unknown): string | undefined {
  const example = 'e.g. "macos-xcode:16" or "team/macos-base:15.1"';
  if (typeof ref !== 'string' || !IMAGE_REF_PATTERN.test(ref))
    return `"${String(ref)}" is not an image reference: lower-case letters, digits, ".", "_", "-" and "/" in the name, an optional ":tag"; ${example}`;
  const { name, tag } = parseImageRef(ref);
  // A dot or empty segment would walk out of the tag's key prefix, or alias another name.
  const bad = name.split('/').find((s) => s === '' || s === '.' || s === '..');
  if (bad !== undefined)
    return `"${ref}": the name has an ${bad === '' ? 'empty' : `"${bad}"`} segment between slashes; ${example}`;
  if (tag === '.' || tag === '..') return `"${ref}": the tag "${tag}" is a dot segment; ${example}`;
  return undefined;
}

/** The reference, parsed, or an ImageRefError naming what is wrong and how to write it. */
export function assertImageRef(ref: unknown): ImageRef {
  const error = imageRefError(ref);
  if (error) throw new ImageRefError(error);
  return parseImageRef(ref as string);
}

/** A version digest as it may be used in a key or a path, or an error: never trust one read from the store. */
export function assertDigest(digest: unknown, where = 'digest'): string {
  if (typeof digest !== 'string' || !DIGEST_PATTERN.test(digest))
    throw new ImageRefError(`${where}: "${String(digest).slice(0, 80)}" is not a version digest (sha256:<64 hex>)`);
  return digest;
}

/** The hex part of a checked digest. */
export const digestHex = (digest: string): string => assertDigest(digest).slice('sha256:'.length);
