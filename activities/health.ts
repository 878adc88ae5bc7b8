/** Host health (SSH + hypervisor answers) and lease bookkeeping for the pool workflow. */
import { WorkflowNotFoundError } from '@temporalio/client';
import type { ActivityContext, HostRef } from './context';
import { isJobVm } from '../src/domain/job';

const HEALTH_BOUND_MS = 15_000;

export function healthActivities(ctx: ActivityContext) {
  return {
    /** SSH + hypervisor answer, and the job VMs present (so the pool can reap those no lease owns). */
    async checkHostHealth(
      target: HostRef,
    ): Promise<{ ok: boolean; error?: string; version?: string; jobVms?: string[]; images?: string[] }> {
      let bound: NodeJS.Timeout | undefined;
      try {
        // Connecting is inside the bound: a host that accepts TCP and never answers must not hold the
        // check longer. The SSH handshake gives up first (HOST_HANDSHAKE_TIMEOUT_MS), with the better error.
        const answer = async () => {
          const driver = await ctx.driver(target);
          return { version: await driver.version(), vms: await driver.list() };
        };
        const { version, vms } = await Promise.race([
          answer(),
          new Promise<never>((_, reject) => {
            bound = setTimeout(() => reject(new Error('host did not answer in 15 s')), HEALTH_BOUND_MS);
          }),
        ]);
        return {
          ok: true,
          version,
          jobVms: vms.map((v) => v.name).filter(isJobVm),
          images: vms.map((v) => v.name).filter((n) => n.startsWith('marina-img-')),
        };
      } catch (e) {
        ctx.ssh.drop(`host ${target.pool}/${target.host}`);
        return { ok: false, error: (e as Error).message };
      } finally {
        clearTimeout(bound);
      }
    },

    /** Which of these workflows have closed (or never existed): their leases are reclaimed. */
    async findClosedWorkflows(ids: string[]): Promise<string[]> {
      return closedWorkflows(ctx, ids);
    },
  };
}

/** Shared with the host watch (activities/watch.ts), which looks for its host's orphaned job VMs. */
export async function closedWorkflows(ctx: ActivityContext, ids: string[]): Promise<string[]> {
  const client = ctx.temporal;
  if (!client) return [];
  const closed: string[] = [];
  let next = 0;
  // A pool with thousands of queued jobs asks about all of them: 32 at a time, not thousands at once.
  const lane = async () => {
    while (next < ids.length) {
      const id = ids[next++]!;
      try {
        const d = await client.workflow.getHandle(id).describe();
        if (d.status.name !== 'RUNNING') closed.push(id);
      } catch (e) {
        // Only a definite "no such workflow" counts: an unreachable server must not make VMs look orphaned.
        if (e instanceof WorkflowNotFoundError) closed.push(id);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(32, ids.length) }, lane));
  return closed;
}
