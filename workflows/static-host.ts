/**
 * One on-prem Mac, watched by itself: `host/<pool>/<name>`.
 *
 *   watchHost (hours, checks in heartbeats) → report due? → signal the pool (confirmed, retried)
 *                                            → orphan job VMs? → destroyVm
 *   after watchMaxMs with nothing to say → continue as new
 *
 * The pool once health-checked every host itself, one activity per host per interval: ~1,700
 * history events per host per hour for an idle pool. Here an idle host writes one watch activity
 * per `watchMaxMs` (6 h) and nothing in between; the pool hears only changes (src/policy/host-watch.ts).
 */
import {
  CancellationScope,
  allHandlersFinished,
  condition,
  makeContinueAsNewFunc,
  getExternalWorkflowHandle,
  isCancellation,
  proxyActivities,
  setCurrentDetails,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { setDescribedHandler } from './handlers';
import type { SearchAttributePair } from '@temporalio/common';
import type { Activities } from '../activities/types';
import type { WatchResult } from '../activities/watch';
import { jobIdOfVm, jobWorkflowId, poolOfStandbyVm } from '../src/domain/job';
import { hostWorkflowId } from './host';
import {
  SA_HOST,
  SA_HOST_STATE,
  SA_POOL,
  hostReportQuery,
  hostReportSignal,
  poolWorkflowId,
  reapVmsSignal,
  resendReportSignal,
  stopWatchSignal,
  type HostReport,
  type StaticHostInput,
  type StaticHostView,
} from './definitions';

export const DEFAULT_WATCH_MAX_MS = 6 * 3600_000;
const DEFAULT_CHECK_TIMEOUT_MS = 15_000;
/**
 * A report the pool did not take waits at most this long between tries: a pool that is down for
 * hours costs its hosts a few events per hour, and a new pool run asks for reports itself (resendReport).
 */
const DELIVERY_BACKOFF_MAX_MS = 10 * 60_000;
const REAPED_KEPT = 10;

export interface StaticHostResult {
  stopped: string;
  last?: HostReport;
}

/** How a pool (or an operator) starts a host's workflow: with startChild or client.workflow.start, plus a task queue. */
export function staticHostStartOptions(input: StaticHostInput) {
  return {
    workflowId: hostWorkflowId(input.pool, input.spec.name),
    args: [input] as [StaticHostInput],
    // Set at start, so the first run need not upsert them.
    typedSearchAttributes: [
      { key: SA_POOL, value: input.pool },
      { key: SA_HOST, value: input.spec.name },
    ] as SearchAttributePair[],
    staticSummary: `On-prem host ${input.spec.name} of pool ${input.pool}: checked every ${input.healthCheckSeconds} s, reports changes`,
  };
}

export async function staticHostWorkflow(input: StaticHostInput): Promise<StaticHostResult> {
  const { pool } = input;
  const host = input.spec.name;
  const target = { pool, host };
  const intervalMs = input.healthCheckSeconds * 1000;
  const maxMs = input.watchMaxMs ?? DEFAULT_WATCH_MAX_MS;
  const checkTimeoutMs = input.checkTimeoutMs ?? DEFAULT_CHECK_TIMEOUT_MS;

  const { watchHost } = proxyActivities<Activities>({
    startToCloseTimeout: maxMs + 2 * (intervalMs + checkTimeoutMs) + 60_000,
    // A heartbeat comes with every check: an interval plus one check at most apart.
    heartbeatTimeout: Math.max(30_000, 3 * intervalMs, intervalMs + checkTimeoutMs + 15_000),
    // A watch only fails when its worker does: try forever, never more than a minute apart.
    retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1m' },
    summary: `watch ${host}: check every ${input.healthCheckSeconds} s, return on a change`,
  });
  const destroyer = (vm: string, why: string) =>
    proxyActivities<Activities>({
      startToCloseTimeout: '5m',
      retry: { initialInterval: '2s', maximumInterval: '1m', maximumAttempts: 5 },
      summary: `reap ${vm} on ${host}: ${why}`,
    }).destroyVm;

  let report: HostReport | undefined = input.last;
  let checks = input.checks ?? 0;
  let lastChange: StaticHostView['lastChange'];
  const reaped: StaticHostView['reaped'] = [];
  let stopping: string | undefined;
  let watchScope: CancellationScope | undefined;

  // Delivery: every reason to send (a new report, resendReport) raises `wanted`; a confirmed
  // signal covers every request made before it was sent. The pool may be down: retry with backoff.
  let wanted = input.pending && report ? 1 : 0;
  let sent = 0;
  let sending = false;
  let signalInFlight = false;
  let deliveryError: string | undefined;
  async function deliver(): Promise<void> {
    if (sending) return;
    sending = true;
    let backoffMs = 1000;
    try {
      while (sent < wanted && report && !stopping) {
        const upTo = wanted;
        signalInFlight = true;
        try {
          await getExternalWorkflowHandle(poolWorkflowId(pool)).signal(hostReportSignal, report);
          sent = upTo;
          deliveryError = undefined;
          backoffMs = 1000;
          continue;
        } catch (e) {
          deliveryError = `${poolWorkflowId(pool)} did not take report #${report.seq}: ${(e as Error).message}`;
        } finally {
          signalInFlight = false;
        }
        describe();
        // A newer report or a resend request tries at once; otherwise wait, longer each time.
        await condition(() => wanted > upTo || stopping !== undefined, backoffMs);
        backoffMs = Math.min(backoffMs * 2, DELIVERY_BACKOFF_MAX_MS);
      }
    } finally {
      sending = false;
      describe();
    }
  }
  const send = (): void => {
    wanted++;
    void deliver();
  };

  // VMs being destroyed, with why: a repeated reapVms does not start a second destroy.
  const reaping = new Map<string, string>();
  function reap(vm: string, why: string): void {
    if (reaping.has(vm)) return;
    reaping.set(vm, why);
    describe();
    void destroyer(
      vm,
      why,
    )({ pool, host, vm, jobId: jobIdOfVm(vm) })
      .then(
        () => note({ vm, why, at: new Date().toISOString() }),
        (e: unknown) => note({ vm, why, at: new Date().toISOString(), error: (e as Error).message }),
      )
      .finally(() => {
        reaping.delete(vm);
        describe();
      });
  }
  function note(r: StaticHostView['reaped'][number]): void {
    reaped.push(r);
    if (reaped.length > REAPED_KEPT) reaped.shift();
  }

  setDescribedHandler(stopWatchSignal, ({ reason }) => {
    stopping = reason;
    watchScope?.cancel();
  });
  setDescribedHandler(resendReportSignal, () => {
    // Nothing to resend before the first verdict: the pool hears it when it is due.
    if (report && report.seq > 0) send();
  });
  setDescribedHandler(reapVmsSignal, ({ vms, reason }) => {
    for (const vm of vms) {
      // Only this pool's standby VMs: a job VM is reaped by its closed job alone, and an image or
      // another pool's VM never by a message that may be stale or misaddressed.
      if (poolOfStandbyVm(vm) === pool) reap(vm, `pool ${pool}: ${reason}`);
      else note({ vm, why: reason, at: new Date().toISOString(), error: `refused: not a standby VM of pool ${pool}` });
    }
  });
  const view = (): StaticHostView => ({
    ...(report ? { report } : {}),
    delivered: report !== undefined && report.seq > 0 && sent >= wanted,
    ...(deliveryError && sent < wanted ? { deliveryError } : {}),
    checks,
    ...(lastChange ? { lastChange } : {}),
    reaped,
  });
  setDescribedHandler(hostReportQuery, view);

  function describe(): void {
    setCurrentDetails(details(host, pool, input.healthCheckSeconds, view(), [...reaping.keys()]));
  }

  /** On change only: each upsert is a history event. */
  function syncSearchAttributes(): void {
    const want: SearchAttributePair[] = [
      { key: SA_POOL, value: pool },
      { key: SA_HOST, value: host },
      ...(report && report.seq > 0
        ? [{ key: SA_HOST_STATE, value: report.healthy ? 'healthy' : 'unhealthy' } as SearchAttributePair]
        : []),
    ];
    const have = workflowInfo().typedSearchAttributes;
    const changed = want.filter((p) => have.get(p.key) !== p.value);
    if (changed.length > 0) upsertSearchAttributes(changed);
  }

  syncSearchAttributes();
  describe();
  if (wanted > sent) void deliver();

  for (;;) {
    if (stopping) break;
    if (workflowInfo().continueAsNewSuggested) break;
    let r: WatchResult;
    watchScope = new CancellationScope();
    try {
      r = await watchScope.run(() =>
        watchHost(target, report, { intervalMs, maxMs, checkTimeoutMs, reaping: [...reaping.keys()] }),
      );
    } catch (e) {
      if (stopping && isCancellation(e)) break;
      throw e;
    } finally {
      watchScope = undefined;
    }
    checks += r.checks;
    report = r.report;
    if (r.outcome === 'report') {
      lastChange = { why: r.why ?? 'changed', at: new Date().toISOString() };
      syncSearchAttributes();
      send();
    }
    for (const vm of r.orphans)
      reap(vm, `its job workflow ${jobWorkflowId(jobIdOfVm(vm))} has closed or never existed`);
    describe();
    if (r.outcome === 'unchanged') break;
  }

  // Let in-flight work settle: a signal whose fate is unknown is sent again by the next run, and a
  // reap is not left half done. Reaps are bounded by their retry policy.
  await condition(() => stopping !== undefined || (!signalInFlight && reaping.size === 0 && allHandlersFinished()));
  if (stopping) {
    await condition(() => reaping.size === 0 && !signalInFlight);
    describe();
    return { stopped: stopping, ...(report ? { last: report } : {}) };
  }
  const next: StaticHostInput = { ...input, pending: sent < wanted, checks };
  if (report) next.last = report;
  // Passed on explicitly, so the next run need not upsert them again (an event each).
  return await makeContinueAsNewFunc<typeof staticHostWorkflow>({
    typedSearchAttributes: workflowInfo().typedSearchAttributes,
  })(next);
}

function details(host: string, pool: string, everySeconds: number, v: StaticHostView, reaping: string[]): string {
  const r = v.report;
  const head = !r
    ? `**checking** · host ${host} (pool ${pool}): no verdict yet`
    : r.seq === 0
      ? `**checking** · host ${host} (pool ${pool}): ${r.failures} failed check(s) so far${r.error ? `: ${r.error}` : ''}`
      : r.healthy
        ? `**healthy** · host ${host} (pool ${pool})` +
          (r.failures > 0 ? ` · last check failed (${r.failures} in a row): ${r.error}` : '')
        : `**unhealthy** · host ${host} (pool ${pool}) · ${r.failures} failed checks in a row: ${r.error ?? '?'}`;
  const delivery =
    !r || r.seq === 0 ? '' : v.delivered ? ` · report #${r.seq} delivered` : ` · report #${r.seq} **pending**`;
  const list = (xs: string[]) => (xs.length > 0 ? xs.join(', ') : 'none');
  return [
    head + delivery,
    ...(v.deliveryError ? [`- delivery: ${v.deliveryError}`] : []),
    ...(v.lastChange ? [`- last change: ${v.lastChange.why} (${v.lastChange.at.slice(0, 19)}Z)`] : []),
    `- VMs (${r?.vms.length ?? 0}): ${list(r?.vms ?? [])}`,
    `- images (${r?.images.length ?? 0}): ${list(r?.images ?? [])}`,
    `- checks: ${v.checks} (every ${everySeconds} s; the live count is in the watch activity's heartbeat)`,
    ...(reaping.length > 0 ? [`- reaping: ${reaping.join(', ')}`] : []),
    ...v.reaped
      .slice(-5)
      .map(
        (x) =>
          `- ${x.at.slice(11, 19)} ${x.error ? 'not reaped' : 'reaped'} ${x.vm}: ${x.why}${x.error ? ` (${x.error})` : ''}`,
      ),
  ].join('\n');
}
