/**
 * The reconciler's one activity: compare what EC2 holds for a pool (hosts and instances
 * tagged by Marina) with the host workflows that should own them, and deal with orphans.
 * An orphan host (its workflow closed or missing) is adopted by a new host workflow that
 * retires it, which releases it as soon as AWS allows; an orphan instance on no live
 * host workflow is terminated. Safe to run any number of times, concurrently with itself.
 */
import { DescribeHostsCommand, DescribeInstancesCommand, TerminateInstancesCommand } from '@aws-sdk/client-ec2';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { ActivityContext } from './context';
import { TAG_POOL, TAG_WORKFLOW } from './ec2';

export interface ReconcileAction {
  resource: string;
  owner?: string;
  ownerStatus: string;
  action: 'none' | 'adopted' | 'terminated';
  detail?: string;
}

export interface ReconcileReport {
  pool: string;
  hosts: number;
  instances: number;
  actions: ReconcileAction[];
}

async function ownerStatus(client: Client, workflowId: string | undefined): Promise<string> {
  if (!workflowId) return 'untagged';
  try {
    return (await client.workflow.getHandle(workflowId).describe()).status.name;
  } catch (e) {
    if (e instanceof WorkflowNotFoundError) return 'NOT_FOUND';
    throw e;
  }
}

export function reconcileActivities(ctx: ActivityContext) {
  return {
    async reconcileHosts(input: {
      pool: string;
      taskQueue: string;
      timeScale: number;
      pollSeconds: number;
    }): Promise<ReconcileReport> {
      const client = ctx.temporal;
      if (!client)
        throw ApplicationFailure.create({ message: 'the reconciler needs a Temporal client', nonRetryable: true });
      const ec2 = ctx.ec2(input.pool);
      const byPool = { Name: `tag:${TAG_POOL}`, Values: [input.pool] };
      const hosts =
        (
          await ec2.send(
            new DescribeHostsCommand({
              Filter: [
                byPool,
                { Name: 'state', Values: ['available', 'pending', 'under-assessment', 'permanent-failure'] },
              ],
            }),
          )
        ).Hosts ?? [];
      const instances =
        (
          await ec2.send(
            new DescribeInstancesCommand({
              Filters: [byPool, { Name: 'instance-state-name', Values: ['pending', 'running', 'stopping', 'stopped'] }],
            }),
          )
        ).Reservations?.flatMap((r) => r.Instances ?? []) ?? [];
      const report: ReconcileReport = {
        pool: input.pool,
        hosts: hosts.length,
        instances: instances.length,
        actions: [],
      };
      const tag = (tags: { Key?: string; Value?: string }[] | undefined, k: string) =>
        tags?.find((t) => t.Key === k)?.Value;

      for (const h of hosts) {
        const owner = tag(h.Tags, TAG_WORKFLOW);
        const status = await ownerStatus(client, owner);
        if (status === 'RUNNING') {
          report.actions.push({ resource: h.HostId!, owner, ownerStatus: status, action: 'none' });
          continue;
        }
        // Adopt: a host workflow of its own retires it and releases it when AWS allows.
        const adopter = `host/${input.pool}/adopted-${h.HostId}`;
        const allocatedAt = (h.AllocationTime?.getTime() ?? 0) / 1000;
        const instanceId = h.Instances?.[0]?.InstanceId;
        try {
          await client.workflow.start('hostWorkflow', {
            taskQueue: input.taskQueue,
            workflowId: adopter,
            args: [
              {
                pool: input.pool,
                timeScale: input.timeScale,
                pollSeconds: input.pollSeconds,
                life: {
                  phase: 'retiring',
                  hostId: h.HostId,
                  zone: h.AvailabilityZone,
                  allocatedAt,
                  instanceId,
                  generation: 0,
                  draining: true,
                  releaseAttempts: 0,
                  ...(ctx.ec2Now(input.pool) !== undefined
                    ? { ageAtAdoptionSeconds: ctx.ec2Now(input.pool)! - allocatedAt }
                    : {}),
                  retireReason: `adopted by the reconciler: owner ${owner ?? '(untagged)'} is ${status}`,
                },
              },
            ],
          });
        } catch (e) {
          if (!(e instanceof WorkflowExecutionAlreadyStartedError)) throw e;
        }
        report.actions.push({ resource: h.HostId!, owner, ownerStatus: status, action: 'adopted', detail: adopter });
      }

      const ownedHosts = new Set(hosts.map((h) => h.HostId));
      for (const i of instances) {
        const owner = tag(i.Tags, TAG_WORKFLOW);
        const status = await ownerStatus(client, owner);
        // An instance on a host we hold is the adopter's to terminate; others with no live owner go now.
        if (status === 'RUNNING' || ownedHosts.has(i.Placement?.HostId)) continue;
        await ec2.send(new TerminateInstancesCommand({ InstanceIds: [i.InstanceId!] }));
        report.actions.push({ resource: i.InstanceId!, owner, ownerStatus: status, action: 'terminated' });
      }
      return report;
    },
  };
}
