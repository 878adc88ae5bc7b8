/**
 * The reconciler: run by a Temporal Schedule (`reconcile/<pool>`, every few minutes), it
 * compares what EC2 holds for an AWS pool with the host workflows that own it, adopts
 * orphan hosts (a host workflow retires and releases them) and terminates orphan
 * instances. Its result and details say what it found and did.
 */
import { proxyActivities, setCurrentDetails } from '@temporalio/workflow';
import type { Activities } from '../activities/types';
import type { ReconcileReport } from '../activities/reconcile';

export interface ReconcilerInput {
  pool: string;
  taskQueue: string;
  timeScale: number;
  pollSeconds: number;
}

const { reconcileHosts } = proxyActivities<Activities>({
  startToCloseTimeout: '5m',
  retry: { maximumAttempts: 3 },
  summary: 'compare EC2 with host workflows',
});

export const reconcileScheduleId = (pool: string): string => `reconcile/${pool}`;

export async function reconcilerWorkflow(input: ReconcilerInput): Promise<ReconcileReport> {
  const report = await reconcileHosts(input);
  const acted = report.actions.filter((a) => a.action !== 'none');
  setCurrentDetails(
    `pool **${input.pool}**: ${report.hosts} host(s), ${report.instances} instance(s) tagged by Marina; ` +
      (acted.length === 0
        ? 'every one owned by a running host workflow'
        : acted.map((a) => `${a.action} ${a.resource} (owner ${a.owner ?? 'none'} is ${a.ownerStatus})`).join('; ')),
  );
  return report;
}
