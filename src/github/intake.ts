/**
 * What Marina does with a GitHub job event, from a webhook or from the missed-jobs scan alike:
 * `queued` starts one job workflow (id from GitHub's job id, so a second delivery starts nothing);
 * `completed` cancels that workflow if it is still waiting for a slot (no runner exists yet).
 * Needs only a Temporal client and the config: no GitHub credential.
 */
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { LoadedConfig } from '../config/load';
import { jobWorkflowId } from '../domain/job';
import { JobIdTakenError, startJob } from '../client/jobs';
import { SA_JOB_STATE } from '../../workflows/definitions';
import { planGithubJob } from './plan';
import { githubMarinaJobId, type GithubJobEvent } from './types';

export type IntakeOutcome =
  | { outcome: 'started'; jobId: string; pool: string }
  | { outcome: 'duplicate'; jobId: string }
  | { outcome: 'ignored'; reason: string }
  | { outcome: 'cancelled'; jobId: string }
  | { outcome: 'none'; reason: string };

/** States in which a job holds no runner registration yet: cancelling it leaves nothing on GitHub. */
const BEFORE_RUNNER = new Set(['validating', 'queued', 'fetching', 'booting']);

export async function handleGithubJobEvent(
  client: Client,
  config: LoadedConfig,
  ev: GithubJobEvent,
): Promise<IntakeOutcome> {
  if (ev.action === 'queued') {
    const plan = planGithubJob(config, ev);
    if ('ignored' in plan) return { outcome: 'ignored', reason: plan.ignored };
    try {
      // The image is checked by the workflow: a webhook is answered within GitHub's 10 s.
      await startJob(client, config, plan.spec, { checkImage: false });
      return { outcome: 'started', jobId: plan.spec.id, pool: plan.spec.pool };
    } catch (e) {
      if (e instanceof JobIdTakenError) return { outcome: 'duplicate', jobId: plan.spec.id };
      throw e;
    }
  }
  if (ev.action === 'completed') {
    const id = githubMarinaJobId(ev.jobId);
    const handle = client.workflow.getHandle(jobWorkflowId(id));
    try {
      const d = await handle.describe();
      const state = d.typedSearchAttributes.get(SA_JOB_STATE);
      if (d.status.name !== 'RUNNING') return { outcome: 'none', reason: `job ${id} has ended` };
      if (!state || !BEFORE_RUNNER.has(state))
        // Its runner exists: the run step sees the job is no longer queued and removes it (activities/github.ts).
        return { outcome: 'none', reason: `job ${id} is ${state ?? 'running'}; its run step cleans up` };
      await handle.cancel();
      return { outcome: 'cancelled', jobId: id };
    } catch (e) {
      if (e instanceof WorkflowNotFoundError) return { outcome: 'none', reason: `no job ${id}` };
      throw e;
    }
  }
  return { outcome: 'none', reason: `action ${ev.action} needs nothing` };
}

/** The event a `workflow_job` webhook payload describes, or a reason it is not one Marina reads. */
export function eventFromPayload(payload: unknown): GithubJobEvent | string {
  const p = payload as {
    action?: unknown;
    workflow_job?: { id?: unknown; run_id?: unknown; labels?: unknown };
    repository?: { full_name?: unknown };
  } | null;
  const j = p?.workflow_job;
  if (typeof p?.action !== 'string' || !j) return 'not a workflow_job payload';
  if (typeof j.id !== 'number' || !Number.isSafeInteger(j.id)) return 'workflow_job.id is not an integer';
  if (typeof p.repository?.full_name !== 'string') return 'repository.full_name is missing';
  const labels = Array.isArray(j.labels) ? j.labels.filter((l): l is string => typeof l === 'string') : [];
  return {
    action: p.action,
    jobId: j.id,
    runId: typeof j.run_id === 'number' ? j.run_id : 0,
    repository: p.repository.full_name,
    labels,
  };
}
