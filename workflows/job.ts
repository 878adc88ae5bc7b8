/**
 * The life of one CI job: lease a VM slot -> fetch image -> boot VM -> run script
 * -> snapshot? -> clean up. Every effect is an activity; the VM is destroyed and the
 * lease returned on success, failure, timeout and cancel alike.
 */
import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  CancelledFailure,
  condition,
  isCancellation,
  patched,
  setCurrentDetails,
  upsertSearchAttributes,
  type ActivityOptions,
} from '@temporalio/workflow';
import { setDescribedHandler } from './handlers';
import { NON_RETRYABLE, untilGone, withLocalOptions, withOptions } from './activity-call';
import { sessionJob } from './session';
import { isSessionSpec } from '../src/domain/session';
import { LeaseClient } from './lease';
import { JobSpecError, imageCacheName, normalizeJobSpec, vmNameForJob, type JobSpec } from '../src/domain/job';
import {
  SA_HOST,
  SA_JOB_STATE,
  JOB_FAILED,
  JOB_TIMED_OUT,
  FINAL_JOB_STATES,
  jobStatusQuery,
  type JobResult,
  type JobState,
  type JobStatus,
  type Stage,
} from './definitions';
import { jobDetails } from './job-details';
import { recordFinished, recordStage } from './job-metrics';

const retry = {
  initialInterval: '1s',
  backoffCoefficient: 2,
  maximumInterval: '30s',
  nonRetryableErrorTypes: NON_RETRYABLE,
};

// A dead worker's attempt is noticed within one heartbeat timeout, then the next attempt re-attaches.
const HEARTBEAT = '10s';

/**
 * A job whose script failed or timed out fails its workflow, so Temporal's own views (the Web UI's
 * Failures, `ExecutionStatus="Failed"`) show it; the JobResult rides in the failure's details and
 * the client unwraps it (src/client/job-result.ts).
 */
export async function jobWorkflow(input: JobSpec): Promise<JobResult> {
  // Session mode (a SessionSpec: GitLab's custom executor) is chosen by the input alone, before any
  // command, so histories of plain jobs replay unchanged. It ends with a SessionView; its client starts
  // it by name with that type (src/client/sessions.ts).
  if (isSessionSpec(input)) return (await sessionJob(input)) as unknown as JobResult;
  const result = await runJob(input);
  // Histories recorded before this completed such jobs: they must replay to the same final command.
  if (result.state !== 'succeeded' && patched('job-failure-fails-workflow')) throw jobFailure(result);
  return result;
}

function jobFailure(r: JobResult): ApplicationFailure {
  const timedOut = r.state === 'timed_out';
  return ApplicationFailure.create({
    type: timedOut ? JOB_TIMED_OUT : JOB_FAILED,
    message: timedOut
      ? `job ${r.jobId} timed out on ${r.host} (exit ${r.exitCode})`
      : `job ${r.jobId} failed with exit code ${r.exitCode} on ${r.host}`,
    // A retry would run the script again: the script's own failure is final.
    nonRetryable: true,
    details: [r],
  });
}

async function runJob(input: JobSpec): Promise<JobResult> {
  let spec: JobSpec;
  try {
    spec = normalizeJobSpec(input);
  } catch (e) {
    if (e instanceof JobSpecError) {
      throw ApplicationFailure.create({
        message: e.message,
        type: 'InvalidJobSpec',
        nonRetryable: true,
        details: [e.errors],
      });
    }
    throw e;
  }

  const stages: Partial<Record<Stage, number>> = {};
  const status: JobStatus = { spec, state: 'validating', stages, logPrefix: '' };
  setDescribedHandler(jobStatusQuery, () => status);
  // Current details are not a command: they change nothing a replay compares.
  const showDetails = () => setCurrentDetails(jobDetails(status));
  const setState = (state: JobState) => {
    status.state = state;
    if (FINAL_JOB_STATES.has(state)) recordFinished(spec.pool, state);
    upsertSearchAttributes([{ key: SA_JOB_STATE, value: state }]);
    showDetails();
  };
  const timed = async <T>(stage: Stage, state: JobState | undefined, fn: () => Promise<T>): Promise<T> => {
    if (state) setState(state);
    const start = Date.now();
    try {
      return await fn();
    } finally {
      stages[stage] = Date.now() - start;
      recordStage(spec.pool, stage, stages[stage]);
      showDetails();
    }
  };

  const resolveOptions = { startToCloseTimeout: '1m', retry: { ...retry, maximumAttempts: 10 } };
  // A tag's lookup is two small S3 reads: as a local activity it spares a trip through the task queue
  // (issue 16). Histories from before keep their scheduled activity.
  const resolveImage = patched('resolve-image-locally')
    ? withLocalOptions('resolveImage', resolveOptions)
    : withOptions('resolveImage', resolveOptions);
  const image = await timed('resolve', undefined, () => resolveImage(`resolve ${spec.image}`, spec.image));

  const leases = new LeaseClient(spec.pool);
  /** The host that now holds the image in its cache (told to the pool with the release: cache affinity). */
  let fetchedOn: string | undefined;

  // A lease is revoked when its host is lost (AWS retired it, it failed): the job then
  // runs again, from the fetch, on another host. Its VM went with the host.
  let onHost: CancellationScope | undefined;
  leases.onRevoked = () => onHost?.cancel();

  try {
    for (;;) {
      setState('queued');
      const lease = await timed('queue', undefined, () =>
        leases.acquire({
          resources: spec.resources ?? { vm: 1 },
          labels: spec.labels ?? {},
          image: imageCacheName(image.digest),
          imageRef: image.ref,
          ...(spec.client ? { client: spec.client } : {}),
          ...(spec.priority ? { priority: spec.priority } : {}),
          ...(spec.volumes?.length ? { volumes: spec.volumes } : {}),
          ...(spec.snapshot
            ? { snapshot: spec.snapshot.image, secrets: Object.keys(spec.secrets ?? {}).length > 0 }
            : {}),
        }),
      );
      const host = lease.host;
      status.host = host;
      status.lease = lease;
      upsertSearchAttributes([{ key: SA_HOST, value: host }]);
      const target = { pool: spec.pool, host };
      // A standby VM the pool handed over (booted, image cached) keeps its name; otherwise the job's own.
      const standby = lease.vm && lease.ip ? { vm: lease.vm, ip: lease.ip } : undefined;
      const vm = standby?.vm ?? vmNameForJob(spec.id);
      const vmTarget = { ...target, vm, jobId: spec.id, ...(image.vmHostKey ? { vmHostKey: image.vmHostKey } : {}) };

      onHost = new CancellationScope();
      try {
        const done = await onHost.run(async () => {
          const ensureImage = withOptions('ensureImage', {
            startToCloseTimeout: '4h',
            heartbeatTimeout: HEARTBEAT,
            retry,
          });
          const bootVm = withOptions('bootVm', { startToCloseTimeout: '20m', heartbeatTimeout: HEARTBEAT, retry });
          let booted: { ip: string } | undefined = standby;
          // A host that holds the image boots it in the same activity that finds it there; patched, as it
          // adds a command for histories from before.
          if (!booted && patched('boot-from-cache')) {
            booted =
              (await timed('boot', 'booting', () =>
                withOptions('bootCachedVm', { startToCloseTimeout: '20m', heartbeatTimeout: HEARTBEAT, retry })(
                  `boot ${vm} on ${host} from its cache`,
                  vmTarget,
                  image,
                  spec.resources ?? {},
                  lease.volumes ?? [],
                  lease.runArgs ?? [],
                ),
              )) ?? undefined;
            if (booted) {
              // The cache check was part of the boot: nothing was fetched.
              stages.fetch = 0;
              fetchedOn = host;
            }
          }
          if (!booted) {
            await timed('fetch', 'fetching', () => ensureImage(`fetch ${image.ref} on ${host}`, target, image));
            fetchedOn = host;
            booted = await timed('boot', 'booting', () =>
              bootVm(
                `boot ${vm} on ${host}`,
                vmTarget,
                image,
                spec.resources ?? {},
                lease.volumes ?? [],
                lease.runArgs ?? [],
              ),
            );
          }

          const runOptions: ActivityOptions = {
            startToCloseTimeout: `${spec.timeoutSeconds + 600}s`,
            heartbeatTimeout: HEARTBEAT,
            retry,
            // Let the activity kill the script before cleanup destroys the VM under it.
            cancellationType: 'WAIT_CANCELLATION_COMPLETED' as ActivityOptions['cancellationType'],
          };
          const runScript = withOptions('runScript', runOptions);
          const runRequest = {
            id: spec.id,
            script: spec.script,
            env: spec.env ?? {},
            secrets: spec.secrets ?? {},
            timeoutSeconds: spec.timeoutSeconds,
          };
          // A GitHub Actions job runs a JIT runner (activities/github.ts); patched for histories from before.
          const github = spec.github && patched('github-jit-runner') ? spec.github : undefined;
          const run = await timed('run', 'running', () =>
            github
              ? withOptions('runGithubRunner', runOptions)(
                  `run GitHub runner ${github.runnerName} in ${vm}`,
                  { ...vmTarget, ip: booted.ip },
                  runRequest,
                  github,
                )
              : runScript(`run script in ${vm}`, { ...vmTarget, ip: booted.ip }, runRequest),
          );

          let snapshot: JobResult['snapshot'];
          if (spec.snapshot && run.exitCode === 0 && !run.timedOut) {
            const snapshotVm = withOptions('snapshotVm', {
              startToCloseTimeout: '4h',
              heartbeatTimeout: HEARTBEAT,
              retry,
            });
            snapshot = await timed('snapshot', 'snapshotting', () =>
              snapshotVm(
                `snapshot ${vm} to ${spec.snapshot!.image}`,
                { ...vmTarget, ip: booted.ip },
                spec.snapshot!.image,
                { ...(spec.client ? { client: spec.client } : {}), secrets: Object.keys(spec.secrets ?? {}) },
              ),
            );
          }
          const state = run.timedOut ? 'timed_out' : run.exitCode === 0 ? 'succeeded' : 'failed';
          const result: JobResult = {
            jobId: spec.id,
            state,
            exitCode: run.exitCode,
            host,
            stages,
            log: run.log,
            snapshot,
            ...(standby ? { standbyVm: standby.vm } : {}),
          };
          return result;
        });
        await cleanup(vmTarget, stages, setState);
        status.exitCode = done.exitCode;
        setState(done.state);
        return done;
      } catch (e) {
        // A host that left the pool between the grant and a step answers UnknownHost before the pool's revoke
        // arrives (it is on its way): wait for it, and run again elsewhere, instead of failing the job (issue #22,
        // found by the chaos soak). Patched: histories from before failed here.
        if (
          leases.revoked === undefined &&
          !CancellationScope.current().consideredCancelled &&
          hostLeftPool(e) &&
          patched('job-waits-for-revoke')
        )
          await condition(() => leases.revoked !== undefined, '2m');
        if (leases.revoked !== undefined && !CancellationScope.current().consideredCancelled) {
          // Whatever the on-host step failed with (cancelled, or its SSH cut), the host and the
          // VM on it are gone: nothing to clean. Ask the pool again.
          (status.hostsLost ??= []).push(`${host}: ${leases.revoked}`);
          continue;
        }
        // The job's own failure is what the caller needs to see; a cleanup failure must not mask it.
        await cleanup(vmTarget, stages, setState).catch(() => undefined);
        throw e;
      }
    }
  } catch (e) {
    status.error = e instanceof Error ? e.message : String(e);
    // A job cancelled while its step's worker died sees that step end in a timeout, not a cancel (a step whose
    // cancel was asked is not retried): it was still cancelled. Patched: such histories from before failed.
    const cancelled =
      isCancellation(e) || (CancellationScope.current().consideredCancelled && patched('cancelled-job-ends-cancelled'));
    setState(cancelled ? 'cancelled' : 'error');
    if (cancelled && !isCancellation(e)) throw new CancelledFailure(`job ${spec.id} cancelled: ${status.error}`);
    throw e;
  } finally {
    // Returning the lease must happen even when the job is cancelled.
    await leases.release(fetchedOn && fetchedOn === leases.lease?.host ? imageCacheName(image.digest) : undefined);
  }
}

/** An on-host step refused because the host is not (or no longer) in the pool. */
function hostLeftPool(e: unknown): boolean {
  return e instanceof ActivityFailure && e.cause instanceof ApplicationFailure && e.cause.type === 'UnknownHost';
}

async function cleanup(
  target: { pool: string; host: string; vm: string; jobId: string },
  stages: Partial<Record<Stage, number>>,
  setState: (s: JobState) => void,
): Promise<void> {
  const destroyVm = withOptions(
    'destroyVm',
    untilGone({
      startToCloseTimeout: '5m',
      retry: { ...retry, maximumInterval: '1m' },
      scheduleToCloseTimeout: '2h',
    }),
  );
  await CancellationScope.nonCancellable(async () => {
    setState('cleaning');
    const start = Date.now();
    await destroyVm(`destroy ${target.vm} on ${target.host}`, target);
    stages.cleanup = Date.now() - start;
  });
}
