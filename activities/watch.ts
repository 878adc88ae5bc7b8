/**
 * A static host watching itself: one long activity checks the host every interval and returns
 * only when its pool must hear something (src/policy/host-watch.ts), when a job VM has lost its
 * job, or after `maxMs`. Checks live in heartbeats, not in history: an idle host costs its
 * workflow nothing between returns.
 */
import { Context } from '@temporalio/activity';
import type { HostReport } from '../workflows/definitions';
import { jobIdOfVm, jobWorkflowId } from '../src/domain/job';
import { afterCheck, classifyVms, initialReport, jobVmsOf, type HostCheck } from '../src/policy/host-watch';
import { UNHEALTHY_AFTER_FAILURES } from '../src/policy/placement';
import { HOST_HANDSHAKE_TIMEOUT_MS, type ActivityContext, type HostRef } from './context';
import { isWorkerShutdown, workerShutdownFailure } from './shutdown';
import { closedWorkflows } from './health';

export interface WatchOptions {
  intervalMs: number;
  /** Return `unchanged` after this long, so the workflow can continue as new. */
  maxMs: number;
  /** Bound on one check: connect, `tart --version`, `tart list`. */
  checkTimeoutMs?: number;
  /** VMs the workflow is reaping already: not reported as orphans again. */
  reaping?: string[];
}

export interface WatchResult {
  /** `report`: the pool must hear `report`; `orphans`: only job VMs to reap; `unchanged`: maxMs passed. */
  outcome: 'report' | 'orphans' | 'unchanged';
  /** The host as last seen; its seq grew only for `report`. */
  report: HostReport;
  why?: string;
  /** Job VMs whose job workflow has closed or never existed. */
  orphans: string[];
  /** Checks this watch made (over all its attempts). */
  checks: number;
}

/** Heartbeat details: what the Web UI shows on the pending activity, and where a retried attempt resumes. */
export interface WatchProgress {
  checks: number;
  verdict: string;
  lastCheckAt: string;
  lastCheckMs: number;
  view: HostReport;
}

export const DEFAULT_CHECK_TIMEOUT_MS = 15_000;

export function watchActivities(ctx: ActivityContext) {
  return {
    async watchHost(target: HostRef, last: HostReport | undefined, opts: WatchOptions): Promise<WatchResult> {
      const actx = Context.current();
      const started = Date.now();
      const timeoutMs = opts.checkTimeoutMs ?? DEFAULT_CHECK_TIMEOUT_MS;
      let view =
        last ??
        initialReport(target.host, actx.info.workflowExecution?.workflowId ?? `host/${target.pool}/${target.host}`);
      let checks = 0;
      // A retried attempt (worker restart) keeps the failure count: three failures must not need three fresh ones.
      const resumed = actx.info.heartbeatDetails as WatchProgress | undefined;
      if (resumed?.view && resumed.view.seq === view.seq && resumed.view.host === view.host) {
        view = resumed.view;
        checks = resumed.checks;
      }
      const reaping = new Set(opts.reaping ?? []);
      // A job VM's job is looked up when the VM is first seen, then at most every orphanRecheckMs:
      // a running job's VM is listed at every check, its workflow need not be described at every check.
      const orphanRecheckMs = Math.max(opts.intervalMs, 10_000);
      const lookedUp = new Map<string, number>();

      for (;;) {
        const t0 = Date.now();
        const check = await checkHost(ctx, target, timeoutMs);
        checks++;
        const step = afterCheck(view, check);
        view = step.report;
        let orphans: string[] = [];
        if (check.ok) {
          for (const vm of lookedUp.keys()) if (!view.vms.includes(vm)) lookedUp.delete(vm);
          const due = jobVmsOf(view.vms).filter(
            (vm) => !reaping.has(vm) && Date.now() - (lookedUp.get(vm) ?? -Infinity) >= orphanRecheckMs,
          );
          if (due.length > 0) {
            for (const vm of due) lookedUp.set(vm, Date.now());
            const closed = new Set(
              await closedWorkflows(
                ctx,
                due.map((vm) => jobWorkflowId(jobIdOfVm(vm))),
              ),
            );
            orphans = due.filter((vm) => closed.has(jobWorkflowId(jobIdOfVm(vm))));
          }
        }
        const progress: WatchProgress = {
          checks,
          verdict: verdictOf(view, check),
          lastCheckAt: new Date(t0).toISOString(),
          lastCheckMs: Date.now() - t0,
          view,
        };
        actx.heartbeat(progress);
        if (step.due || orphans.length > 0) {
          return {
            outcome: step.due ? 'report' : 'orphans',
            report: view,
            ...(step.why ? { why: step.why } : {}),
            orphans,
            checks,
          };
        }
        if (Date.now() - started >= opts.maxMs) return { outcome: 'unchanged', report: view, orphans: [], checks };
        try {
          await actx.sleep(opts.intervalMs);
        } catch (e) {
          // A worker going away hands the watch over at once (the next attempt resumes from the heartbeat),
          // instead of leaving it to the heartbeat timeout. Any other cancel is the workflow's (stopWatch).
          if (isWorkerShutdown(actx)) throw workerShutdownFailure(`watch of ${target.host} after ${checks} checks`);
          throw e;
        }
      }
    },
  };
}

/**
 * One check, bounded as a whole: a host that accepts TCP and never sends its SSH banner, or whose
 * `tart` hangs, fails the check after timeoutMs instead of holding the watch. A failed check drops
 * the host's pooled connection, so the next one starts from a fresh connect, not from a dead one.
 */
export async function checkHost(ctx: ActivityContext, target: HostRef, timeoutMs: number): Promise<HostCheck> {
  let timer: NodeJS.Timeout | undefined;
  const work = (async () => {
    // The handshake gives up inside the bound, so a host that never speaks SSH fails with the SSH error.
    const driver = await ctx.driver(target, {
      readyTimeoutMs: Math.min(HOST_HANDSHAKE_TIMEOUT_MS, Math.round((timeoutMs * 2) / 3)),
    });
    await driver.version();
    return driver.list();
  })();
  // The loser of the race must not become an unhandled rejection once the connection is dropped.
  work.catch(() => undefined);
  try {
    const vms = await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`host ${target.pool}/${target.host} did not answer a check within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
    return { ok: true, ...classifyVms(vms.map((v) => v.name)) };
  } catch (e) {
    ctx.ssh.drop(`host ${target.pool}/${target.host}`);
    return { ok: false, error: (e as Error).message, images: [], vms: [] };
  } finally {
    clearTimeout(timer);
  }
}

function verdictOf(view: HostReport, check: HostCheck): string {
  if (check.ok) return 'healthy';
  return view.failures >= UNHEALTHY_AFTER_FAILURES
    ? `unhealthy (${view.failures} failed checks in a row): ${check.error}`
    : `failing (${view.failures} in a row, unhealthy at ${UNHEALTHY_AFTER_FAILURES}): ${check.error}`;
}
