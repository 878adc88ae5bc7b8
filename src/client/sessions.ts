/**
 * The client side of a session (the job workflow in session mode): open it, wait until its VM is up,
 * send it steps and follow their output, close it. What `marina gitlab prepare|run|cleanup` use.
 */
import { failureText } from './failure-text';
import { createHash } from 'node:crypto';
import {
  WorkflowFailedError,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
  type Client,
  type WorkflowHandle,
} from '@temporalio/client';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { jobWorkflowId } from '../domain/job';
import { normalizeSessionSpec, type SessionSpec } from '../domain/session';
import { checkSecurity } from '../domain/security';
import { findPool, logsLocation, type LoadedConfig } from '../config/load';
import { s3ClientFor } from '../config/s3';
import { ChunkedStore } from '../images/chunked/store';
import { scriptKey } from '../logs/script-keys';
import { followLog } from './jobs';
import {
  SA_CLIENT,
  SA_IMAGE,
  SA_JOB_STATE,
  SA_POOL,
  closeSessionUpdate,
  poolStateQuery,
  poolWorkflowId,
  runStepUpdate,
  sessionQuery,
  type SessionView,
  type StepResult,
} from '../../workflows/definitions';

/** The job workflow as a session's caller sees it (workflows/job.ts takes its session path on this input). */
export type SessionWorkflow = (spec: SessionSpec) => Promise<SessionView>;

/** The session's request cannot be run as asked (an image the pool does not allow, an unknown pool): fix the job. */
export class SessionRefused extends Error {
  override name = 'SessionRefused';
}
/** Marina or the host failed the session: retrying (a new prepare) may work. */
export class SessionFailed extends Error {
  override name = 'SessionFailed';
}

/** Refuses what can be refused before anything starts: the pool, the image (allowed? in the store?). */
export async function checkSessionSpec(config: LoadedConfig, input: SessionSpec): Promise<SessionSpec> {
  let spec: SessionSpec;
  try {
    spec = normalizeSessionSpec(input);
  } catch (e) {
    throw new SessionRefused((e as Error).message);
  }
  const pool = findPool(config, spec.pool);
  if (!pool)
    throw new SessionRefused(
      `unknown pool "${spec.pool}"; configured pools: ${config.pools.map((p) => p.name).join(', ')} (the --pool of prepare_args in config.toml)`,
    );
  const verdict = checkSecurity(pool.name, pool.security, { image: spec.image });
  if (verdict.violations.length) throw new SessionRefused(verdict.violations.join('; '));
  const s3 = s3ClientFor(config, config.imageStore);
  try {
    const store = new ChunkedStore(s3, config.imageStore);
    if (!(await store.resolve(spec.image))) {
      const known = (await store.tags()).map((t) => t.ref);
      throw new SessionRefused(`unknown image "${spec.image}"; the store has: ${known.join(', ') || '(none)'}`);
    }
  } finally {
    s3.destroy();
  }
  return spec;
}

/**
 * Starts the session, or attaches to the one running under this job id (a prepare run again after its
 * process was killed). A session that failed may be opened again (GitLab retries a failed prepare).
 */
export async function openSession(
  client: Client,
  config: LoadedConfig,
  input: SessionSpec,
): Promise<{ handle: WorkflowHandle<SessionWorkflow>; started: boolean }> {
  const spec = await checkSessionSpec(config, input);
  const handle = await client.workflow.start<SessionWorkflow>('jobWorkflow', {
    workflowId: jobWorkflowId(spec.id),
    taskQueue: config.temporal.taskQueue,
    args: [spec],
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: 'ALLOW_DUPLICATE_FAILED_ONLY',
    typedSearchAttributes: [
      { key: SA_POOL, value: spec.pool },
      { key: SA_IMAGE, value: spec.image },
      { key: SA_JOB_STATE, value: 'queued' },
      ...(spec.client ? [{ key: SA_CLIENT, value: spec.client }] : []),
    ],
    staticSummary: `session: ${spec.image} on ${spec.pool}${spec.client ? ` for ${spec.client}` : ''}`,
  });
  const d = await handle.describe();
  return { handle, started: d.runId === handle.firstExecutionRunId && d.status.name === 'RUNNING' };
}

/** Why a session's workflow ended in failure, in one line. */
async function failureOf(handle: WorkflowHandle<SessionWorkflow>): Promise<string> {
  try {
    const v = await handle.result();
    return `session ${v.jobId} is ${v.state}${v.closedBy ? ` (${v.closedBy})` : ''}`;
  } catch (e) {
    if (e instanceof WorkflowFailedError && e.cause) return failureText(e.cause);
    return failureText(e);
  }
}

/** Waits until the VM is up, telling each new phase (queued, fetching, booting); fails with the session's reason. */
export async function waitReady(
  handle: WorkflowHandle<SessionWorkflow>,
  onPhase: (phase: string) => void,
  pollMs = 500,
): Promise<SessionView> {
  let last = '';
  for (;;) {
    const d = await handle.describe();
    if (d.status.name !== 'RUNNING') throw await sessionEnded(handle);
    const v = await handle.query(sessionQuery).catch((e: unknown) => {
      // The first workflow task may not have run yet: the query has no handler until it has.
      if (String((e as Error).message).includes('unknown queryType')) return undefined;
      throw e;
    });
    if (v && v.phase !== last) onPhase((last = v.phase));
    if (v && (v.state === 'ready' || v.state === 'running')) return v;
    if (v && (v.state === 'closed' || v.state === 'failed' || v.state === 'closing'))
      throw new SessionFailed(`session ${v.jobId} is ${v.state}${v.error ? `: ${v.error}` : ''}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** The session's end as an error: refused (the job's fault) or failed (Marina's). */
async function sessionEnded(handle: WorkflowHandle<SessionWorkflow>): Promise<Error> {
  const why = await failureOf(handle);
  return /refused by pool|InvalidJobSpec|is not allowed in pool|ImageNotFound|unknown image/.test(why)
    ? new SessionRefused(why)
    : new SessionFailed(why);
}

/**
 * Sends one stage as a step and streams its output to `write` while it runs. A stage already running
 * or done in the session is attached to (its output streamed from the start), not run again.
 */
export async function runSessionStep(
  client: Client,
  config: LoadedConfig,
  jobId: string,
  stage: string,
  script: Buffer,
  write: (b: Buffer) => void,
): Promise<StepResult> {
  const handle = client.workflow.getHandle<SessionWorkflow>(jobWorkflowId(jobId));
  const d = await handle.describe().catch((e: unknown) => {
    if (e instanceof WorkflowNotFoundError)
      throw new SessionFailed(`no session ${jobId} (workflow ${jobWorkflowId(jobId)}): did prepare run for this job?`);
    throw e;
  });
  if (d.status.name !== 'RUNNING') throw await sessionEnded(handle);

  const loc = logsLocation(config);
  const sha256 = createHash('sha256').update(script).digest('hex');
  const key = scriptKey(loc, jobId, stage, sha256);
  const s3 = s3ClientFor(config, loc);
  try {
    await s3.send(new PutObjectCommand({ Bucket: loc.bucket, Key: key, Body: script }));
  } finally {
    s3.destroy();
  }

  let update;
  try {
    update = await handle.startUpdate(runStepUpdate, {
      args: [{ stage, script: { bucket: loc.bucket, key, sha256 } }],
      waitForStage: 'ACCEPTED',
    });
  } catch (e) {
    if (e instanceof WorkflowUpdateFailedError) throw new SessionFailed(failureText(e.cause ?? e));
    if (e instanceof WorkflowNotFoundError) throw await sessionEnded(handle);
    throw e;
  }
  const done = update.result();
  // The step's log name: from the session's view, now that the update was accepted.
  const view = await handle.query(sessionQuery);
  const step = [...view.steps].reverse().find((s) => s.stage === stage);
  if (!step) throw new SessionFailed(`session ${jobId} accepted ${stage} but does not list it`);
  await followLog(config, { jobId: step.logId, runId: d.runId }, write, done);
  try {
    return await done;
  } catch (e) {
    if (e instanceof WorkflowUpdateFailedError) throw new SessionFailed(failureText(e.cause ?? e));
    throw new SessionFailed(`the session ended while ${stage} ran: ${await failureOf(handle)}`);
  }
}

/**
 * Closes the session: a running step is stopped, the VM destroyed, the lease returned. Resolves once
 * the workflow has done so (or at once, if there is no session or it has ended).
 */
export async function closeSession(client: Client, jobId: string, reason: string): Promise<SessionView | undefined> {
  const handle = client.workflow.getHandle<SessionWorkflow>(jobWorkflowId(jobId));
  const d = await handle.describe().catch((e: unknown) => {
    if (e instanceof WorkflowNotFoundError) return undefined;
    throw e;
  });
  if (!d || d.status.name !== 'RUNNING') return undefined;
  try {
    return await handle.executeUpdate(closeSessionUpdate, { args: [{ reason }] });
  } catch (e) {
    // It ended meanwhile (idle timeout, a cancel): nothing left to close.
    const now = await handle.describe();
    if (now.status.name !== 'RUNNING') return undefined;
    throw e;
  }
}

/**
 * Why a pool may have no slot for a session: its hosts that are cordoned or failing their health checks,
 * each with its last error (e.g. an unreachable host's SSH error). Empty if the pool cannot be asked.
 */
export async function unhealthyHosts(client: Client, pool: string): Promise<string[]> {
  try {
    const s = await client.workflow.getHandle(poolWorkflowId(pool)).query(poolStateQuery);
    return s.hosts
      .filter((h) => h.cordoned !== undefined || h.consecutiveHealthFailures > 0)
      .map(
        (h) =>
          `${h.name}: ${h.cordoned ? `cordoned (${h.cordoned})` : `${h.consecutiveHealthFailures} failed health check(s)`}` +
          `${h.lastHealthError ? `, ${h.lastHealthError}` : ''}`,
      );
  } catch {
    return [];
  }
}
