/**
 * Activities check their own inputs. A workflow validates a job spec before it calls them, but an
 * activity can be called by any workflow (or a forged one) on the task queue, and its inputs end up in
 * shell commands, VM names and host paths: each is checked here against the pattern it must have,
 * and refused as non-retryable before anything runs.
 */
import { ApplicationFailure } from '@temporalio/common';
import { JOB_ID_PATTERN } from '../src/domain/job';
import { DIGEST_PATTERN } from '../src/domain/image-ref';

/** `marina-<job id>`, `marina-standby-…`, `marina-img-…`: what Marina names VMs. */
const VM_NAME_PATTERN = /^marina-[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;
/** What names a job's directory in the VM: a job id, or a standby VM's name without its `marina-` (longer). */
const RUN_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function invalidInput(field: string, value: unknown, rule: string): ApplicationFailure {
  return ApplicationFailure.create({
    message: `refused ${field} ${JSON.stringify(value)?.slice(0, 120)}: ${rule}`,
    type: 'InvalidActivityInput',
    nonRetryable: true,
  });
}

function check(ok: boolean, field: string, value: unknown, rule: string): void {
  if (!ok) throw invalidInput(field, value, rule);
}

export function checkJobId(id: unknown, field = 'jobId'): string {
  check(
    typeof id === 'string' && (JOB_ID_PATTERN.test(id) || RUN_ID_PATTERN.test(id)),
    field,
    id,
    'a job id is letters, digits, ".", "_" or "-", starting with a letter or digit',
  );
  return id as string;
}

export function checkVmName(vm: unknown, field = 'vm'): string {
  check(
    typeof vm === 'string' && VM_NAME_PATTERN.test(vm),
    field,
    vm,
    'a VM name is "marina-" then letters, digits, ".", "_" or "-"',
  );
  return vm as string;
}

export function checkDigest(digest: unknown, field = 'digest'): string {
  check(typeof digest === 'string' && DIGEST_PATTERN.test(digest), field, digest, 'a digest is sha256:<64 hex>');
  return digest as string;
}

export function checkName(name: unknown, field: string): string {
  check(
    typeof name === 'string' && NAME_PATTERN.test(name),
    field,
    name,
    'lower-case letters, digits, ".", "_" or "-"',
  );
  return name as string;
}

/** The VM an activity acts on: its pool, host, VM name and job id, each checked. */
export function checkVmRef<T extends { pool: string; host: string; vm: string; jobId: string }>(ref: T): T {
  checkName(ref.pool, 'pool');
  checkName(ref.host, 'host');
  checkVmName(ref.vm);
  checkJobId(ref.jobId);
  return ref;
}
