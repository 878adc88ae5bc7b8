/**
 * Started by a Temporal Schedule per GitHub target (src/github/schedule.ts): lists the target's queued
 * jobs and starts those the webhooks missed. Starting is by the job's own id, so a job a webhook already
 * started is not started again.
 */
import { proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/types';

export interface GithubScanInput {
  /** `repo/<owner>/<name>` or `org/<login>` (src/github/types.ts scopeKey). */
  target: string;
}

const { githubScanQueued } = proxyActivities<Activities>({
  startToCloseTimeout: '5m',
  heartbeatTimeout: '1m',
  retry: { initialInterval: '5s', maximumAttempts: 3, nonRetryableErrorTypes: ['ConfigError'] },
  summary: 'list queued GitHub jobs and start the missed ones',
});

export async function githubScanWorkflow(input: GithubScanInput): Promise<{ listed: number; started: number }> {
  return githubScanQueued(input.target);
}
