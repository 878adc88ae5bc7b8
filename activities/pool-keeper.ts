/**
 * Keeping a pool's workflow alive and whole: start it when something finds it gone, and let a
 * new run learn from the lease takers (jobs, standbys, probes) which slots they hold and which
 * they wait for. The lease takers are the truth about their own leases, so a pool workflow that
 * was terminated, or upgraded by terminating it, comes back without double-booking a host.
 */
import { hostname } from 'node:os';
import { heartbeat } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { QueryNotRegisteredError, WorkflowNotFoundError } from '@temporalio/client';
import { hostStateQuery, type HostView } from '../workflows/host';
import type { ActivityContext } from './context';
import { findPool } from '../src/config/load';
import { poolStartOptions } from '../src/config/pool-settings';
import { leaseHoldingQuery, type LeaseRequestMsg } from '../workflows/definitions';
import type { Lease } from '../src/domain/pool';

/** Workflows listed (and queried) per activity call: bounds the result payload (~300 bytes each). */
const PAGE = 400;
const CONCURRENCY = 32;
const HOST_WORKFLOW_TYPES = new Set(['hostWorkflow', 'staticHostWorkflow']);

export interface RecoveryPage {
  leases: Lease[];
  requests: LeaseRequestMsg[];
  /** Host workflows of the pool that run: the new run asks each for its report. */
  hostWorkflows: string[];
  /** EC2 host workflows and where each stands: the new run knows its fleet before it plans one. */
  ec2Hosts: Array<{ workflowId: string; view: HostView }>;
  /** Booted standby VMs waiting for a job. */
  standbys: Array<{ workflowId: string; vm: string; ip: string; image: string }>;
  nextPageToken?: string;
}

/**
 * A query's answer, or undefined when the workflow has closed or is no lease taker (a pre-pull, a
 * reconciler run). Any other failure (a timeout while its worker restarts) fails the page, which is
 * retried: a lease taker that did not answer must not count as holding nothing.
 */
async function ask<T>(query: () => Promise<T>): Promise<T | undefined> {
  try {
    return await query();
  } catch (e) {
    if (e instanceof WorkflowNotFoundError || e instanceof QueryNotRegisteredError) return undefined;
    throw e;
  }
}

export function poolKeeperActivities(ctx: ActivityContext) {
  const client = () => {
    if (!ctx.temporal) throw new Error('the worker has no Temporal client');
    return ctx.temporal;
  };
  return {
    /**
     * Starts the pool's workflow from this worker's config if it is not running; a running one is
     * left as it is (its settings change only through `marina pool apply`).
     */
    async ensurePool(pool: string): Promise<void> {
      const p = findPool(ctx.config, pool);
      if (!p) {
        throw ApplicationFailure.create({
          message: `pool "${pool}" is not in this worker's config (pools: ${ctx.config.pools.map((x) => x.name).join(', ')}): check the pool name`,
          type: 'UnknownPool',
          nonRetryable: true,
        });
      }
      await client().workflow.start('poolWorkflow', {
        ...poolStartOptions(ctx.config, p, `worker on ${hostname()} (the pool was not running)`),
        workflowIdConflictPolicy: 'USE_EXISTING',
      });
    },

    /** One page of the pool's running lease takers and host workflows, found by `MarinaPool` in visibility. */
    async recoverPool(input: { pool: string; pageToken?: string }): Promise<RecoveryPage> {
      const c = client();
      const res = await c.workflowService.listWorkflowExecutions({
        namespace: ctx.config.temporal.namespace,
        query: `MarinaPool = '${input.pool.replace(/'/g, '')}' AND ExecutionStatus = 'Running'`,
        pageSize: PAGE,
        ...(input.pageToken ? { nextPageToken: Buffer.from(input.pageToken, 'base64') } : {}),
      });
      const page: RecoveryPage = { leases: [], requests: [], hostWorkflows: [], ec2Hosts: [], standbys: [] };
      const takers: string[] = [];
      for (const e of res.executions ?? []) {
        const id = e.execution?.workflowId;
        const type = e.type?.name ?? '';
        if (!id || type === 'poolWorkflow') continue;
        if (HOST_WORKFLOW_TYPES.has(type)) page.hostWorkflows.push(id);
        else takers.push(id);
        if (type === 'hostWorkflow') {
          const view = await ask(() => c.workflow.getHandle(id).query(hostStateQuery));
          if (view) page.ec2Hosts.push({ workflowId: id, view });
        }
      }
      let next = 0;
      const lane = async () => {
        while (next < takers.length) {
          const id = takers[next++]!;
          const h = await ask(() => c.workflow.getHandle(id).query(leaseHoldingQuery));
          if (!h || h.pool !== input.pool) continue;
          if (h.lease) page.leases.push(h.standby ? { ...h.lease, vm: h.standby.vm, ip: h.standby.ip } : h.lease);
          if (h.lease && h.standby) page.standbys.push({ workflowId: id, ...h.standby });
          else if (h.request) page.requests.push({ ...h.request, requestedAt: h.request.requestedAt ?? Date.now() });
          if (next % 50 === 0) heartbeat(next);
        }
      };
      await Promise.all(Array.from({ length: Math.min(CONCURRENCY, takers.length) }, lane));
      const token = res.nextPageToken;
      return token && token.length > 0 ? { ...page, nextPageToken: Buffer.from(token).toString('base64') } : page;
    },
  };
}
