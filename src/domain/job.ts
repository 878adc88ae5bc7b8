/**
 * The job spec a CI system submits, and its validation.
 *
 * Pure: imported by workflows (bundled, deterministic), the client and the CLI,
 * so a bad spec is refused the same way at the edge and inside the workflow.
 */

export interface SnapshotTarget {
  /** Image reference to push the VM to after the script succeeds, `name:tag`. */
  image: string;
}

export interface JobSpec {
  /** Caller-chosen id, unique per job; the workflow id is `job/<id>`. */
  id: string;
  pool: string;
  /** Image reference `name:tag` (tag defaults to `latest`). */
  image: string;
  /** Bash script run inside the VM. */
  script: string;
  /** Plain, non-secret environment for the script. */
  env?: Record<string, string>;
  /**
   * Secrets by reference: script variable name -> name of a secret the worker
   * resolves from its config. Values never enter workflow history.
   */
  secrets?: Record<string, string>;
  /** Wall-clock limit for the script, seconds. */
  timeoutSeconds: number;
  /** Named, possibly fractional resources; `vm` defaults to 1. */
  resources?: Record<string, number>;
  /** Labels a host must carry, e.g. `{ os: 'macos', arch: 'arm64' }`. */
  labels?: Record<string, string>;
  snapshot?: SnapshotTarget;
  /** Who submitted the job (CI system name); shown in the UI, and the unit of fair share in the pool. */
  client?: string;
  /** Host directories shared into the VM (Tart `--dir`), subject to the pool's security policy. */
  volumes?: Volume[];
  /** Among one client's queued jobs, higher runs first (-100..100, default 0). */
  priority?: number;
  /** Set for a GitHub Actions job: the run step registers a JIT runner for it (src/github). */
  github?: GithubJobRef;
}

export interface Volume {
  /** Absolute path on the host. */
  hostPath: string;
  /** Mount name inside the VM (default: the path's last part). */
  name?: string;
  readOnly?: boolean;
}

export interface FieldError {
  field: string;
  message: string;
}

export class JobSpecError extends Error {
  constructor(readonly errors: FieldError[]) {
    super(errors.map((e) => `${e.field}: ${e.message}`).join('; '));
    this.name = 'JobSpecError';
  }
}

import { formatImageRef, imageRefError, parseImageRef } from './image-ref';
import { githubJobRefErrors, type GithubJobRef } from '../github/types';

export { formatImageRef, parseImageRef, type ImageRef } from './image-ref';

export const JOB_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const ENV_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const MAX_TIMEOUT_SECONDS = 7 * 24 * 3600;
const MAX_SCRIPT_BYTES = 256 * 1024;

/** `ref` with its name (not its tag) in lower case. */
function lowerCaseName(ref: string): string {
  const at = ref.indexOf(':');
  return at < 0 ? ref.toLowerCase() : ref.slice(0, at).toLowerCase() + ref.slice(at);
}

/** An image reference as jobs may name one (`name:tag`, lower-case name, no dot segments). */
export const isImageRef = (ref: string): boolean => imageRefError(ref) === undefined;

/** Returns every problem with the spec at once, so a caller fixes them in one go. */
export function validateJobSpec(spec: unknown): FieldError[] {
  const errors: FieldError[] = [];
  const err = (field: string, message: string) => errors.push({ field, message });
  if (typeof spec !== 'object' || spec === null) {
    return [{ field: '(spec)', message: 'must be an object with id, pool, image, script and timeoutSeconds' }];
  }
  const s = spec as Record<string, unknown>;
  if (typeof s.id !== 'string' || !JOB_ID_PATTERN.test(s.id)) {
    err('id', 'must be 1-63 characters of letters, digits, ".", "_" or "-", starting with a letter or digit');
  }
  if (typeof s.pool !== 'string' || !NAME_PATTERN.test(s.pool)) {
    err('pool', 'must name a configured pool (lower-case letters, digits, ".", "_", "-")');
  }
  const imageError = imageRefError(s.image);
  if (imageError) err('image', imageError);
  if (typeof s.script !== 'string' || s.script.trim() === '') {
    err('script', 'must be a non-empty bash script');
  } else if (new TextEncoder().encode(s.script).length > MAX_SCRIPT_BYTES) {
    err('script', `is larger than ${MAX_SCRIPT_BYTES} bytes; ship big scripts in the repository and call them`);
  }
  if (typeof s.timeoutSeconds !== 'number' || !Number.isFinite(s.timeoutSeconds) || s.timeoutSeconds <= 0) {
    err('timeoutSeconds', 'must be a positive number of seconds, e.g. 3600');
  } else if (s.timeoutSeconds > MAX_TIMEOUT_SECONDS) {
    err('timeoutSeconds', `must be at most ${MAX_TIMEOUT_SECONDS} (7 days)`);
  }
  checkStringMap(s.env, 'env', err, true);
  checkStringMap(s.secrets, 'secrets', err, true);
  checkStringMap(s.labels, 'labels', err, false);
  if (s.resources !== undefined) {
    if (typeof s.resources !== 'object' || s.resources === null || Array.isArray(s.resources)) {
      err('resources', 'must be a map of resource name to amount, e.g. { vm: 1, cpu: 4 }');
    } else {
      for (const [k, v] of Object.entries(s.resources)) {
        if (!NAME_PATTERN.test(k)) err(`resources.${k}`, 'resource names are lower-case letters, digits, "_", "-"');
        if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
          err(`resources.${k}`, 'must be a non-negative number');
        }
      }
    }
  }
  if (s.snapshot !== undefined) {
    const snap = s.snapshot as Record<string, unknown> | null;
    if (typeof snap !== 'object' || snap === null) err('snapshot', 'must be { image: "name:tag" }');
    else {
      const snapError = imageRefError(snap.image);
      // Upper case in the name is the usual slip (a branch name); offer the fix.
      const given = typeof snap.image === 'string' ? snap.image : undefined;
      const lower = given ? lowerCaseName(given) : undefined;
      if (snapError)
        err(
          'snapshot.image',
          `${snapError}${lower && lower !== given && imageRefError(lower) === undefined ? `; did you mean "${lower}"?` : ''}`,
        );
    }
  }
  if (s.client !== undefined && (typeof s.client !== 'string' || s.client.length > 64)) {
    err('client', 'must be a string of at most 64 characters');
  }
  if (
    s.priority !== undefined &&
    (typeof s.priority !== 'number' || !Number.isInteger(s.priority) || Math.abs(s.priority) > 100)
  ) {
    err('priority', 'must be a whole number from -100 to 100 (higher runs first among your jobs)');
  }
  if (s.volumes !== undefined) {
    if (!Array.isArray(s.volumes)) err('volumes', 'must be a list of { hostPath, name?, readOnly? }');
    else
      s.volumes.forEach((v: unknown, i) => {
        const vol = v as Record<string, unknown> | null;
        if (typeof vol !== 'object' || vol === null)
          return err(`volumes.${i}`, 'must be { hostPath, name?, readOnly? }');
        if (typeof vol.hostPath !== 'string' || !vol.hostPath.startsWith('/') || vol.hostPath.split('/').includes('..'))
          err(`volumes.${i}.hostPath`, 'must be an absolute path without "..", e.g. /Users/ci/caches/spm');
        if (vol.name !== undefined && (typeof vol.name !== 'string' || !NAME_PATTERN.test(vol.name)))
          err(`volumes.${i}.name`, 'must be lower-case letters, digits, ".", "_", "-"');
        if (vol.readOnly !== undefined && typeof vol.readOnly !== 'boolean')
          err(`volumes.${i}.readOnly`, 'must be true or false');
      });
  }
  errors.push(...githubJobRefErrors(s.github));
  return errors;
}

function checkStringMap(
  value: unknown,
  field: string,
  err: (field: string, message: string) => void,
  envNames: boolean,
): void {
  if (value === undefined) return;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    err(field, 'must be a map of string to string');
    return;
  }
  for (const [k, v] of Object.entries(value)) {
    if (envNames && !ENV_NAME_PATTERN.test(k)) err(`${field}.${k}`, 'must be a valid shell variable name');
    if (typeof v !== 'string') err(`${field}.${k}`, 'must be a string');
  }
}

/** Validates and fills defaults; throws JobSpecError listing every bad field. */
export function normalizeJobSpec(spec: unknown): JobSpec {
  const errors = validateJobSpec(spec);
  if (errors.length > 0) throw new JobSpecError(errors);
  const s = spec as JobSpec;
  const image = formatImageRef(parseImageRef(s.image));
  return {
    ...s,
    image,
    resources: { vm: 1, ...(s.resources ?? {}) },
    env: s.env ?? {},
    secrets: s.secrets ?? {},
    labels: s.labels ?? {},
  };
}

export const jobWorkflowId = (id: string): string => `job/${id}`;
/** VM names derive from the job id, so a retried step finds its own VM. */
export const vmNameForJob = (id: string): string => `marina-${id}`;
/** The local VM name a host keeps an image under: by digest, so a cache hit is exact. */
export const imageCacheName = (digest: string): string => `marina-img-${digest.replace(/^sha256:/, '').slice(0, 16)}`;
/** Cached images are `marina-img-<digest>`; every other `marina-` VM belongs to a job. */
export const isJobVm = (vm: string): boolean => vm.startsWith('marina-') && !vm.startsWith('marina-img-');
export const jobIdOfVm = (vm: string): string => vm.slice('marina-'.length);
/** A pool's standby VM: `marina-standby-<pool>-<entry>-<n>-<generation>`. */
export const standbyVmName = (pool: string, slot: string, generation: number): string =>
  `marina-standby-${pool}-${slot}-${generation}`;
/** The pool a standby VM belongs to, or undefined for any other VM. */
export const poolOfStandbyVm = (vm: string): string | undefined => /^marina-standby-(.+)-\d+-\d+-\d+$/.exec(vm)?.[1];
