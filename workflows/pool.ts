/**
 * A pool, for months: a thin loop around the pure pool core (src/policy/pool-core.ts).
 *
 *   signals, updates, timers → events → core.step → commands → outbox / child starts
 *
 * Nothing here decides. Handlers only feed the core and answer at once, so no handler holds the
 * loop or continue-as-new. Messages go out through a resilient outbox (one confirmed signal each,
 * retried with a cap, then parked and shown). A new run (first start, or after the pool was
 * terminated) learns which leases are held and which jobs wait from the jobs themselves before
 * it places anything, so a restarted pool never double-books a slot.
 */
import {
  ApplicationFailure,
  allHandlersFinished,
  condition,
  continueAsNew,
  log,
  patched,
  proxyActivities,
  ParentClosePolicy,
  setCurrentDetails,
  sleep,
  startChild,
  uuid4,
  workflowInfo,
} from '@temporalio/workflow';
import { setDescribedHandler } from './handlers';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { Activities } from '../activities/types';
import type { OutboxEntry, PoolState } from '../src/domain/pool';
import {
  mergeHosts,
  newPoolState,
  step,
  workflowsToCheck,
  type PoolCommand,
  type PoolEvent,
} from '../src/policy/pool-core';
import { describePool, poolView } from '../src/policy/pool-view';
import { settingsRequestProblem, validateControl } from '../src/policy/pool-controls';
import { packState, unpackState, type PoolStatePart } from '../src/policy/pool-snapshot';
import {
  SA_HOST,
  SA_POOL,
  controlPoolUpdate,
  hostDrainSignal,
  hostGoneSignal,
  hostPhaseSignal,
  hostReadySignal,
  hostReportSignal,
  poolStateQuery,
  prePullDoneSignal,
  releaseLeaseSignal,
  requestLeaseSignal,
  standbyReadySignal,
  syncHostsSignal,
  applySettingsUpdate,
  poolSettingsQuery,
  type LeaseRequestMsg,
  type PoolInput,
  type PoolSettings,
  type StaticHostInput,
} from './definitions';

const { findClosedWorkflows } = proxyActivities<Activities>({
  startToCloseTimeout: '1m',
  retry: { maximumAttempts: 1 },
  summary: 'which lease holders and host workflows have closed',
});
const { deliverPoolMessages } = proxyActivities<Activities>({
  startToCloseTimeout: '2m',
  heartbeatTimeout: '30s',
  retry: { initialInterval: '200ms', maximumInterval: '5s', maximumAttempts: 3 },
  summary: 'tell jobs and hosts',
});
const { recoverPool } = proxyActivities<Activities>({
  startToCloseTimeout: '5m',
  heartbeatTimeout: '1m',
  retry: { initialInterval: '1s', maximumInterval: '30s' },
  summary: 'learn leases and waiting jobs from the jobs themselves',
});

/** Messages per delivery activity: bounds the activity's input (a grant is ~300 bytes). */
const OUTBOX_BATCH = 500;
/** Tries of one message before it is parked; its backoff doubles from 1 s. */
const OUTBOX_ATTEMPTS = 5;
/** Parked messages kept for the query and details. */
const PARKED_KEPT = 20;
/** Workflow ids per closed-workflow check (~25 bytes each). */
const CHECK_SLICE = 2000;
/** Messages to jobs; the rest go to the pool's own host and standby workflows. */
const JOB_MESSAGES = new Set(['granted', 'refused', 'revoked']);
/** A standing message (to a host or standby workflow) given up on is tried again this often. */
const STANDING_RETRY_MS = 5 * 60 * 1000;
/** An idle pool (no lease, no queue) still checks once an hour that its host workflows run. */
const IDLE_SWEEP_MS = 60 * 60 * 1000;

export async function poolWorkflow(input: PoolInput, ...parts: PoolStatePart[]): Promise<void> {
  const state: PoolState = input.packed
    ? unpackState(input.packed, parts)
    : (input.state ?? { ...newPoolState(input.name), recovering: true });
  let settings: PoolSettings = input.settings;
  // The hosts as the settings it starts with say (a new run, or settings changed across continue-as-new).
  state.hosts = mergeHosts(state.hosts, settings);
  const outbox: OutboxEntry[] = (state.outbox ??= []);
  let dirty = true;
  /** Child workflow starts not yet confirmed: continue-as-new waits for them (they take milliseconds). */
  let starting = 0;

  // Patch `fleet-ec2-machine`: EC2 fleets plan with the EC2 Mac machine's whole park cycle (stop, scrub,
  // settling). Runs recorded before plan as they did, so their histories replay.
  const ec2Machine = patched('fleet-ec2-machine');
  const feed = (event: PoolEvent): string | undefined => {
    const { commands, reply } = step(state, event, { now: Date.now(), settings, newId: uuid4, ec2Machine });
    for (const c of commands) carry(c);
    dirty = true;
    return reply;
  };

  function carry(c: PoolCommand): void {
    switch (c.kind) {
      case 'send':
        outbox.push({ message: c.message, attempts: 0 });
        return;
      case 'log':
        // The decision ring is short; the worker log keeps every decision.
        log.info(`pool ${state.name}: ${c.decision.what}`, { pool: state.name, at: c.decision.at });
        return;
      case 'start':
        starting++;
        startChild(c.workflowType, {
          workflowId: c.workflowId,
          args: [c.input],
          parentClosePolicy: ParentClosePolicy.ABANDON,
          staticSummary: c.summary,
          typedSearchAttributes: [
            { key: SA_POOL, value: state.name },
            ...(c.workflowType === 'staticHostWorkflow'
              ? [{ key: SA_HOST, value: (c.input as StaticHostInput).spec.name }]
              : []),
          ],
        })
          .catch((e: unknown) => {
            // Running already (a restarted pool starts its hosts again): that is the one we want.
            if (e instanceof WorkflowExecutionAlreadyStartedError) return;
            feed({ type: 'start-failed', workflowId: c.workflowId });
          })
          .finally(() => starting--);
        return;
    }
  }

  setDescribedHandler(poolStateQuery, () => poolView(state, outbox.length));

  setDescribedHandler(requestLeaseSignal, (request) => void feed({ type: 'lease-requested', request }));
  setDescribedHandler(releaseLeaseSignal, (r) => void feed({ type: 'lease-released', ...r }));
  setDescribedHandler(hostReportSignal, (report) => void feed({ type: 'host-report', report }));
  setDescribedHandler(hostReadySignal, (spec) => void feed({ type: 'host-ready', spec }));
  setDescribedHandler(hostPhaseSignal, (report) => void feed({ type: 'host-phase', report }));
  setDescribedHandler(hostGoneSignal, ({ workflowId, reason }) => void feed({ type: 'host-gone', workflowId, reason }));
  setDescribedHandler(hostDrainSignal, (d) => void feed({ type: 'host-cordon', ...d }));
  setDescribedHandler(standbyReadySignal, (r) => void feed({ type: 'standby-ready', ...r }));
  setDescribedHandler(prePullDoneSignal, (r) => void feed({ type: 'prepull-done', ...r }));
  // Settings have one writer: `marina pool apply` (src/client/pool-settings.ts). A worker only starts a
  // pool that is not running; one from before versioned settings still signals its config, which a
  // versioned pool ignores, so workers with different files cannot make the settings flap.
  let settingsVersion = input.settingsVersion;
  setDescribedHandler(poolSettingsQuery, () => ({ settings, version: settingsVersion ?? null }));
  setDescribedHandler(syncHostsSignal, (next) => {
    if (settingsVersion) {
      log.warn(
        `pool ${state.name}: ignored settings sent by an older worker; this pool runs settings v${settingsVersion.version} set by ${settingsVersion.by} (change them with marina pool apply)`,
      );
      return;
    }
    settings = next;
    feed({ type: 'settings', settings: next });
  });
  setDescribedHandler(
    applySettingsUpdate,
    (request) => {
      settings = request.settings;
      settingsVersion = {
        version: (settingsVersion?.version ?? 0) + 1,
        by: request.by,
        at: new Date(Date.now()).toISOString(),
        ...(request.source ? { source: request.source } : {}),
      };
      feed({ type: 'settings', settings });
      return settingsVersion;
    },
    {
      validator: (request) => {
        const problem = settingsRequestProblem(request, settingsVersion?.version ?? 0);
        if (problem)
          throw ApplicationFailure.create({ message: problem, type: 'InvalidPoolSettings', nonRetryable: true });
      },
    },
  );

  // Planner and operator controls: validated, so a bad request fails at once with the fix and changes
  // nothing; a good one is recorded and answered at once. A drain's or a retire's progress shows in the
  // pool's query and details (`marina pool drain --wait` follows it).
  setDescribedHandler(controlPoolUpdate, (control) => ({ message: feed({ type: 'control', control })! }), {
    validator: (control) => {
      try {
        validateControl(state, settings, control);
      } catch (e) {
        throw ApplicationFailure.create({
          message: (e as Error).message,
          type: 'InvalidPoolControl',
          nonRetryable: true,
        });
      }
    },
  });

  // A new run learns what the lease takers hold and wait for before placing anything.
  if (state.recovering) void recover();
  async function recover(): Promise<void> {
    const leases: PoolState['leases'] = [];
    const requests: LeaseRequestMsg[] = [];
    const hostWorkflows: string[] = [];
    const ec2Hosts: NonNullable<Extract<PoolEvent, { type: 'recovered' }>['ec2Hosts']> = [];
    const standbys: NonNullable<Extract<PoolEvent, { type: 'recovered' }>['standbys']> = [];
    let pageToken: string | undefined;
    do {
      const page = await recoverPool({ pool: state.name, ...(pageToken ? { pageToken } : {}) });
      for (const l of page.leases) leases.push(l);
      for (const r of page.requests) requests.push(r);
      for (const h of page.hostWorkflows) hostWorkflows.push(h);
      for (const h of page.ec2Hosts) ec2Hosts.push(h);
      for (const sb of page.standbys) standbys.push(sb);
      pageToken = page.nextPageToken;
    } while (pageToken);
    feed({ type: 'recovered', leases, requests, hostWorkflows, ec2Hosts, standbys });
  }

  // The outbox: each message on its own; a failing one backs off, then is parked, and never holds the rest.
  let delivering = false;
  async function deliver(): Promise<void> {
    delivering = true;
    try {
      for (;;) {
        const now = Date.now();
        // A target's messages go in order: one backing off holds back the later ones to the same target
        // (a revocation must not overtake the grant it revokes).
        const held = new Set<string>();
        const batch: OutboxEntry[] = [];
        for (const e of outbox) {
          if (batch.length >= OUTBOX_BATCH) break;
          if (held.has(e.message.to)) continue;
          if ((e.notBefore ?? 0) > now) held.add(e.message.to);
          else batch.push(e);
        }
        if (batch.length === 0) return;
        const outcomes = await deliverPoolMessages(batch.map((e) => e.message)).catch((err: Error) =>
          batch.map(() => ({ error: err.cause instanceof Error ? err.cause.message : err.message })),
        );
        const closed: string[] = [];
        batch.forEach((entry, i) => {
          const outcome = outcomes[i]!;
          if (outcome !== 'ok' && outcome !== 'gone') {
            entry.attempts++;
            entry.lastError = outcome.error;
            if (entry.attempts < OUTBOX_ATTEMPTS) {
              entry.notBefore = Date.now() + 1000 * 2 ** (entry.attempts - 1);
              return;
            }
            park(entry);
            // To a job, a message given up on is settled by the job itself (it asks again); to the pool's own
            // host and standby workflows it stands: shown as parked, then tried every few minutes.
            if (!JOB_MESSAGES.has(entry.message.kind)) {
              entry.attempts = 0;
              entry.notBefore = Date.now() + STANDING_RETRY_MS;
              return;
            }
          } else if (outcome === 'gone') closed.push(entry.message.to);
          outbox.splice(outbox.indexOf(entry), 1);
        });
        if (closed.length > 0) feed({ type: 'workflows-closed', ids: closed });
      }
    } finally {
      delivering = false;
      dirty = true;
    }
  }
  function park(entry: OutboxEntry): void {
    const m = entry.message;
    const parked = (state.parked ??= []);
    parked.push({
      at: new Date(Date.now()).toISOString(),
      to: m.to,
      kind: m.kind,
      attempts: entry.attempts,
      error: entry.lastError ?? 'unknown',
    });
    if (parked.length > PARKED_KEPT) parked.splice(0, parked.length - PARKED_KEPT);
    log.warn(`pool ${state.name}: gave up on ${m.kind} to ${m.to} after ${entry.attempts} tries: ${entry.lastError}`);
    if (m.kind === 'granted') feed({ type: 'grant-undeliverable', jobWorkflowId: m.to, error: entry.lastError ?? '' });
  }

  // Leases of jobs that died without a word (terminated) go back; an idle pool checks only hourly.
  let checking = false;
  let lastCheck = Date.now();
  async function checkClosed(): Promise<void> {
    checking = true;
    lastCheck = Date.now();
    try {
      const ids = workflowsToCheck(state, Date.now());
      // In slices: 10,000 queued ids in one activity input would near Temporal's 256 KB payload warning.
      for (let i = 0; i < ids.length; i += CHECK_SLICE) {
        const closed = await findClosedWorkflows(ids.slice(i, i + CHECK_SLICE));
        if (closed.length > 0) feed({ type: 'workflows-closed', ids: closed });
      }
    } catch {
      // Next round; a lost check only delays a reclaim.
    } finally {
      checking = false;
      dirty = true;
    }
  }
  const checkEveryMs = () =>
    state.leases.length + state.queue.length > 0 ? settings.leaseCheckSeconds * 1000 : IDLE_SWEEP_MS;

  let details = '';
  let timer: { at: number; fired: Promise<void> } | undefined;
  // One pending wake-up on `dirty`, reused until it fires: a new condition per loop would pile up.
  let woken: Promise<void> | undefined;
  let nextAwsTick = Infinity;
  for (;;) {
    if (dirty) {
      dirty = false;
      feed({ type: 'tick' });
      dirty = false;
      const d =
        describePool(state, outbox.length) +
        (settingsVersion
          ? `\n\nSettings v${settingsVersion.version}, set by ${settingsVersion.by} at ${settingsVersion.at}`
          : '');
      if (d !== details) setCurrentDetails((details = d));
    }
    const now = Date.now();
    if (!delivering && outbox.some((e) => (e.notBefore ?? 0) <= now)) void deliver();
    // Work that appears in an idle pool brings the next check forward (the interval is read each time).
    const nextCheck = checking || state.recovering ? Infinity : lastCheck + checkEveryMs();
    if (now >= nextCheck) void checkClosed();
    // Idle EC2 hosts age while nothing happens: look again once per EC2 minute (at most 4 times a second);
    // an AWS pool with no host yet still looks each minute (a capacity schedule may begin).
    if (settings.aws)
      nextAwsTick = Math.min(
        nextAwsTick,
        now + Math.max(250, Object.keys(state.fleet ?? {}).length > 0 ? (60 / settings.aws.timeScale) * 1000 : 60_000),
      );

    const info = workflowInfo();
    if (
      (info.continueAsNewSuggested || info.historyLength >= (settings.historyEventsPerRun ?? Infinity)) &&
      !state.recovering
    ) {
      // Only child starts (milliseconds) are waited for: deliveries in flight stay in the outbox and go
      // again from the next run (a repeated message is harmless), checks are simply done again.
      await condition(() => starting === 0 && allHandlersFinished());
      // Packed, and its queue, leases and outbox cut into parts: no payload near Temporal's limits.
      const { packed, parts: next } = packState(state);
      await continueAsNew<typeof poolWorkflow>(
        { name: state.name, settings, packed, ...(settingsVersion ? { settingsVersion } : {}) },
        ...next,
      );
    }
    let backoff = Infinity;
    for (const e of outbox) if (e.notBefore !== undefined && e.notBefore < backoff) backoff = e.notBefore;
    const wakeAt = Math.min(
      checking || state.recovering ? Infinity : lastCheck + checkEveryMs(),
      nextAwsTick,
      delivering ? Infinity : backoff,
    );
    // One timer per deadline, left running when an event wakes the loop first: a timer cancelled and
    // started again at every wake would cost two history events per event.
    if (Number.isFinite(wakeAt) && !(timer && timer.at <= wakeAt)) {
      const t = {
        at: wakeAt,
        fired: sleep(Math.max(100, wakeAt - Date.now())).then(() => {
          if (timer === t) timer = undefined;
        }),
      };
      timer = t;
    }
    if (!dirty) {
      woken ??= condition(() => dirty).then(() => {
        woken = undefined;
      });
      await Promise.race([woken, ...(timer ? [timer.fired] : [])]);
    }
    if (Date.now() >= nextAwsTick) {
      nextAwsTick = Infinity;
      dirty = true;
    }
    if (Date.now() >= backoff) dirty = true;
  }
}
