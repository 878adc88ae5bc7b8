/**
 * A session: a job whose work arrives as steps (a CI system's stages) while it holds its lease and
 * VM, instead of one script given at submit. GitLab's custom executor is its first user: `prepare`
 * opens a session, each `run <script> <stage>` is a step, `cleanup` closes it.
 *
 * Pure: imported by the job workflow (session mode), the client and the CLI.
 */
import { JOB_ID_PATTERN, MAX_TIMEOUT_SECONDS, formatImageRef, parseImageRef, type FieldError } from './job';
import { imageRefError } from './image-ref';

export interface SessionSpec {
  /** The job id (workflow `job/<id>`, VM `marina-<id>`), e.g. `gitlab-4711`. */
  id: string;
  pool: string;
  image: string;
  /** Marks the job workflow's input as a session: the job workflow takes its session path. */
  session: SessionOptions;
  /** Fair-share unit (e.g. the GitLab project), shown in the UI. */
  client?: string;
  resources?: Record<string, number>;
  labels?: Record<string, string>;
}

export interface SessionOptions {
  /** No step asked for this long (and none running): the caller is gone; the VM is destroyed, the lease returned. */
  idleTimeoutSeconds: number;
  /** Bound on one step's script (the CI job's own timeout). */
  stepTimeoutSeconds: number;
  /** Bound on waiting for a slot; past it the session fails (a system failure for the CI). */
  queueTimeoutSeconds: number;
}

/** Where a step's script waits in S3 for the run activity (scripts can hold CI tokens: never in history). */
export interface ScriptRef {
  bucket: string;
  key: string;
  /** sha256 of the script, hex: the activity refuses anything else under that key. */
  sha256: string;
}

/** Stage names: GitLab's (`prepare_script`, `build_script`, `step_release`, …) and any like them. */
export const STAGE_PATTERN = /^[a-z][a-z0-9_]{0,62}$/;
/** Steps a session takes at most (a GitLab job sends about a dozen): bounds the workflow's state. */
export const MAX_SESSION_STEPS = 100;

export const isSessionSpec = (input: unknown): input is SessionSpec =>
  typeof input === 'object' && input !== null && 'session' in input && (input as SessionSpec).session !== undefined;

const positiveSeconds = (v: unknown, max: number): boolean =>
  typeof v === 'number' && Number.isFinite(v) && v > 0 && v <= max;

/** Every problem at once, each naming its field and the fix. */
export function validateSessionSpec(input: unknown): FieldError[] {
  const errors: FieldError[] = [];
  const err = (field: string, message: string) => errors.push({ field, message });
  if (typeof input !== 'object' || input === null) return [{ field: '(spec)', message: 'must be an object' }];
  const s = input as Record<string, unknown>;
  if (typeof s.id !== 'string' || !JOB_ID_PATTERN.test(s.id))
    err('id', 'must be 1-63 characters of letters, digits, ".", "_" or "-", starting with a letter or digit');
  if (typeof s.pool !== 'string' || !/^[a-z0-9][a-z0-9._-]{0,62}$/.test(s.pool))
    err('pool', 'must name a configured pool (lower-case letters, digits, ".", "_", "-")');
  const imageError = imageRefError(s.image);
  if (imageError) err('image', imageError);
  const o = s.session as Record<string, unknown> | undefined;
  if (typeof o !== 'object' || o === null)
    err('session', 'must be { idleTimeoutSeconds, stepTimeoutSeconds, queueTimeoutSeconds }');
  else {
    if (!positiveSeconds(o.idleTimeoutSeconds, 24 * 3600))
      err('session.idleTimeoutSeconds', 'must be seconds, more than 0 and at most 86400 (a day), e.g. 900');
    if (!positiveSeconds(o.stepTimeoutSeconds, MAX_TIMEOUT_SECONDS))
      err('session.stepTimeoutSeconds', `must be seconds, more than 0 and at most ${MAX_TIMEOUT_SECONDS}, e.g. 3600`);
    if (!positiveSeconds(o.queueTimeoutSeconds, MAX_TIMEOUT_SECONDS))
      err('session.queueTimeoutSeconds', `must be seconds, more than 0 and at most ${MAX_TIMEOUT_SECONDS}, e.g. 3600`);
  }
  if (s.client !== undefined && (typeof s.client !== 'string' || s.client.length > 64))
    err('client', 'must be a string of at most 64 characters');
  return errors;
}

export class SessionSpecError extends Error {
  constructor(readonly errors: FieldError[]) {
    super(errors.map((e) => `${e.field}: ${e.message}`).join('; '));
    this.name = 'SessionSpecError';
  }
}

export function normalizeSessionSpec(input: unknown): SessionSpec {
  const errors = validateSessionSpec(input);
  if (errors.length) throw new SessionSpecError(errors);
  const s = input as SessionSpec;
  return {
    ...s,
    image: formatImageRef(parseImageRef(s.image)),
    resources: { vm: 1, ...(s.resources ?? {}) },
    labels: s.labels ?? {},
  };
}

/** A step's directory and log name: the job id, the stage, and the attempt (a stage runs again only after a system failure). */
export const stepId = (jobId: string, stage: string, attempt: number): string => `${jobId}.${stage}.${attempt}`;
