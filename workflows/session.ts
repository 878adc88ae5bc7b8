/**
 * The job workflow in session mode: lease a slot, fetch the image, boot the VM, then take the CI
 * system's stages one by one as steps (the `runStep` update) until the CI closes the session
 * (`closeSession`), goes quiet for the idle timeout, or the workflow is cancelled. Then the VM is
 * destroyed and the lease returned, whatever happened.
 *
 * Each step is the job's detached, re-attachable script run (the `runScript` activity): a worker
 * killed mid-step re-attaches to the script running on in the VM. A stage sent again (an executor
 * process killed and started again) attaches to the step already running or done: a step is keyed
 * by job id + stage, and only a step that ended in a system failure is run again (as attempt 2, …).
 */
import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  allHandlersFinished,
  condition,
  isCancellation,
  setCurrentDetails,
  sleep,
  upsertSearchAttributes,
  type ActivityOptions,
} from '@temporalio/workflow';
import { setDescribedHandler } from './handlers';
import { NON_RETRYABLE, untilGone, withOptions } from './activity-call';
import { LeaseClient } from './lease';
import { imageCacheName, vmNameForJob, type JobSpec } from '../src/domain/job';
import type { Lease } from '../src/domain/pool';
import {
  MAX_SESSION_STEPS,
  STAGE_PATTERN,
  SessionSpecError,
  normalizeSessionSpec,
  stepId,
  type SessionSpec,
} from '../src/domain/session';
import {
  SA_HOST,
  SA_JOB_STATE,
  closeSessionUpdate,
  jobStatusQuery,
  runStepUpdate,
  sessionQuery,
  type JobState,
  type LeaseRequestMsg,
  type SessionView,
  type StepRequest,
  type StepResult,
} from './definitions';

type Step = SessionView['steps'][number] & { request: StepRequest };

// A session answers its CI: a host that stays unreachable must end in a system failure within
// about a minute, not be retried for hours as a plain job's fetch is. A killed worker's attempt
// (heartbeat timeout) is one of these attempts, so there are enough for a few crashes.
const retry = {
  initialInterval: '1s',
  backoffCoefficient: 2,
  maximumInterval: '10s',
  maximumAttempts: 8,
  nonRetryableErrorTypes: NON_RETRYABLE,
};
const HEARTBEAT = '10s';

/** The job workflow's session path (workflows/job.ts chooses it by input). */
export async function sessionJob(input: SessionSpec): Promise<SessionView> {
  let spec: SessionSpec;
  try {
    spec = normalizeSessionSpec(input);
  } catch (e) {
    if (e instanceof SessionSpecError)
      throw ApplicationFailure.create({
        message: e.message,
        type: 'InvalidJobSpec',
        nonRetryable: true,
        details: [e.errors],
      });
    throw e;
  }
  const view: SessionView = { jobId: spec.id, state: 'opening', phase: 'resolving the image', steps: [] };
  const steps: Step[] = [];
  const queue: Step[] = [];
  let closing: string | undefined;
  let stepScope: CancellationScope | undefined;
  let openScope: CancellationScope | undefined;
  let lost: string | undefined;

  const jobState = (): JobState =>
    (
      ({
        opening: 'queued',
        ready: 'running',
        running: 'running',
        closing: 'cleaning',
        closed: 'succeeded',
        failed: 'error',
      }) as const
    )[view.state];
  const show = () => {
    view.steps = steps.map(({ request: _request, ...s }) => s);
    setCurrentDetails(
      `**session ${view.state}** · ${view.phase}${view.host ? ` · ${view.host}` : ''}` +
        (steps.length
          ? `\n\nsteps: ${steps.map((s) => `${s.stage}${s.exitCode !== undefined ? ` ${s.exitCode}` : s.systemError ? ' system-failure' : ` ${s.state}`}`).join(' · ')}`
          : '') +
        (view.error ? `\n\nerror: ${view.error}` : ''),
    );
  };
  const setState = (state: SessionView['state'], phase: string) => {
    const before = jobState();
    view.state = state;
    view.phase = phase;
    if (jobState() !== before) upsertSearchAttributes([{ key: SA_JOB_STATE, value: jobState() }]);
    show();
  };
  setDescribedHandler(sessionQuery, () => view);
  // `marina job show` and `job list` read a job's status: a session answers in the same shape.
  setDescribedHandler(jobStatusQuery, () => ({
    spec: { ...spec, script: '(session: steps)', timeoutSeconds: spec.session.stepTimeoutSeconds } as JobSpec,
    state: jobState(),
    ...(view.host ? { host: view.host } : {}),
    stages: {},
    logPrefix: '',
    ...(view.error ? { error: view.error } : {}),
  }));

  const result = ({ request: _request, ...s }: Step): StepResult => s;
  setDescribedHandler(
    runStepUpdate,
    async (req) => {
      const last = [...steps].reverse().find((s) => s.stage === req.stage);
      let step = last;
      // Sent again while it runs, or after it ended: the same step (nothing runs twice). Only a
      // system failure (Marina's or the host's, not the script's) is worth running again.
      if (!step || (step.state === 'done' && step.systemError !== undefined)) {
        const attempt = (last?.attempt ?? 0) + 1;
        step = { stage: req.stage, attempt, logId: stepId(spec.id, req.stage, attempt), state: 'queued', request: req };
        steps.push(step);
        queue.push(step);
        show();
      }
      const mine = step;
      await condition(() => mine.state === 'done');
      return result(mine);
    },
    {
      // Refused before it is recorded: a refusal costs the session's history nothing.
      validator: (req) => {
        if (typeof req?.stage !== 'string' || !STAGE_PATTERN.test(req.stage))
          throw new Error(
            `stage ${JSON.stringify(req?.stage)}: must be lower-case letters, digits and "_" (e.g. build_script)`,
          );
        const s = req.script;
        if (typeof s?.bucket !== 'string' || typeof s.key !== 'string' || !/^[0-9a-f]{64}$/.test(s.sha256 ?? ''))
          throw new Error(
            'script: must be { bucket, key, sha256 } (where `marina gitlab run` stored the stage script)',
          );
        if (closing !== undefined || view.state === 'closing' || view.state === 'closed' || view.state === 'failed')
          throw new Error(
            `session ${spec.id} is ${view.state}${closing ? ` (${closing})` : ''}: it takes no more steps`,
          );
        if (steps.length >= MAX_SESSION_STEPS && !steps.some((x) => x.stage === req.stage))
          throw new Error(`session ${spec.id} has taken ${MAX_SESSION_STEPS} steps, the most one session takes`);
      },
    },
  );
  setDescribedHandler(closeSessionUpdate, async ({ reason }) => {
    closing ??= typeof reason === 'string' && reason ? reason.slice(0, 200) : 'closed';
    // A step still running is stopped (its script killed) before the VM goes; so is an opening.
    stepScope?.cancel();
    openScope?.cancel();
    await condition(() => view.state === 'closed' || view.state === 'failed');
    return view;
  });

  const leases = new LeaseClient(spec.pool);
  leases.onRevoked = () => {
    lost = leases.revoked;
    stepScope?.cancel();
    openScope?.cancel();
  };
  let fetchedOn: string | undefined;
  let cacheName: string | undefined;
  let vmTarget: { pool: string; host: string; vm: string; jobId: string; vmHostKey?: string } | undefined;
  let failure: unknown;
  openScope = new CancellationScope();
  // A close that came before this point (cleanup right after a killed prepare) ends the opening at once.
  if (closing !== undefined) openScope.cancel();
  try {
    // Cancelled by a closeSession (the CI gave up during prepare) or a revoked lease.
    const { ip, vm } = await openScope.run(async () => {
      const image = await withOptions('resolveImage', { startToCloseTimeout: '1m', retry })(
        `resolve ${spec.image}`,
        spec.image,
      );
      cacheName = imageCacheName(image.digest);
      setState('opening', `queued for a slot in pool ${spec.pool}`);
      const lease = await acquireWithin(
        leases,
        {
          resources: spec.resources ?? { vm: 1 },
          labels: spec.labels ?? {},
          image: cacheName,
          imageRef: image.ref,
          ...(spec.client ? { client: spec.client } : {}),
        },
        spec.session.queueTimeoutSeconds,
      );
      if (!lease)
        throw ApplicationFailure.create({
          message: `no slot in pool ${spec.pool} within ${spec.session.queueTimeoutSeconds} s (its hosts are busy or unreachable: \`marina pool show ${spec.pool}\`)`,
          type: 'NoSlot',
          nonRetryable: true,
        });
      view.host = lease.host;
      upsertSearchAttributes([{ key: SA_HOST, value: lease.host }]);
      const vm = vmNameForJob(spec.id);
      view.vm = vm;
      const vmRef = {
        pool: spec.pool,
        host: lease.host,
        vm,
        jobId: spec.id,
        ...(image.vmHostKey ? { vmHostKey: image.vmHostKey } : {}),
      };
      const target = { pool: spec.pool, host: lease.host };

      setState('opening', `fetching ${image.ref} on ${lease.host}`);
      await withOptions('ensureImage', { startToCloseTimeout: '4h', heartbeatTimeout: HEARTBEAT, retry })(
        `fetch ${image.ref} on ${lease.host}`,
        target,
        image,
      );
      fetchedOn = lease.host;
      // From here on a VM may exist, and cleanup destroys it. Before, there is none: a host that could not
      // even fetch (unreachable) is not also kept waiting on a destroy that cannot reach it.
      vmTarget = vmRef;
      setState('opening', `booting ${vm} on ${lease.host}`);
      const { ip } = await withOptions('bootVm', {
        startToCloseTimeout: '20m',
        heartbeatTimeout: HEARTBEAT,
        retry,
        // A boot cut short must end before the VM is destroyed, or it could start the VM after the destroy.
        cancellationType: 'WAIT_CANCELLATION_COMPLETED' as ActivityOptions['cancellationType'],
      })(`boot ${vm} on ${lease.host}`, vmRef, image, spec.resources ?? {}, lease.volumes ?? [], lease.runArgs ?? []);
      return { ip, vm };
    });
    openScope = undefined;
    setState('ready', `${vm} on ${view.host} is up; waiting for a step`);

    const runScript = withOptions('runScript', {
      startToCloseTimeout: `${spec.session.stepTimeoutSeconds + 600}s`,
      heartbeatTimeout: HEARTBEAT,
      retry,
      // The activity kills the script before cleanup destroys the VM under it.
      cancellationType: 'WAIT_CANCELLATION_COMPLETED' as ActivityOptions['cancellationType'],
    });
    for (;;) {
      // Quiet for the idle timeout with no step running: the CI side is gone (its runner died).
      const woke = await condition(
        () => queue.length > 0 || closing !== undefined || lost !== undefined,
        `${spec.session.idleTimeoutSeconds}s`,
      );
      if (lost !== undefined) throw hostLost(lost);
      if (closing !== undefined) break;
      if (!woke) {
        closing = 'idle-timeout';
        break;
      }
      const step = queue.shift()!;
      step.state = 'running';
      setState('running', `running ${step.stage}`);
      stepScope = new CancellationScope();
      try {
        const r = await stepScope.run(() =>
          runScript(
            `${step.stage} in ${vm}`,
            { ...vmTarget!, ip },
            {
              id: step.logId,
              script: '',
              scriptRef: step.request.script,
              env: {},
              secrets: {},
              timeoutSeconds: spec.session.stepTimeoutSeconds,
            },
          ),
        );
        step.exitCode = r.exitCode;
        step.timedOut = r.timedOut;
        step.log = r.log;
      } catch (e) {
        if (isCancellation(e) && CancellationScope.current().consideredCancelled) throw e;
        step.systemError =
          lost !== undefined
            ? `host lost: ${lost}`
            : closing !== undefined
              ? `stopped: the session was closed (${closing}) while ${step.stage} ran`
              : errorMessage(e);
      } finally {
        stepScope = undefined;
        step.state = 'done';
        if (view.state === 'running') setState('ready', `${step.stage} done; waiting for the next step`);
        show();
      }
    }
  } catch (e) {
    if (lost !== undefined) failure = hostLost(lost);
    // Closed while it was opening: a normal end, not a failure.
    else if (!(isCancellation(e) && closing !== undefined && !CancellationScope.current().consideredCancelled))
      failure = e;
  }

  // Whatever ended the session: no step left waiting, the VM destroyed, the lease returned.
  const why = failure === undefined ? undefined : isCancellation(failure) ? 'cancelled' : errorMessage(failure);
  for (const s of queue.splice(0)) {
    s.state = 'done';
    s.systemError = `not run: the session ended (${closing ?? why})`;
  }
  view.closedBy = closing ?? (why === 'cancelled' ? 'cancelled' : undefined);
  if (why && why !== 'cancelled') view.error = why;
  setState('closing', vmTarget ? `destroying ${vmTarget.vm}` : 'returning the lease');
  await CancellationScope.nonCancellable(async () => {
    if (vmTarget)
      await withOptions(
        'destroyVm',
        untilGone({
          startToCloseTimeout: '5m',
          retry: {
            initialInterval: '1s',
            backoffCoefficient: 2,
            maximumInterval: '1m',
            nonRetryableErrorTypes: NON_RETRYABLE,
          },
          scheduleToCloseTimeout: '2h',
        }),
      )(`destroy ${vmTarget.vm} on ${vmTarget.host}`, vmTarget).catch((e: unknown) => {
        view.error = `${view.error ? `${view.error}; ` : ''}destroy failed: ${errorMessage(e)} (the host's watch reaps it)`;
      });
    await withOptions('deleteSessionScripts', { startToCloseTimeout: '1m', retry })(
      `delete ${spec.id}'s stage scripts`,
      spec.id,
    ).catch(
      // Left behind, they are what the bucket's lifecycle rule is for (README).
      () => undefined,
    );
    await leases.release(fetchedOn && fetchedOn === leases.lease?.host ? cacheName : undefined);
  });
  setState(failure === undefined || why === 'cancelled' ? 'closed' : 'failed', view.closedBy ?? why ?? 'closed');
  // Callers waiting on runStep or closeSession get their answer before the workflow ends.
  await condition(allHandlersFinished);
  if (failure !== undefined) throw failure;
  return view;
}

/** Waits for a lease at most `seconds`; undefined if none came (the request is withdrawn by the release). */
async function acquireWithin(
  leases: LeaseClient,
  request: Omit<LeaseRequestMsg, 'jobWorkflowId'>,
  seconds: number,
): Promise<Lease | undefined> {
  const timerScope = new CancellationScope();
  const acquireScope = new CancellationScope();
  let late = false;
  const timer = timerScope
    .run(() => sleep(`${seconds}s`))
    .then(
      () => {
        late = true;
        acquireScope.cancel();
      },
      () => undefined,
    );
  try {
    return await acquireScope.run(() => leases.acquire(request));
  } catch (e) {
    if (late && isCancellation(e) && !CancellationScope.current().consideredCancelled) return undefined;
    throw e;
  } finally {
    timerScope.cancel();
    await timer;
  }
}

const hostLost = (reason: string) =>
  ApplicationFailure.create({
    message: `the session's host was lost (${reason}); its VM went with it`,
    type: 'HostLost',
    nonRetryable: true,
  });

function errorMessage(e: unknown): string {
  if (e instanceof ActivityFailure && e.cause) return e.cause.message;
  return e instanceof Error ? e.message : String(e);
}
