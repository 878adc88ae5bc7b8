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
  ParentClosePolicy,
  setHandler,
  startChild,
  setCurrentDetails,
  workflowInfo,
  uuid4,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { PoolFleet } from './fleet';
import { retireHostSignal } from './host';
import type { Activities } from '../activities/types';
import type { HostState, Lease, PoolState } from '../src/domain/pool';
import { jobIdOfVm, jobWorkflowId, poolOfStandbyVm } from '../src/domain/job';
import { healthAfterCheck, pickModifier, pickStandby, placeQueue, whyNeverFits } from '../src/policy/placement';
import { checkSecurity } from '../src/domain/security';
import { capacityAt, scheduleErrors } from '../src/policy/schedule';
import { prePullKey, prePullsDue } from '../src/policy/prepull';
import {
  cordonHostUpdate,
  poolStateQuery,
  standbyReadySignal,
  prePullDoneSignal,
  releaseLeaseSignal,
  requestLeaseSignal,
  syncHostsSignal,
  hostReadySignal,
  hostGoneSignal,
  hostDrainSignal,
  hostPhaseSignal,
  controlPoolUpdate,
  type AwsPoolSettings,
  type PoolControlResult,
  type PoolInput,
  type PoolMessage,
  type PoolSettings,
} from './definitions';

const { checkHostHealth, findClosedWorkflows } = proxyActivities<Activities>({
  startToCloseTimeout: '1m',
  retry: { maximumAttempts: 1 },
});
const { deliverPoolMessages } = proxyActivities<Activities>({
  startToCloseTimeout: '2m',
  heartbeatTimeout: '30s',
  retry: { initialInterval: '200ms', maximumInterval: '10s' },
  summary: 'tell jobs of their leases',
});
/** Messages per delivery activity: bounds the activity's input (a lease is ~300 bytes). */
const OUTBOX_BATCH = 500;
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
  // Grants, refusals and revocations wait here and go out in batches (activities/messages.ts).
  const outbox: PoolMessage[] = [];
  let delivering = false;
  const send = (m: PoolMessage): void => {
    outbox.push(m);
    if (!delivering) void deliver();
  };
  async function deliver(): Promise<void> {
    delivering = true;
    try {
      while (outbox.length > 0) {
        const batch = outbox.splice(0, OUTBOX_BATCH);
        // The job is gone (terminated, timed out): its slot goes back to the pool.
        for (const id of await deliverPoolMessages(batch)) release(id);
      }
    } finally {
      delivering = false;
      wake = true;
    }
  }

  setHandler(poolStateQuery, () => state);

  // AWS pools: host workflows announce themselves when ready, each phase, and when gone;
  // the fleet policy decides what they do (fleet.ts).
  const fleet = new PoolFleet(state);
  setHandler(hostReadySignal, (spec) => {
    fleet.onReady(settings.aws, spec);
    state.hosts = [...state.hosts.filter((h) => h.name !== spec.name), { ...spec, consecutiveHealthFailures: 0 }];
    dirty = true;
  });
  setHandler(hostPhaseSignal, (report) => {
    fleet.onPhase(settings.aws, report);
    dirty = true;
  });
  setHandler(hostDrainSignal, ({ host, drain, reason }) => {
    const h = state.hosts.find((x) => x.name === host);
    const why = reason ?? 'drain';
    // An operator's cordon outranks the host's own; lifting a cordon lifts only the same kind.
    if (!h || h.cordoned === 'operator' || (!drain && h.cordoned !== why)) return;
    h.cordoned = drain ? why : undefined;
    fleet.decide(
      `${drain ? 'cordon' : 'uncordon'} host ${host}: ${why === 'assessment' ? 'AWS has it under assessment' : 'drained through its host workflow'}`,
    );
    dirty = true;
  });
  setHandler(hostGoneSignal, ({ workflowId, reason }) => {
    fleet.onGone(workflowId);
    const gone = state.hosts.filter((h) => h.dynamic?.workflowId === workflowId).map((h) => h.name);
    // Jobs on a lost host run again: their leases end and they ask for new ones.
    for (const l of state.leases.filter((x) => gone.includes(x.host))) {
      state.leases = state.leases.filter((x) => x !== l);
      send({
        kind: 'revoked',
        jobWorkflowId: l.jobWorkflowId,
        leaseId: l.leaseId,
        reason: `host ${l.host} is gone: ${reason}`,
      });
    }
    state.hosts = state.hosts.filter((h) => !gone.includes(h.name));
    for (const [id, s] of Object.entries(state.standbys ?? {})) if (gone.includes(s.host)) delete state.standbys![id];
    fleet.decide(`host workflow ${workflowId} is gone: ${reason}`);
    dirty = true;
  });

  setHandler(syncHostsSignal, (next) => {
    settings = next;
    state.hosts = mergeHosts(state.hosts, next);
    dirty = true;
  });

  setHandler(requestLeaseSignal, (req) => {
    // A retried signal must not queue the job twice or hand it a second slot.
    const existing = state.leases.find((l) => l.jobWorkflowId === req.jobWorkflowId);
    if (existing) {
      send({ kind: 'granted', jobWorkflowId: existing.jobWorkflowId, lease: { ...existing } });
      return;
    }
    if (state.queue.some((q) => q.jobWorkflowId === req.jobWorkflowId)) return;
    const security = checkSecurity(state.name, settings.security, { image: req.imageRef, volumes: req.volumes });
    const never =
      security.violations.length > 0
        ? security.violations.join('; ')
        : whyNeverFits(settings.aws ? [...state.hosts, settings.aws.template] : state.hosts, req);
    if (never) {
      fleet.decide(`refuse ${req.jobWorkflowId}: ${never}`);
      send({ kind: 'refused', jobWorkflowId: req.jobWorkflowId, reason: never });
      return;
    }
    state.queue.push({
      jobWorkflowId: req.jobWorkflowId,
      resources: req.resources,
      labels: req.labels,
      requestedAt: Date.now(),
      ...(req.client ? { client: req.client } : {}),
      ...(req.image ? { image: req.image } : {}),
      ...(req.priority ? { priority: req.priority } : {}),
      ...(security.volumes.length > 0 ? { volumes: security.volumes } : {}),
      ...(req.vm ? { vm: req.vm } : {}),
    });
    dirty = true;
  });

  // Standby VMs: booted ahead of demand by standby workflows the pool starts (workflows/standby.ts).
  setHandler(standbyReadySignal, ({ workflowId, vm, ip, image }) => {
    const lease = state.leases.find((l) => l.jobWorkflowId === workflowId && l.vm === vm);
    if (!lease) return; // stale: the lease is gone
    lease.ip = ip;
    (state.standbys ??= {})[workflowId] = { host: lease.host, vm, ip, image, readySince: Date.now() };
    dirty = true;
  });
  let standbyStarting = 0;
  /** Starts the standby workflows the settings ask for, and stops the ones they no longer do. */
  function syncStandby(): void {
    const wanted = (settings.standby ?? []).flatMap((s, i) =>
      Array.from({ length: s.count }, (_, n) => ({
        id: `standby/${state.name}/${i}-${n}`,
        slot: `${i}-${n}`,
        spec: s,
      })),
    );
    const started = (state.standbyWorkflows ??= []);
    for (const w of wanted.filter((x) => !started.includes(x.id))) {
      started.push(w.id);
      standbyStarting++;
      void startChild('standbyWorkflow', {
        workflowId: w.id,
        args: [
          { pool: state.name, slot: w.slot, image: w.spec.image, resources: w.spec.resources, labels: w.spec.labels },
        ],
        parentClosePolicy: ParentClosePolicy.ABANDON,
        staticSummary: `Standby VM ${w.slot} of pool ${state.name}: ${w.spec.image}`,
      })
        .catch((e: unknown) => {
          if (!(e instanceof WorkflowExecutionAlreadyStartedError)) throw e;
        })
        .finally(() => standbyStarting--);
      fleet.decide(`start standby ${w.id}: keep ${w.spec.count} VM(s) of ${w.spec.image} booted`);
    }
    for (const id of started.filter((x) => !wanted.some((w) => w.id === x))) {
      state.standbyWorkflows = state.standbyWorkflows!.filter((x) => x !== id);
      if (state.standbys) delete state.standbys[id];
      send({ kind: 'stop', jobWorkflowId: id });
      fleet.decide(`stop standby ${id}: the pool keeps fewer standby VMs now`);
    }
  }
  /** Queued jobs take booted standby VMs first (src/policy/placement.ts says which). */
  function claimStandbys(): void {
    for (const req of [...state.queue]) {
      const standbyId = pickStandby(req, state.standbys ?? {}, state.leases, state.hosts);
      if (!standbyId) continue;
      const s = state.standbys![standbyId]!;
      const lease = state.leases.find((l) => l.jobWorkflowId === standbyId)!;
      // The standby's lease becomes the job's: the slot and the VM change hands, never free in between.
      Object.assign(lease, {
        leaseId: uuid4(),
        jobWorkflowId: req.jobWorkflowId,
        grantedAt: Date.now(),
        client: req.client,
      });
      if (!req.client) delete lease.client;
      delete state.standbys![standbyId];
      state.queue = state.queue.filter((q) => q !== req);
      fleet.onGrant(lease.host);
      send({ kind: 'claimed', jobWorkflowId: standbyId, by: req.jobWorkflowId });
      send({ kind: 'granted', jobWorkflowId: req.jobWorkflowId, lease: { ...lease } });
      fleet.decide(`${req.jobWorkflowId} takes standby VM ${s.vm} on ${s.host} (booted, image cached)`);
    }
  }

  /** Starts the pre-pulls due (src/policy/prepull.ts): the pool's images onto idle hosts, one at a time per host. */
  function syncPrePulls(): void {
    const records = (state.prePulls ??= {});
    for (const p of prePullsDue(state.hosts, state.leases, settings.prePull ?? [], records, Date.now())) {
      const key = prePullKey(p.host, p.image);
      records[key] = { ...records[key], at: Date.now(), running: true };
      void startChild('prePullWorkflow', {
        workflowId: `prepull/${state.name}/${p.host}/${p.image}`,
        args: [{ pool: state.name, host: p.host, image: p.image }],
        parentClosePolicy: ParentClosePolicy.ABANDON,
        staticSummary: `Pre-pull ${p.image} onto ${p.host} (pool ${state.name})`,
      }).catch((e: unknown) => {
        if (!(e instanceof WorkflowExecutionAlreadyStartedError)) throw e;
      });
    }
  }
  setHandler(prePullDoneSignal, ({ host, image, cacheName }) => {
    const key = prePullKey(host, image);
    (state.prePulls ??= {})[key] = { at: Date.now(), ...(cacheName ? { cacheName } : {}) };
    const h = state.hosts.find((x) => x.name === host);
    if (h && cacheName && !h.images?.includes(cacheName)) h.images = [...(h.images ?? []), cacheName];
    dirty = true;
  });

  setHandler(releaseLeaseSignal, ({ jobWorkflowId, cachedImage }) => {
    const lease = state.leases.find((l) => l.jobWorkflowId === jobWorkflowId);
    const host = lease && state.hosts.find((h) => h.name === lease.host);
    if (host && cachedImage && !host.images?.includes(cachedImage)) host.images = [...(host.images ?? []), cachedImage];
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

  // Planner and operator controls: one validated update, so a bad request fails at once with the fix
  // and loses nothing, and a good one answers when it is done (a drain, once the host's jobs finished).
  const invalid = (message: string): ApplicationFailure =>
    ApplicationFailure.create({ message, type: 'InvalidPoolControl', nonRetryable: true });
  const hostNamed = (host: string): HostState => {
    const h = state.hosts.find((x) => x.name === host);
    if (!h)
      throw invalid(
        `no host "${host}" in pool ${state.name}; hosts: ${state.hosts.map((x) => x.name).join(', ') || '(none)'}`,
      );
    return h;
  };
  const drained = (host: string) => condition(() => !state.leases.some((l) => l.host === host));
  setHandler(
    controlPoolUpdate,
    async (c): Promise<PoolControlResult> => {
      const say = (message: string): PoolControlResult => {
        fleet.decide(`operator: ${message}`);
        dirty = true;
        return { message };
      };
      switch (c.action) {
        case 'pause':
          state.paused = true;
          return say(`pool ${state.name} paused: nothing new is placed or allocated; running jobs go on`);
        case 'resume':
          state.paused = false;
          return say(`pool ${state.name} resumed`);
        case 'cordon':
        case 'uncordon': {
          const h = hostNamed(c.host);
          h.cordoned = c.action === 'cordon' ? 'operator' : undefined;
          return say(`${c.action} host ${c.host}`);
        }
        case 'drain': {
          const h = hostNamed(c.host);
          h.cordoned = 'drain';
          say(`drain host ${c.host}: no new work; waiting for its running jobs`);
          const started = Date.now();
          await drained(c.host);
          return say(`host ${c.host} drained (${Math.round((Date.now() - started) / 1000)} s)`);
        }
        case 'retire': {
          // A serving host drains first; a parked or scrubbing one (not placeable) goes at once.
          const h = state.hosts.find((x) => x.name === c.host);
          const rec = fleet.records.find((r) => r.host === c.host);
          if (h) {
            h.cordoned = 'drain';
            say(`retire host ${c.host}: draining first`);
            await drained(c.host);
          }
          if (rec) rec.commanded = 'release';
          state.hosts = state.hosts.filter((x) => x.name !== c.host);
          await getExternalWorkflowHandle(h?.dynamic?.workflowId ?? rec!.workflowId).signal(retireHostSignal, {
            reason: 'retired by an operator',
          });
          return say(`host ${c.host} retired: its workflow terminates the instance and releases it when AWS allows`);
        }
        case 'schedules': {
          if (c.schedules === null) delete state.schedules;
          else state.schedules = c.schedules;
          state.scheduleIndex = -2; // matches no entry: the next look says which applies now
          return say(
            c.schedules === null
              ? `schedules of pool ${state.name}: back to the config's`
              : `schedules of pool ${state.name}: ${c.schedules.length} entr${c.schedules.length === 1 ? 'y' : 'ies'} set by a planner`,
          );
        }
        case 'capacity': {
          const { action: _, ...set } = c;
          state.capacity = { ...state.capacity, ...set };
          const a = effectiveAws(settings.aws!);
          return say(
            `capacity of pool ${state.name}: minHosts ${a.minHosts}, maxHosts ${a.maxHosts}, headroomSlots ${a.headroomSlots}`,
          );
        }
      }
    },
    {
      validator: (c) => {
        switch (c.action) {
          case 'pause':
          case 'resume':
            return;
          case 'cordon':
          case 'uncordon':
          case 'drain':
            hostNamed(c.host);
            return;
          case 'retire': {
            if (fleet.records.some((r) => r.host === c.host && r.commanded !== 'release')) return;
            if (!hostNamed(c.host).dynamic)
              throw invalid(
                `host "${c.host}" is an on-prem host of pool ${state.name}: remove it from the config to retire it, or drain it`,
              );
            return;
          }
          case 'capacity': {
            if (!settings.aws)
              throw invalid(`pool ${state.name} has no aws section: its capacity is the hosts in its config`);
            for (const k of ['minHosts', 'maxHosts', 'headroomSlots'] as const) {
              const v = c[k];
              if (v !== undefined && (!Number.isInteger(v) || v < 0))
                throw invalid(`${k}: must be a whole number ≥ 0, got ${String(v)}`);
            }
            const next = effectiveAws(settings.aws, { ...state.capacity, ...c });
            if (next.maxHosts < 1) throw invalid(`maxHosts: must be at least 1, got ${next.maxHosts}`);
            if (next.minHosts > next.maxHosts)
              throw invalid(
                `minHosts ${next.minHosts} exceeds maxHosts ${next.maxHosts}: lower minHosts or raise maxHosts`,
              );
            return;
          }
          case 'schedules': {
            if (!settings.aws)
              throw invalid(`pool ${state.name} has no aws section: its capacity is the hosts in its config`);
            if (c.schedules === null) return;
            const errors = scheduleErrors(c.schedules);
            if (errors.length > 0) throw invalid(errors.join('; '));
            return;
          }
          default:
            throw invalid(
              `unknown action "${(c as { action: string }).action}"; use pause, resume, cordon, uncordon, drain, retire, capacity or schedules`,
            );
        }
      },
    },
  );
  /** The capacity in force: the config's, then the schedule's (the last matching period), then a planner's override. */
  // Pure (validators call it): noteSchedule records a change of schedule in the decisions.
  function effectiveAws(aws: AwsPoolSettings, over = state.capacity): AwsPoolSettings {
    const sched = capacityAt(schedulesOf(aws), new Date(Date.now()));
    return {
      ...aws,
      ...(sched?.minHosts !== undefined ? { minHosts: sched.minHosts } : {}),
      ...(sched?.maxHosts !== undefined ? { maxHosts: sched.maxHosts } : {}),
      ...(sched?.headroomSlots !== undefined ? { headroomSlots: sched.headroomSlots } : {}),
      ...(over?.minHosts !== undefined ? { minHosts: over.minHosts } : {}),
      ...(over?.maxHosts !== undefined ? { maxHosts: over.maxHosts } : {}),
      ...(over?.headroomSlots !== undefined ? { headroomSlots: over.headroomSlots } : {}),
    };
  }

  /** A planner's schedules, else the config's. */
  function schedulesOf(aws: AwsPoolSettings) {
    return state.schedules ?? aws.schedules ?? [];
  }

  function noteSchedule(aws: AwsPoolSettings): void {
    const sched = capacityAt(schedulesOf(aws), new Date(Date.now()));
    if ((sched?.index ?? -1) === (state.scheduleIndex ?? -1)) return;
    state.scheduleIndex = sched?.index;
    const entry = sched && schedulesOf(aws)[sched.index]!;
    fleet.decide(
      entry
        ? `capacity schedule ${sched.index} applies (${entry.periods.join(', ')} in ${entry.timezone}): ` +
            ['minHosts', 'maxHosts', 'headroomSlots']
              .filter((k) => entry[k as keyof typeof entry] !== undefined)
              .map((k) => `${k} ${String(entry[k as keyof typeof entry])}`)
              .join(', ')
        : 'no capacity schedule applies: the configured capacity',
    );
  }

  function release(jobWorkflowId: string): void {
    if (state.standbys) delete state.standbys[jobWorkflowId];
    const before = state.leases.length + state.queue.length;
    state.leases = state.leases.filter((l) => l.jobWorkflowId !== jobWorkflowId);
    state.queue = state.queue.filter((q) => q.jobWorkflowId !== jobWorkflowId);
    if (state.leases.length + state.queue.length !== before) dirty = true;
  }

  let healthRunning = false;
  // Carried across continue-as-new: a big pool must not re-check every host at each new run.
  let nextHealth = state.nextHealthAt ?? Date.now();
  async function runHealthChecks(): Promise<void> {
    healthRunning = true;
    try {
      const results = await Promise.all(
        state.hosts.map((h) =>
          checkHostHealth({ pool: state.name, host: h.name }).catch((e: Error) => ({ ok: false, error: e.message })),
        ),
      );
      state.hosts = state.hosts.map((h, i) => {
        const r = results[i] as { ok: boolean; error?: string; images?: string[] } | undefined;
        if (!r) return h;
        const checked = healthAfterCheck(h, r.ok, r.error);
        // The cache as the host lists it: evictions show here.
        return r.images ? { ...checked, images: r.images } : checked;
      });
      // A job VM no lease owns whose job workflow has closed is an orphan: a terminated job never cleans up.
      // Only closed jobs' VMs are reaped, so a host shared by two pools (a config mistake) loses nothing.
      // A standby VM is only ever its own pool's to reap: a lease holds it from before it boots until
      // after it is destroyed (by its standby workflow or the job that took it), so one without is orphaned.
      const candidates: Array<{ host: string; vm: string; jobId: string }> = [];
      state.hosts.forEach((h, i) => {
        for (const vm of (results[i] as { jobVms?: string[] } | undefined)?.jobVms ?? []) {
          const jobId = jobIdOfVm(vm);
          // A lease owns a VM by its job's name, or by name (a standby VM, booted or handed to a job).
          const owned = state.leases.some(
            (l) => l.host === h.name && (l.vm === vm || l.jobWorkflowId === jobWorkflowId(jobId)),
          );
          const standbyOf = poolOfStandbyVm(vm);
          if (owned || (standbyOf !== undefined && standbyOf !== state.name)) continue;
          if (standbyOf !== undefined)
            void reapVm({ pool: state.name, host: h.name, vm, jobId }).catch(() => undefined);
          else candidates.push({ host: h.name, vm, jobId });
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
      // Host workflows that closed without saying so (terminated, failed) must not count as capacity.
      // (Not those just started: a child being started is not found yet.)
      const hostWorkflows = fleet.records
        .filter((r) => r.startedAtMs === undefined || Date.now() - r.startedAtMs > 60_000)
        .map((r) => r.workflowId);
      if (ids.length + hostWorkflows.length > 0) {
        const closed = new Set(await findClosedWorkflows([...ids, ...hostWorkflows]));
        for (const id of ids) if (closed.has(id)) release(id);
        for (const id of hostWorkflows) {
          if (!closed.has(id) || !state.fleet![id]) continue;
          fleet.onGone(id);
          fleet.decide(`host workflow ${id} closed without a word: its host no longer counts`);
          dirty = true;
        }
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
      if (!state.paused) claimStandbys();
      for (const grant of state.paused ? [] : placeQueue(state.hosts, state.leases, state.queue, settings.placement)) {
        const lease: Lease = {
          leaseId: uuid4(),
          jobWorkflowId: grant.request.jobWorkflowId,
          host: grant.host,
          resources: grant.request.resources,
          grantedAt: Date.now(),
          ...(grant.request.client ? { client: grant.request.client } : {}),
          ...(grant.request.volumes ? { volumes: grant.request.volumes } : {}),
          ...(grant.request.vm ? { vm: grant.request.vm } : {}),
        };
        const host = state.hosts.find((h) => h.name === grant.host)!;
        const modifier = pickModifier(host, state.leases, lease.resources);
        if (modifier) Object.assign(lease, { modifier: modifier.index, runArgs: modifier.run });
        state.queue = state.queue.filter((q) => q.jobWorkflowId !== lease.jobWorkflowId);
        state.leases.push(lease);
        fleet.onGrant(lease.host);
        send({ kind: 'granted', jobWorkflowId: lease.jobWorkflowId, lease: { ...lease } });
      }
      syncStandby();
      syncPrePulls();
      if (settings.aws) noteSchedule(settings.aws);
      if (settings.aws && !state.paused) fleet.tick(effectiveAws(settings.aws));
      setCurrentDetails(describe(state));
    }
    // Idle hosts age while nothing happens: look again at least once per EC2 minute (at most 4 times a second).
    if (settings.aws && fleet.records.length > 0) {
      nextAwsCheck = Math.min(nextAwsCheck, Date.now() + Math.max(250, (60 / settings.aws.timeScale) * 1000));
    }
    const now = Date.now();
    if (!healthRunning && now >= nextHealth) void runHealthChecks();
    if (!leaseCheckRunning && now >= nextLeaseCheck) void reclaimDeadLeases();

    const info = workflowInfo();
    if (info.continueAsNewSuggested || info.historyLength >= (settings.historyEventsPerRun ?? Infinity)) {
      await condition(
        () => allHandlersFinished() && !healthRunning && !leaseCheckRunning && !delivering && standbyStarting === 0,
      );
      fleet.persist();
      state.nextHealthAt = nextHealth;
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

const DETAIL_HOSTS = 20;

function describe(state: PoolState): string {
  // Details travel with every workflow task: a 500-host pool lists its first hosts and counts the rest.
  const shown = state.hosts.slice(0, DETAIL_HOSTS);
  const lines = shown.map((h) => {
    const leases = state.leases.filter((l) => l.host === h.name).length;
    const pulling = Object.entries(state.prePulls ?? {})
      .filter(([k, r]) => r.running && k.startsWith(`${h.name}|`))
      .map(([k]) => k.slice(h.name.length + 1));
    return (
      `- **${h.name}**: ${leases} lease(s)${h.cordoned ? ` · cordoned (${h.cordoned})` : ''}` +
      (pulling.length ? ` · pre-pulling ${pulling.join(', ')} (workflow prepull/${state.name}/${h.name}/…)` : '')
    );
  });
  const decisions = (state.decisions ?? []).slice(-5).map((d) => `- ${d.at.slice(11, 19)} ${d.what}`);
  return [
    `${state.paused ? '**paused** · ' : ''}**${state.leases.length}** running, **${state.queue.length}** queued` +
      (state.standbyWorkflows?.length
        ? ` · **${Object.keys(state.standbys ?? {}).length}**/${state.standbyWorkflows.length} standby VMs booted`
        : ''),
    ...lines,
    ...(state.hosts.length > shown.length ? [`- … and ${state.hosts.length - shown.length} more hosts`] : []),
    ...(decisions.length > 0 ? ['', '**Latest decisions**', ...decisions] : []),
  ].join('\n');
}
