/** One Temporal Schedule per configured GitHub target: the safety net for missed webhooks. */
import { ScheduleAlreadyRunning, ScheduleOverlapPolicy, type Client } from '@temporalio/client';
import type { LoadedConfig } from '../config/load';
import type { GithubScanInput } from '../../workflows/github-scan';
import { scopeKey, type GithubScope } from './types';

export const githubScanScheduleId = (config: LoadedConfig, target: string): string =>
  `github-scan/${config.deployment}/${target}`;

export function githubTargets(config: LoadedConfig): GithubScope[] {
  return (config.github?.targets ?? []).map((t) =>
    'repository' in t ? { repository: t.repository } : { organization: t.organization },
  );
}

/** Creates each target's schedule, or updates it to the current config. */
export async function ensureGithubSchedules(client: Client, config: LoadedConfig): Promise<void> {
  const gh = config.github;
  if (!gh) return;
  for (const scope of githubTargets(config)) {
    const target = scopeKey(scope);
    const id = githubScanScheduleId(config, target);
    const input: GithubScanInput = { target };
    const options = {
      spec: { intervals: [{ every: `${gh.scanSeconds}s` as const }] },
      action: {
        type: 'startWorkflow' as const,
        workflowType: 'githubScanWorkflow',
        workflowId: id,
        taskQueue: config.temporal.taskQueue,
        args: [input],
      },
      // A scan still running when the next is due: the next is skipped, not queued.
      policies: { overlap: ScheduleOverlapPolicy.SKIP },
    };
    try {
      await client.schedule.create({ scheduleId: id, ...options });
    } catch (e) {
      if (!(e instanceof ScheduleAlreadyRunning)) throw e;
      await client.schedule.getHandle(id).update((prev) => ({ ...prev, ...options }));
    }
  }
}
