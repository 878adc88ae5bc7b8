/**
 * Activities check their own inputs. A workflow validates a job spec before it calls them, but an
 * activity can be called by any workflow (or a forged one) on the task queue, and its inputs end up in
 * shell commands, VM names and host paths: each is checked here against the pattern it must have,
 * and refused as non-retryable before anything runs.
 */
import { ApplicationFailure } from '@temporalio/common';
import { DIGEST_PATTERN } from '../src/domain/image-ref';

export function invalidInput(field: string, value: unknown, rule: string): ApplicationFailure {
  return ApplicationFailure.create({
    message: `refused ${field} ${JSON.stringify(value)?.slice(0, 120)}: ${rule}`,
    type: 'InvalidActivityInput',
    nonRetryable: true,
  });
}

/** A check of one kind of string: returns it, or refuses it naming the field and the rule. */
const checker =
  (pattern: RegExp, rule: string) =>
  (value: unknown, field: string): string => {
    if (typeof value !== 'string' || !pattern.test(value)) throw invalidInput(field, value, rule);
    return value;
  };

const jobId = checker(
  // A job id (1-63 characters), or a standby VM's name without its `marina-` (longer): both name a job directory.
  /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/,
  'a job id is letters, digits, ".", "_" or "-", starting with a letter or digit',
);
const vmName = checker(
  // `marina-<job id>`, `marina-standby-…`, `marina-img-…`: what Marina names VMs.
  /^marina-[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/,
  'a VM name is "marina-" then letters, digits, ".", "_" or "-"',
);
const digest = checker(DIGEST_PATTERN, 'a digest is sha256:<64 hex>');
const name = checker(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'lower-case letters, digits, ".", "_" or "-"');

export const checkJobId = (id: unknown, field = 'jobId'): string => jobId(id, field);
export const checkDigest = (d: unknown, field = 'digest'): string => digest(d, field);

/** The VM an activity acts on: its pool, host, VM name and job id, each checked. */
export function checkVmRef<T extends { pool: string; host: string; vm: string; jobId: string }>(ref: T): T {
  name(ref.pool, 'pool');
  name(ref.host, 'host');
  vmName(ref.vm, 'vm');
  jobId(ref.jobId, 'jobId');
  return ref;
}
