/**
 * The pool's outbox: what a pool tells jobs, standbys and host workflows, delivered as plain
 * signals from the worker. A signal sent by the pool workflow itself would cost the pool two
 * history events and a write back to its own (hot) history for every message; one activity per
 * batch costs three events in all.
 *
 * Each message is delivered on its own and answers for itself: one bad target never fails the
 * batch, so the pool can retry or park just that message and go on with the rest.
 */
import { WorkflowNotFoundError } from '@temporalio/client';
import { heartbeat } from '@temporalio/activity';
import type { ActivityContext } from './context';
import {
  leaseGrantedSignal,
  leaseRefusedSignal,
  leaseRevokedSignal,
  reapVmsSignal,
  resendReportSignal,
  standbyClaimedSignal,
  standbyStopSignal,
  stopWatchSignal,
  type DeliveryOutcome,
  type PoolMessage,
} from '../workflows/definitions';
import { hostCommandSignal, retireHostSignal } from '../workflows/host';

/** Signals in flight at once: enough to hide round trips, few enough not to flood a small server. */
const CONCURRENCY = 32;

export function messageActivities(ctx: ActivityContext) {
  return {
    /**
     * Delivers each target's messages in order (a grant before its revocation) and answers one
     * outcome per message, in the order given. After a failed message, the same target's later
     * messages are not tried (their order matters) and fail with the same error. A redelivered
     * message is harmless: jobs ignore a grant they hold and a revocation of a lease they do not;
     * host workflows take a repeated command as the same one.
     */
    async deliverPoolMessages(messages: PoolMessage[]): Promise<DeliveryOutcome[]> {
      const client = ctx.temporal;
      if (!client) throw new Error('the worker has no Temporal client to deliver pool messages with');
      const outcomes: DeliveryOutcome[] = messages.map(() => ({ error: 'not tried' }));
      const byTarget = new Map<string, number[]>();
      messages.forEach((m, i) => {
        let list = byTarget.get(m.to);
        if (!list) byTarget.set(m.to, (list = []));
        list.push(i);
      });
      const targets = [...byTarget];
      let next = 0;
      let done = 0;
      const lane = async () => {
        while (next < targets.length) {
          const [id, indexes] = targets[next++]!;
          const h = client.workflow.getHandle(id);
          let failed: DeliveryOutcome | undefined;
          for (const i of indexes) {
            if (failed) {
              outcomes[i] = failed;
              continue;
            }
            try {
              await signal(h, messages[i]!);
              outcomes[i] = 'ok';
            } catch (e) {
              // Closed (terminated, timed out) or never started: nothing to tell.
              failed = e instanceof WorkflowNotFoundError ? 'gone' : { error: describe(e) };
              outcomes[i] = failed;
            }
          }
          if (++done % 100 === 0) heartbeat(done);
        }
      };
      await Promise.all(Array.from({ length: Math.min(CONCURRENCY, targets.length) }, lane));
      return outcomes;
    },
  };
}

/** The client says "Failed to signal Workflow"; the server's reason is in its cause. */
function describe(e: unknown): string {
  const err = e as Error & { cause?: Error };
  return [err.message, err.cause?.message].filter(Boolean).join(': ') || String(e);
}

type Handle = ReturnType<NonNullable<ActivityContext['temporal']>['workflow']['getHandle']>;

async function signal(h: Handle, m: PoolMessage): Promise<void> {
  switch (m.kind) {
    case 'granted':
      return h.signal(leaseGrantedSignal, m.lease);
    case 'refused':
      return h.signal(leaseRefusedSignal, { reason: m.reason });
    case 'revoked':
      return h.signal(leaseRevokedSignal, { leaseId: m.leaseId, reason: m.reason });
    case 'claimed':
      return h.signal(standbyClaimedSignal, { by: m.by });
    case 'stop':
      return h.signal(standbyStopSignal);
    case 'host-command':
      return h.signal(hostCommandSignal, { action: m.action, reason: m.reason });
    case 'retire-host':
      return h.signal(retireHostSignal, { reason: m.reason });
    case 'reap-vms':
      return h.signal(reapVmsSignal, { vms: m.vms, reason: m.reason });
    case 'stop-watch':
      return h.signal(stopWatchSignal, { reason: m.reason });
    case 'resend-report':
      return h.signal(resendReportSignal);
  }
}
