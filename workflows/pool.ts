/**
 * A pool of on-prem Macs: hands out VM slots as leases, queues when full,
 * reclaims leases of jobs that died, cordons hosts that fail health checks.
 * Placement itself is the pure policy in src/policy/placement.ts.
 */
import {
  ApplicationFailure,
  allHandlersFinished,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  proxyActivities,
  setHandler,
  setCurrentDetails,
  workflowInfo,
  uuid4,
  startChild,
  ParentClosePolicy,
} from '@temporalio/workflow';
import { freeResources } from '../src/domain/pool';
import { retireDecision } from '../src/policy/retire';
import { hostWorkflow, retireHostSignal } from './host';
import type { Activities } from '../activities/types';
import type { HostState, Lease, PoolState } from '../src/domain/pool';
import { jobIdOfVm, jobWorkflowId } from '../src/domain/job';
import { healthAfterCheck, placeQueue, whyNeverFits } from '../src/policy/placement';
import {
  cordonHostUpdate,
  leaseGrantedSignal,
  leaseRefusedSignal,
  poolStateQuery,
  releaseLeaseSignal,
  requestLeaseSignal,
  syncHostsSignal,
  hostReadySignal,
  hostGoneSignal,
  hostDrainSignal,
  leaseRevokedSignal,
  type AwsPoolSettings,
  type PoolInput,
  type PoolSettings,
} from './definitions';

const { checkHostHealth, findClosedWorkflows } = proxyActivities<Activities>({
  startToCloseTimeout: '1m',
  retry: { maximumAttempts: 1 },
});
const { destroyVm: reapVm } = proxyActivities<Activities>({
  startToCloseTimeout: '5m',
  retry: { maximumAttempts: 3 },
  summary: 'reap an orphaned job VM',
});

export async function poolWorkflow(input: PoolInput): Promise<void> {
  const state: PoolState = input.state ?? { name: input.name, hosts: [], leases: [], queue: [] };
  let settings: PoolSettings = input.settings;
  state.hosts = mergeHosts(state.hosts, settings);
  let dirty = true;
  // Set when a background check finishes, so the loop re-arms its timers.
  let wake = false;
  let grantsInFlight = 0;

  setHandler(poolStateQuery, () => state);

  // AWS pools: host workflows announce themselves when ready and when gone.
  state.starting ??= {};
  state.idleSince ??= {};
  state.retiring ??= [];
  setHandler(hostReadySignal, (spec) => {
    delete state.starting![spec.dynamic!.workflowId];
    state.hosts = [...state.hosts.filter((h) => h.name !== spec.name), { ...spec, consecutiveHealthFailures: 0 }];
    state.idleSince![spec.name] = Date.now();
    dirty = true;
  });
  setHandler(hostDrainSignal, ({ host, drain }) => {
    const h = state.hosts.find((x) => x.name === host);
    if (!h || (h.cordoned && h.cordoned !== 'drain')) return;
    h.cordoned = drain ? 'drain' : undefined;
    dirty = true;
  });
  setHandler(hostGoneSignal, ({ workflowId, reason }) => {
    delete state.starting![workflowId];
    const gone = state.hosts.filter((h) => h.dynamic?.workflowId === workflowId).map((h) => h.name);
    // Jobs on a lost host run again: their leases end and they ask for new ones.
    for (const l of state.leases.filter((x) => gone.includes(x.host))) {
      state.leases = state.leases.filter((x) => x !== l);
      void getExternalWorkflowHandle(l.jobWorkflowId)
        .signal(leaseRevokedSignal, { leaseId: l.leaseId, reason: `host ${l.host} is gone: ${reason}` })
        .catch(() => undefined);
    }
    state.hosts = state.hosts.filter((h) => !gone.includes(h.name));
    state.retiring = state.retiring!.filter((n) => !gone.includes(n));
    for (const n of gone) delete state.idleSince![n];
    dirty = true;
  });

  /** Starts host workflows when queued demand exceeds the free slots and those of hosts starting. */
  function scaleUp(aws: AwsPoolSettings): void {
    if (state.queue.length === 0) return;
    const slotsPerHost = aws.template.resources.vm ?? 1;
    const queued = state.queue.reduce((n, q) => n + (q.resources.vm ?? 1), 0);
    const schedulable = state.hosts.filter((h) => !h.cordoned && !state.retiring!.includes(h.name));
    const free = schedulable.reduce((n, h) => n + Math.max(0, freeResources(h, state.leases).vm ?? 0), 0);
    const starting = Object.keys(state.starting!).length;
    const deficit = queued - free - starting * slotsPerHost;
    const held = state.hosts.filter((h) => h.dynamic).length + starting;
    const n = Math.min(Math.ceil(deficit / slotsPerHost), aws.maxHosts - held);
    for (let i = 0; i < n; i++) {
      const workflowId = `host/${state.name}/${uuid4().slice(0, 8)}`;
      state.starting![workflowId] = Date.now();
      void startChild(hostWorkflow, {
        workflowId,
        parentClosePolicy: ParentClosePolicy.ABANDON,
        args: [{ pool: state.name, timeScale: aws.timeScale, pollSeconds: aws.pollSeconds, announce: aws.template }],
        staticSummary: `EC2 Mac host of pool ${state.name}: ${queued} slot(s) queued, ${free} free, ${starting} host(s) starting`,
      }).catch(() => {
        delete state.starting![workflowId];
        dirty = true;
      });
    }
  }

  /** Retires dynamic hosts the retire policy lets go. */
  function retireIdle(aws: AwsPoolSettings): void {
    const now = Date.now();
    for (const h of state.hosts) {
      if (!h.dynamic || state.retiring!.includes(h.name)) continue;
      const leases = state.leases.filter((l) => l.host === h.name).length;
      if (leases > 0) delete state.idleSince![h.name];
      else state.idleSince![h.name] ??= now;
      const d = retireDecision({
        leases,
        queued: state.queue.length,
        ageSeconds: h.dynamic.ageSecondsAtReady + ((now - h.dynamic.readyAtMs) / 1000) * aws.timeScale,
        idleSeconds: leases > 0 ? 0 : ((now - state.idleSince![h.name]!) / 1000) * aws.timeScale,
        idleRetireSeconds: aws.idleRetireSeconds,
      });
      if (!d.retire) continue;
      state.retiring!.push(h.name);
      void getExternalWorkflowHandle(h.dynamic.workflowId)
        .signal(retireHostSignal, { reason: d.why })
        .catch(() => undefined);
    }
    state.hosts = state.hosts.filter(
      (h) => !state.retiring!.includes(h.name) || state.leases.some((l) => l.host === h.name),
    );
  }

  setHandler(syncHostsSignal, (next) => {
    settings = next;
    state.hosts = mergeHosts(state.hosts, next);
    dirty = true;
  });

  setHandler(requestLeaseSignal, (req) => {
    // A retried signal must not queue the job twice or hand it a second slot.
    const existing = state.leases.find((l) => l.jobWorkflowId === req.jobWorkflowId);
    if (existing) {
      void notifyGrant(existing);
      return;
    }
    if (state.queue.some((q) => q.jobWorkflowId === req.jobWorkflowId)) return;
    const never = whyNeverFits(settings.aws ? [...state.hosts, settings.aws.template] : state.hosts, req);
    if (never) {
      void getExternalWorkflowHandle(req.jobWorkflowId)
        .signal(leaseRefusedSignal, { reason: never })
        .catch(() => undefined);
      return;
    }
    state.queue.push({ ...req, requestedAt: Date.now() });
    dirty = true;
  });

  setHandler(releaseLeaseSignal, ({ jobWorkflowId }) => {
    release(jobWorkflowId);
  });

  setHandler(
    cordonHostUpdate,
    ({ host, cordon }) => {
      const h = state.hosts.find((x) => x.name === host)!;
      h.cordoned = cordon ? 'operator' : undefined;
      dirty = true;
      return state;
    },
    {
      validator: ({ host }) => {
        if (!state.hosts.some((h) => h.name === host)) {
          throw ApplicationFailure.create({
            message: `no host "${host}" in pool ${state.name}; hosts: ${state.hosts.map((h) => h.name).join(', ')}`,
            type: 'UnknownHost',
          });
        }
      },
    },
  );

  function release(jobWorkflowId: string): void {
    const before = state.leases.length + state.queue.length;
    state.leases = state.leases.filter((l) => l.jobWorkflowId !== jobWorkflowId);
    state.queue = state.queue.filter((q) => q.jobWorkflowId !== jobWorkflowId);
    if (state.leases.length + state.queue.length !== before) dirty = true;
  }

  async function notifyGrant(lease: Lease): Promise<void> {
    grantsInFlight++;
    try {
      await getExternalWorkflowHandle(lease.jobWorkflowId).signal(leaseGrantedSignal, lease);
    } catch {
      // The job is gone (terminated, timed out): its slot goes back to the pool.
      release(lease.jobWorkflowId);
    } finally {
      grantsInFlight--;
    }
  }

  let healthRunning = false;
  let nextHealth = Date.now();
  async function runHealthChecks(): Promise<void> {
    healthRunning = true;
    try {
      const results = await Promise.all(
        state.hosts.map((h) =>
          checkHostHealth({ pool: state.name, host: h.name }).catch((e: Error) => ({ ok: false, error: e.message })),
        ),
      );
      state.hosts = state.hosts.map((h, i) => {
        const r = results[i];
        return r ? healthAfterCheck(h, r.ok, r.error) : h;
      });
      // A job VM no lease owns whose job workflow has closed is an orphan: a terminated job never cleans up.
      // Only closed jobs' VMs are reaped, so a host shared by two pools (a config mistake) loses nothing.
      const candidates: Array<{ host: string; vm: string; jobId: string }> = [];
      state.hosts.forEach((h, i) => {
        for (const vm of (results[i] as { jobVms?: string[] } | undefined)?.jobVms ?? []) {
          const jobId = jobIdOfVm(vm);
          if (!state.leases.some((l) => l.host === h.name && l.jobWorkflowId === jobWorkflowId(jobId))) {
            candidates.push({ host: h.name, vm, jobId });
          }
        }
      });
      if (candidates.length > 0) {
        const closed = new Set(
          await findClosedWorkflows(candidates.map((c) => jobWorkflowId(c.jobId))).catch(() => []),
        );
        for (const c of candidates.filter((x) => closed.has(jobWorkflowId(x.jobId)))) {
          void reapVm({ pool: state.name, ...c }).catch(() => undefined);
        }
      }
      dirty = true;
    } finally {
      healthRunning = false;
      wake = true;
      nextHealth = Date.now() + settings.healthCheckSeconds * 1000;
    }
  }

  let nextAwsCheck = Infinity;
  let leaseCheckRunning = false;
  let nextLeaseCheck = Date.now() + settings.leaseCheckSeconds * 1000;
  async function reclaimDeadLeases(): Promise<void> {
    leaseCheckRunning = true;
    try {
      const ids = [
        ...new Set([...state.leases.map((l) => l.jobWorkflowId), ...state.queue.map((q) => q.jobWorkflowId)]),
      ];
      if (ids.length > 0) {
        const closed = await findClosedWorkflows(ids);
        for (const id of closed) release(id);
      }
    } catch {
      // Try again next round; a lost check only delays a reclaim.
    } finally {
      leaseCheckRunning = false;
      wake = true;
      nextLeaseCheck = Date.now() + settings.leaseCheckSeconds * 1000;
    }
  }

  for (;;) {
    if (dirty) {
      dirty = false;
      for (const grant of placeQueue(state.hosts, state.leases, state.queue)) {
        const lease: Lease = {
          leaseId: uuid4(),
          jobWorkflowId: grant.request.jobWorkflowId,
          host: grant.host,
          resources: grant.request.resources,
          grantedAt: Date.now(),
        };
        state.queue = state.queue.filter((q) => q.jobWorkflowId !== lease.jobWorkflowId);
        state.leases.push(lease);
        void notifyGrant(lease);
      }
      if (settings.aws) {
        scaleUp(settings.aws);
        retireIdle(settings.aws);
      }
      setCurrentDetails(describe(state));
    }
    // Idle hosts age while nothing happens: look again at least once per EC2 minute (at most 4 times a second).
    if (settings.aws && state.hosts.some((h) => h.dynamic)) {
      nextAwsCheck = Math.min(nextAwsCheck, Date.now() + Math.max(250, (60 / settings.aws.timeScale) * 1000));
    }
    const now = Date.now();
    if (!healthRunning && now >= nextHealth) void runHealthChecks();
    if (!leaseCheckRunning && now >= nextLeaseCheck) void reclaimDeadLeases();

    if (workflowInfo().continueAsNewSuggested) {
      await condition(() => allHandlersFinished() && !healthRunning && !leaseCheckRunning && grantsInFlight === 0);
      await continueAsNew<typeof poolWorkflow>({ name: state.name, settings, state });
    }
    const wakeAt = Math.min(
      healthRunning ? Infinity : nextHealth,
      leaseCheckRunning ? Infinity : nextLeaseCheck,
      nextAwsCheck,
    );
    const waitMs = Number.isFinite(wakeAt) ? Math.max(100, wakeAt - Date.now()) : 60_000;
    await condition(() => dirty || wake, waitMs);
    wake = false;
    if (Date.now() >= nextAwsCheck) {
      nextAwsCheck = Infinity;
      dirty = true;
    }
  }
}

function mergeHosts(current: HostState[], settings: PoolSettings): HostState[] {
  const configured = settings.hosts.map((spec) => {
    const old = current.find((h) => h.name === spec.name);
    return old ? { ...old, resources: spec.resources, labels: spec.labels } : { ...spec, consecutiveHealthFailures: 0 };
  });
  // Hosts Marina allocated are not in the config: they stay until their host workflow says they are gone.
  return [...configured, ...current.filter((h) => h.dynamic)];
}

function describe(state: PoolState): string {
  const lines = state.hosts.map((h) => {
    const leases = state.leases.filter((l) => l.host === h.name).length;
    return `- **${h.name}**: ${leases} lease(s)${h.cordoned ? ` · cordoned (${h.cordoned})` : ''}`;
  });
  return [`**${state.leases.length}** running, **${state.queue.length}** queued`, ...lines].join('\n');
}
