/**
 * The pool's outbox: grants, refusals and revocations delivered to job workflows as plain
 * signals from the worker, in batches. A signal sent by the pool workflow itself would cost
 * the pool two history events and a write back to its own (hot) history for every job;
 * one activity per batch costs three events in all.
 */
import { WorkflowNotFoundError } from '@temporalio/client';
import { heartbeat } from '@temporalio/activity';
import type { ActivityContext } from './context';
import {
  leaseGrantedSignal,
  leaseRefusedSignal,
  leaseRevokedSignal,
  standbyClaimedSignal,
  standbyStopSignal,
  type PoolMessage,
} from '../workflows/definitions';

/** Signals in flight at once: enough to hide round trips, few enough not to flood a small server. */
const CONCURRENCY = 32;

export function messageActivities(ctx: ActivityContext) {
  return {
    /**
     * Delivers each job's messages in order (a grant before its revocation). Returns the jobs
     * whose workflow is gone: their leases go back to the pool. A redelivered message is
     * harmless: jobs ignore a grant they hold and a revocation of a lease they do not.
     */
    async deliverPoolMessages(messages: PoolMessage[]): Promise<string[]> {
      const client = ctx.temporal;
      if (!client) throw new Error('the worker has no Temporal client to deliver pool messages with');
      const byJob = new Map<string, PoolMessage[]>();
      for (const m of messages) {
        let list = byJob.get(m.jobWorkflowId);
        if (!list) byJob.set(m.jobWorkflowId, (list = []));
        list.push(m);
      }
      const gone: string[] = [];
      const jobs = [...byJob];
      let next = 0;
      let done = 0;
      const lane = async () => {
        while (next < jobs.length) {
          const [id, list] = jobs[next++]!;
          const h = client.workflow.getHandle(id);
          try {
            for (const m of list) {
              if (m.kind === 'granted') await h.signal(leaseGrantedSignal, m.lease);
              else if (m.kind === 'refused') await h.signal(leaseRefusedSignal, { reason: m.reason });
              else if (m.kind === 'revoked')
                await h.signal(leaseRevokedSignal, { leaseId: m.leaseId, reason: m.reason });
              else if (m.kind === 'claimed') await h.signal(standbyClaimedSignal, { by: m.by });
              else await h.signal(standbyStopSignal);
            }
          } catch (e) {
            if (!(e instanceof WorkflowNotFoundError)) throw e;
            gone.push(id); // closed (terminated, timed out): nothing to tell
          }
          if (++done % 100 === 0) heartbeat(done);
        }
      };
      await Promise.all(Array.from({ length: Math.min(CONCURRENCY, jobs.length) }, lane));
      return gone;
    },
  };
}
