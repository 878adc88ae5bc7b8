/**
 * The reconciler's one activity: compare what EC2 holds for a pool (hosts and instances
 * tagged by Marina) with the host workflows that should own them, and deal with orphans.
 * An orphan host (its workflow closed or missing) is adopted by a new host workflow that
 * retires it, which releases it as soon as AWS allows; an orphan instance on no live
 * host workflow is terminated. Safe to run any number of times, concurrently with itself.
 *
 * Only this deployment's resources are touched: another Marina (staging beside production) in the same account
 * has pools of the same names and workflows of the same ids in its own Temporal, so pool and owner say nothing
 * of whose a resource is; the `marina:deployment` tag does. See `whose` for resources made before the tag.
 */
import {
  CreateTagsCommand,
  TerminateInstancesCommand,
  paginateDescribeHosts,
  paginateDescribeInstances,
  type Host,
  type Instance,
} from '@aws-sdk/client-ec2';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { ActivityContext } from './context';
import { TAG_DEPLOYMENT, TAG_POOL, TAG_WORKFLOW } from './ec2';

export interface ReconcileAction {
  resource: string;
  owner?: string;
  ownerStatus: string;
  /** `claimed`: made before the deployment tag, owned by a workflow running here: tagged as this deployment's. */
  action: 'none' | 'adopted' | 'terminated' | 'claimed';
  detail?: string;
}

export interface ReconcileReport {
  pool: string;
  deployment: string;
  hosts: number;
  instances: number;
  /** Resources of this pool's name tagged for another deployment: never touched. */
  foreign: number;
  actions: ReconcileAction[];
}

type Tags = { Key?: string; Value?: string }[] | undefined;
const tag = (tags: Tags, k: string): string | undefined => tags?.find((t) => t.Key === k)?.Value;

/**
 * Whose a resource is. Tagged: its tag says. Untagged (made before `marina:deployment` existed): this
 * deployment's if its owner workflow runs in this deployment's Temporal (the workflow ids are random per host,
 * so a running owner here is this deployment's own); otherwise it may be another deployment's orphan or one of
 * ours, and only `aws.adoptUntagged` (an operator who knows the account holds one deployment) makes it ours.
 */
function whose(
  tags: Tags,
  deployment: string,
  ownerStatus: string,
  adoptUntagged: boolean,
): 'ours' | 'claim' | 'foreign' | 'untagged' {
  const d = tag(tags, TAG_DEPLOYMENT);
  if (d !== undefined) return d === deployment ? 'ours' : 'foreign';
  if (ownerStatus === 'RUNNING') return 'claim';
  return adoptUntagged ? 'ours' : 'untagged';
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
      const deployment = ctx.config.deployment;
      const adoptUntagged = ctx.pool(input.pool).aws?.adoptUntagged === true;
      // EC2 cannot filter on a tag being absent: list by pool, and sort by deployment here. Every page: an
      // orphan on the second page leaks as surely as one on the first.
      const byPool = { Name: `tag:${TAG_POOL}`, Values: [input.pool] };
      const listed: Host[] = [];
      for await (const page of paginateDescribeHosts(
        { client: ec2 },
        {
          Filter: [
            byPool,
            { Name: 'state', Values: ['available', 'pending', 'under-assessment', 'permanent-failure'] },
          ],
        },
      ))
        listed.push(...(page.Hosts ?? []));
      const listedInstances: Instance[] = [];
      for await (const page of paginateDescribeInstances(
        { client: ec2 },
        { Filters: [byPool, { Name: 'instance-state-name', Values: ['pending', 'running', 'stopping', 'stopped'] }] },
      ))
        listedInstances.push(...(page.Reservations ?? []).flatMap((r) => r.Instances ?? []));

      const report: ReconcileReport = {
        pool: input.pool,
        deployment,
        hosts: 0,
        instances: 0,
        foreign: 0,
        actions: [],
      };
      /** Sorts one resource: true if it is this deployment's to reconcile (claimed, if it had no tag). */
      const mine = async (id: string, tags: Tags, owner: string | undefined, status: string): Promise<boolean> => {
        const verdict = whose(tags, deployment, status, adoptUntagged);
        if (verdict === 'foreign') {
          report.foreign++;
          return false;
        }
        if (verdict === 'untagged') {
          report.actions.push({
            resource: id,
            owner,
            ownerStatus: status,
            action: 'none',
            detail: `no ${TAG_DEPLOYMENT} tag and no running owner here: left alone (another deployment's?); set aws.adoptUntagged to adopt`,
          });
          return false;
        }
        if (verdict === 'claim') {
          await ec2.send(
            new CreateTagsCommand({ Resources: [id], Tags: [{ Key: TAG_DEPLOYMENT, Value: deployment }] }),
          );
          report.actions.push({ resource: id, owner, ownerStatus: status, action: 'claimed', detail: deployment });
        }
        return true;
      };

      const hosts: Host[] = [];
      for (const h of listed) {
        const owner = tag(h.Tags, TAG_WORKFLOW);
        const status = await ownerStatus(client, owner);
        if (!(await mine(h.HostId!, h.Tags, owner, status))) continue;
        hosts.push(h);
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
      let instances = 0;
      for (const i of listedInstances) {
        const owner = tag(i.Tags, TAG_WORKFLOW);
        const status = await ownerStatus(client, owner);
        if (!(await mine(i.InstanceId!, i.Tags, owner, status))) continue;
        instances++;
        // An instance on a host we hold is the adopter's to terminate; others with no live owner go now.
        if (status === 'RUNNING' || ownedHosts.has(i.Placement?.HostId)) continue;
        await ec2.send(new TerminateInstancesCommand({ InstanceIds: [i.InstanceId!] }));
        report.actions.push({ resource: i.InstanceId!, owner, ownerStatus: status, action: 'terminated' });
      }
      report.hosts = hosts.length;
      report.instances = instances;
      return report;
    },
  };
}
