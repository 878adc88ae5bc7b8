/**
 * One EC2 Mac dedicated host, for its whole life:
 *
 *   allocate → wait until available → launch the instance → wait for SSH → ready (serve)
 *   ready → replace the root volume → ready                  (clean, no scrub)
 *   ready → park: terminate → scrubbing → parked → launch → … (billing pauses, the host stays ours)
 *   any   → retire: terminate → release once AWS allows (24 h) → released
 *
 * The pool decides (src/policy/fleet.ts and retire.ts) and sends commands; this workflow
 * executes them and reports each phase back. Every EC2 call is an idempotent activity keyed
 * by this workflow's id and step, so a worker killed anywhere resumes here without a second
 * host, instance or replacement task. Money leaks only if a host outlives its workflow; the
 * reconciler catches that.
 *
 * A host released behind Marina's back (someone ran `aws ec2 release-hosts`, or AWS reclaimed it) is
 * final: the lookups fail typed (HostNotFound, HostReleased), and the workflow tells the pool the host is
 * gone, skips the terminate and release that cannot succeed, and fails `HostVanished` (see endVanished).
 *
 * Reports to the pool are level-triggered (workflows/host-reports.ts): the latest of each kind is kept and
 * re-sent with backoff until the pool has taken it, and again whenever the pool asks (resendReport).
 */
import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  condition,
  isCancellation,
  getExternalWorkflowHandle,
  continueAsNew,
  defineQuery,
  defineSignal,
  patched,
  proxyActivities,
  setCurrentDetails,
  sleep,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { setDescribedHandler } from './handlers';
import type { Activities } from '../activities/types';
import { fleetPhaseOfHost } from '../src/policy/pool-fleet';
import type { HostWorkflowLivePhase } from '../src/ec2mac/lifecycle';
import { MIN_ALLOCATION_SECONDS } from '../src/ec2mac/model';
import {
  HOST_NOT_FOUND,
  HOST_RELEASED,
  INSTANCE_NOT_FOUND,
  RELEASED_STATES,
  notFoundIsFinal,
  notFoundRecheckMs,
  type NotFoundStreak,
} from '../src/ec2mac/errors';
import type { CordonReason, HostSpec } from '../src/domain/pool';
import {
  SA_HOST,
  SA_HOST_STATE,
  SA_POOL,
  hostDrainSignal,
  hostGoneSignal,
  hostPhaseSignal,
  hostReadySignal,
  poolWorkflowId,
  resendReportSignal,
} from './definitions';
import {
  emptyReports,
  markDelivered,
  nextReport,
  noteFailure,
  redeliverAll,
  setReport,
  type GoneReport,
  type HostReports,
  type PendingReport,
} from './host-reports';

/** Live phases are named after the EC2 Mac machine state each waits in (src/ec2mac/lifecycle.ts). */
export type HostPhase =
  | HostWorkflowLivePhase
  | 'retiring'
  | 'releasing'
  | 'released'
  | 'failed'
  /** Released outside Marina (or reclaimed by AWS): the workflow ends failed `HostVanished`. */
  | 'vanished';

/** What the pool asks of a host besides retiring it. */
export type HostCommand = 'park' | 'launch' | 'replace-root';

export interface HostWorkflowInput {
  pool: string;
  /**
   * Virtual seconds per real second of the EC2 endpoint's clock (the pool's aws.timeScale):
   * 1 on AWS; the emulator's speed factor in compressed-time runs.
   */
  timeScale: number;
  /** How often to poll EC2 while waiting, in EC2 seconds. */
  pollSeconds: number;
  /** Started by the pool: tell it when the host is ready (offering these resources and labels), each phase, and when it is gone. */
  announce?: HostSpec;
  /** Carried across continue-as-new. */
  life?: HostLife;
}

export interface HostLife {
  phase: HostPhase;
  hostId?: string;
  zone?: string;
  /** EC2 AllocationTime, epoch seconds on EC2's clock. */
  allocatedAt?: number;
  /** Workflow time (ms) when allocatedAt was read: maps workflow time onto EC2's clock. */
  allocatedAtWorkflowMs?: number;
  /** For a host adopted by the reconciler: its age on EC2's clock when adopted. */
  ageAtAdoptionSeconds?: number;
  instanceId?: string;
  /** Bumped for each instance this host runs: one RunInstances token per generation. */
  generation: number;
  /** Root-volume replacements so far: one ClientToken each. */
  replacements?: number;
  /** EC2 seconds spent scrubbing before the current phase (unbilled under most readings). */
  scrubbingSeconds?: number;
  /** EC2 time the current phase began. */
  phaseSince?: number;
  /** A command from the pool waiting to be carried out. */
  command?: { action: HostCommand; reason: string };
  /** Launch only to terminate at once: parks a host that has no instance (an available host is billed). */
  parkOnLaunch?: boolean;
  /** AWS has the host under assessment: the pool places nothing on it meanwhile. */
  underAssessment?: boolean;
  endpoint?: { address: string; port: number; knownHostsLine: string };
  retireReason?: string;
  draining: boolean;
  releaseAttempts: number;
  error?: string;
  /** Why the host is gone from EC2 behind Marina's back: released outside Marina, or reclaimed by AWS. */
  vanished?: string;
  /** Reports to the pool: the latest of each kind, and whether the pool took it (workflows/host-reports.ts). */
  reports?: HostReports;
  /** Something the Web UI should say besides the phase (e.g. a gone report the pool never took). */
  note?: string;
}

export interface HostView extends HostLife {
  /** Age in EC2 seconds, and when AWS allows the release. */
  ageSeconds?: number;
  releasableAt?: string;
}

export const hostWorkflowId = (pool: string, name: string): string => `host/${pool}/${name}`;
export const hostStateQuery = defineQuery<HostView>('hostState');
/** Retire: stop taking work, terminate the instance, release as soon as AWS allows. */
export const retireHostSignal = defineSignal<[{ reason: string }]>('retireHost');
/** Drain: take no new work; running work finishes. */
export const drainHostSignal = defineSignal<[{ drain: boolean }]>('drainHost');
/** From the pool's fleet policy: park, launch or clean this host. The pool sends it only to an idle host. */
export const hostCommandSignal = defineSignal<[{ action: HostCommand; reason: string }]>('hostCommand');

// One EC2 call (and the SDK's own retries) takes seconds: a short timeout lets a call lost
// with a dead worker be retried soon, and the idempotency tokens make the retry safe.
const ec2 = proxyActivities<Activities>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1m' },
});

/** A failed report delivery is tried again after this, doubling up to REPORT_RETRY_MAX_MS (durable timers). */
const REPORT_RETRY_FIRST_MS = 1000;
/** At most ~300 attempts a day while the pool is down: a few thousand history events, no tight loop. */
const REPORT_RETRY_MAX_MS = 5 * 60_000;
/** How long a host that is done waits for the pool to take its gone report before it ends anyway. */
const GONE_REPORT_WAIT_MS = 10 * 60_000;

/** The typed failure an activity ended with (activities/ec2.ts), if any. */
function activityFailure(e: unknown): ApplicationFailure | undefined {
  const cause = e instanceof ActivityFailure ? e.cause : undefined;
  return cause instanceof ApplicationFailure ? cause : undefined;
}

const LIVE: ReadonlySet<HostPhase> = new Set<HostPhase>([
  'waiting-available',
  'launching',
  'booting',
  'ready',
  'replacing-root',
  'parking',
  'scrubbing',
  'parked',
]);

export async function hostWorkflow(input: HostWorkflowInput): Promise<HostLife> {
  const id = workflowInfo().workflowId;
  const life: HostLife = input.life ?? { phase: 'allocating', generation: 0, draining: false, releaseAttempts: 0 };
  const scale = input.timeScale;
  /** EC2's clock now, from the workflow's (deterministic) clock. */
  const ec2Now = (): number => life.allocatedAt! + ((Date.now() - life.allocatedAtWorkflowMs!) / 1000) * scale;
  // Polls run on the EC2 clock too, but never faster than 5 per second.
  const pollMs = Math.max(200, Math.round((input.pollSeconds / scale) * 1000));
  // Waits heartbeat once per poll; a dead worker's wait is noticed after a few missed polls.
  const waiting = proxyActivities<Activities>({
    startToCloseTimeout: '4h',
    heartbeatTimeout: Math.max(10_000, 3 * pollMs),
    retry: { initialInterval: '1s', maximumInterval: '1m' },
  });
  const sleepEc2 = (seconds: number): Promise<void> => sleep(Math.max(1, Math.ceil((seconds / scale) * 1000)));
  const pool = getExternalWorkflowHandle(poolWorkflowId(input.pool));

  // Patch `host-reports-level-triggered`. Old code sent each report as it happened, fire and forget (a phase,
  // a cordon), or awaited once (ready; gone with its failure ignored): a report lost while the pool was not
  // running was gone for good. Now each report goes into the outbox and a loop delivers it (its signal commands
  // come at other points of the history, and a failed delivery adds timers), so a history recorded by the old
  // code replays only on the old path: `levelReports` is false there (no marker), and the old sends are kept
  // below, command for command. A run started by continue-as-new takes the new path.
  const levelReports = patched('host-reports-level-triggered');
  /** The outbox, for a host the pool started (announce) on the new path; undefined: the old sends. */
  const reports: HostReports | undefined = input.announce && levelReports ? seedReports() : undefined;
  let sending = false;
  let resendAsked = false;

  /** Tells the pool (if it started this host), never failing the host over a lost message. (Old path.) */
  const tell = (send: () => Promise<void>): void => {
    if (input.announce) void send().catch(() => undefined);
  };

  /** Runs a long wait, cut short by a retire. Resolves false if cut short. */
  const untilRetired = (wait: () => Promise<unknown>): Promise<boolean> =>
    CancellationScope.cancellable(async () => {
      const scope = CancellationScope.current();
      void condition(() => life.retireReason !== undefined).then(() => scope.cancel());
      try {
        await wait();
        return true;
      } catch (e) {
        if (isCancellation(e) && life.retireReason !== undefined) return false;
        throw e;
      }
    });

  if (life.allocatedAt !== undefined && life.allocatedAtWorkflowMs === undefined) {
    life.allocatedAtWorkflowMs = Date.now() - ((life.ageAtAdoptionSeconds ?? 0) * 1000) / scale;
  }

  setDescribedHandler(hostStateQuery, () => ({
    ...life,
    ...(life.allocatedAt !== undefined
      ? {
          ageSeconds: Math.round(ec2Now() - life.allocatedAt),
          releasableAt: new Date((life.allocatedAt + MIN_ALLOCATION_SECONDS) * 1000).toISOString(),
        }
      : {}),
  }));
  setDescribedHandler(retireHostSignal, ({ reason }) => {
    life.retireReason ??= reason;
  });
  setDescribedHandler(hostCommandSignal, (c) => {
    life.command = c;
  });
  // A restarted pool asks each host for its reports: send them all again, now.
  setDescribedHandler(resendReportSignal, () => {
    if (!reports) return;
    redeliverAll(reports);
    resendAsked = true;
  });
  const cordon = (drain: boolean, reason: CordonReason): void => {
    if (!life.hostId) return;
    const msg = { host: life.hostId, drain, reason };
    if (reports) setReport(reports, 'cordon', msg);
    else tell(() => pool.signal(hostDrainSignal, msg));
  };
  setDescribedHandler(drainHostSignal, ({ drain }) => {
    life.draining = drain;
    cordon(drain, 'drain');
  });

  /** The phase line of the Web UI details; notes on reports and the end are added to it. */
  let detailsLine = '';
  const showDetails = (line = detailsLine): void => {
    detailsLine = line;
    const r = reports;
    const undelivered =
      r && r.failures > 0
        ? ` · reports to ${poolWorkflowId(input.pool)} undelivered since ${r.failingSince ?? '?'}` +
          ` (${r.failures} attempt(s): ${r.lastError ?? '?'}); retrying with backoff`
        : '';
    setCurrentDetails(line + undelivered + (life.note ? ` · ${life.note}` : ''));
  };
  // Delivers the outbox in the background for the workflow's whole run (not cancelled with it: a last report
  // may still matter).
  if (reports) void CancellationScope.nonCancellable(() => deliverReports(reports));

  const enter = (phase: HostPhase): void => {
    life.phase = phase;
    if (life.allocatedAt !== undefined && life.allocatedAtWorkflowMs !== undefined) life.phaseSince = ec2Now();
    upsertSearchAttributes([
      { key: SA_POOL, value: input.pool },
      { key: SA_HOST_STATE, value: phase },
      ...(life.hostId ? [{ key: SA_HOST, value: life.hostId }] : []),
    ]);
    showDetails(
      `**${phase}** · host ${life.hostId ?? '—'} (${life.zone ?? '—'}) · instance ${life.instanceId ?? '—'}` +
        ` · generation ${life.generation}` +
        (life.endpoint && phase === 'ready' ? ` · ${life.endpoint.address}:${life.endpoint.port}` : '') +
        (life.command ? ` · ${life.command.action}: ${life.command.reason}` : '') +
        (life.retireReason ? ` · retiring: ${life.retireReason}` : ''),
    );
    const fleet = fleetPhaseOfHost(phase, life.parkOnLaunch === true);
    // `ready` is announced with the host's endpoint (hostReady); gone with hostGone.
    if (fleet && fleet !== 'ready' && life.allocatedAt !== undefined) {
      const report = {
        workflowId: id,
        host: life.hostId,
        phase: fleet,
        ageSeconds: ec2Now() - life.allocatedAt,
        scrubbingSeconds: life.scrubbingSeconds ?? 0,
      };
      if (reports) setReport(reports, 'status', { kind: 'phase', report });
      else tell(() => pool.signal(hostPhaseSignal, report));
    }
  };

  /** Tells the pool the host is gone (its last report). On the old path, once, awaited, failure ignored. */
  const reportGone = async (gone: GoneReport): Promise<void> => {
    if (!input.announce) return;
    if (reports) setReport(reports, 'gone', gone);
    else await pool.signal(hostGoneSignal, gone).catch(() => undefined);
  };

  /** Records that EC2 no longer has the host; the main loop then ends the workflow (endVanished). */
  const vanish = (evidence: string): void => {
    life.vanished ??=
      `host ${life.hostId} no longer exists in EC2: released outside Marina ` +
      `(someone ran release-hosts, or AWS reclaimed it); ${evidence}`;
  };
  /** What a lookup's typed failure says of the host. */
  const evidenceOf = (f: ApplicationFailure): string => {
    const d = (f.details?.[0] ?? {}) as { call?: string; code?: string; state?: string };
    if (f.type === HOST_RELEASED)
      return d.state === 'released-permanent-failure'
        ? 'EC2 lists it released-permanent-failure (AWS retired it)'
        : `EC2 lists it ${d.state ?? 'released'}`;
    return `${d.call ?? 'EC2'} answered ${d.code ?? 'not found'}`;
  };
  /**
   * Looks the host up; true (and recorded) when EC2 no longer has it. Called after a new kind of event (an
   * instance not found, a parked host's check): never on a path an old history took.
   */
  const hostGone = async (): Promise<boolean> => {
    try {
      const h = await ec2.describeHost({ pool: input.pool, hostId: life.hostId! });
      if (!RELEASED_STATES.has(h.state)) return false;
      vanish(
        h.state === 'released-permanent-failure'
          ? 'EC2 lists it released-permanent-failure (AWS retired it)'
          : `EC2 lists it ${h.state}`,
      );
      return true;
    } catch (e) {
      const f = activityFailure(e);
      if (f?.type !== HOST_NOT_FOUND) throw e;
      vanish(evidenceOf(f));
      return true;
    }
  };
  /**
   * True when an activity's failure means the host is gone from EC2 (recorded in `life.vanished`). Not-found
   * is final for a host: allocateHost returned only after DescribeHosts answered for it, so this workflow has
   * seen it described (src/ec2mac/errors.ts, notFoundIsFinal). An instance not found (by the same rule, in
   * the activity) asks EC2 about its host: gone with it, or lost alone (a failure: the host is retired).
   */
  const vanishedBy = async (e: unknown): Promise<boolean> => {
    const f = activityFailure(e);
    if (f?.type === HOST_NOT_FOUND || f?.type === HOST_RELEASED) {
      vanish(evidenceOf(f));
      return true;
    }
    if (f?.type === INSTANCE_NOT_FOUND) return hostGone().catch(() => false);
    return false;
  };

  /** Runs one step of a host that exists: a failure retires it (releases it) instead of leaking it. */
  const step = async (what: () => Promise<void>): Promise<void> => {
    try {
      await what();
    } catch (e) {
      if (await vanishedBy(e)) return;
      const err = e as Error & { cause?: Error };
      life.error = err.cause?.message ?? err.message;
      life.retireReason ??= `failed: ${life.error}`;
    }
  };

  /**
   * TerminateInstances. An instance EC2 does not know has ended once not-found is final
   * (src/ec2mac/errors.ts): at once for one that served (seen running), else after a streak of not-founds
   * over minutes (a park right after the launch may hit an id not propagated yet, and the instance may be
   * running). Old histories recorded no `not-found` answer: their path is unchanged.
   */
  const terminate = async (): Promise<void> => {
    const missing: NotFoundStreak = { count: 0 };
    for (;;) {
      const r = await ec2.terminateInstance({ pool: input.pool, instanceId: life.instanceId! });
      if (r !== 'not-found') return;
      if (notFoundIsFinal(life.endpoint !== undefined, missing, Date.now())) return;
      showDetails(`**${life.phase}** · instance ${life.instanceId} not found (${missing.count}×): looking again`);
      await sleep(notFoundRecheckMs(missing));
    }
  };

  /** Continue as new with everything carried in `life` (the outbox included, once no report is in flight). */
  const continueAsNewNow = async (): Promise<never> => {
    if (reports) await condition(() => !sending);
    return continueAsNew<typeof hostWorkflow>({ ...input, life });
  };

  if (life.phase === 'allocating') {
    enter('allocating');
    // A fatal error here leaves nothing behind: no host was made. The pool still hears of it,
    // or it would count this host's slots as coming for ever.
    const h = await ec2.allocateHost({ pool: input.pool, workflowId: id }).catch(async (e: Error) => {
      const cause = (e as Error & { cause?: Error }).cause?.message ?? e.message;
      if (input.announce) {
        if (reports) {
          setReport(reports, 'gone', { workflowId: id, reason: `allocation failed: ${cause}` });
          await flushGone();
        } else {
          await pool
            .signal(hostGoneSignal, { workflowId: id, reason: `allocation failed: ${cause}` })
            .catch(() => undefined);
        }
      }
      throw e;
    });
    life.hostId = h.hostId;
    life.zone = h.zone;
    life.allocatedAt = h.allocatedAt;
    life.allocatedAtWorkflowMs = Date.now();
    enter('waiting-available');
  }

  while (LIVE.has(life.phase)) {
    if (life.vanished) break;
    if (life.retireReason) {
      enter('retiring');
      break;
    }
    switch (life.phase) {
      case 'waiting-available':
        await step(async () => {
          await waiting.waitHostAvailable({ pool: input.pool, hostId: life.hostId!, pollMs });
          enter('launching');
        });
        break;
      case 'launching':
        await step(async () => {
          life.instanceId = await ec2.launchInstance({
            pool: input.pool,
            workflowId: id,
            hostId: life.hostId!,
            generation: life.generation,
          });
          // An instance launched only to park the host is terminated at once: the scrub follows.
          enter(life.parkOnLaunch ? 'parking' : 'booting');
        });
        break;
      case 'booting':
        await step(async () => {
          life.endpoint = await waiting.waitInstanceReady({ pool: input.pool, instanceId: life.instanceId!, pollMs });
          await serveFromNowOn();
        });
        break;
      case 'ready':
        await serve();
        break;
      case 'replacing-root':
        await step(async () => {
          const taskId = await ec2.replaceRootVolume({
            pool: input.pool,
            workflowId: id,
            instanceId: life.instanceId!,
            step: life.replacements ?? 0,
          });
          await waiting.waitRootVolumeReplaced({ pool: input.pool, taskId, pollMs });
          // A fresh root volume has fresh SSH host keys: pin the new one. The instance served: seen.
          life.endpoint = await waiting.waitInstanceReady({
            pool: input.pool,
            instanceId: life.instanceId!,
            pollMs,
            seen: true,
          });
          life.replacements = (life.replacements ?? 0) + 1;
          await serveFromNowOn();
        });
        break;
      case 'parking':
        await step(async () => {
          await terminate();
          life.instanceId = undefined;
          life.endpoint = undefined;
          life.parkOnLaunch = false;
          life.generation++;
          enter('scrubbing');
        });
        break;
      case 'scrubbing':
        await step(async () => {
          const since = ec2Now();
          // AWS releases a scrubbing host (once Occupied ends): a retire need not wait for the scrub to end.
          const done = await untilRetired(() =>
            waiting.waitHostAvailable({ pool: input.pool, hostId: life.hostId!, pollMs }),
          );
          life.scrubbingSeconds = (life.scrubbingSeconds ?? 0) + (ec2Now() - since);
          if (done) enter('parked');
        });
        break;
      case 'parked':
        await parked();
        break;
      default:
        break;
    }
  }

  /** The instance answers SSH (after a launch or a root-volume replacement): serve. */
  async function serveFromNowOn(): Promise<void> {
    life.command = undefined;
    enter('ready');
    if (input.announce) {
      const spec = {
        name: life.hostId!,
        resources: input.announce.resources,
        labels: input.announce.labels,
        dynamic: {
          workflowId: id,
          ...life.endpoint!,
          ageSecondsAtReady: ec2Now() - life.allocatedAt!,
          readyAtMs: Date.now(),
        },
      };
      // On the old path a failed ready signal failed this step (and retired the host); now it is re-sent.
      if (reports) setReport(reports, 'status', { kind: 'ready', spec });
      else await pool.signal(hostReadySignal, spec);
      // A new hostReady replaces the pool's view of the host: carry a drain or assessment over.
      if (life.draining) cordon(true, 'drain');
      else if (life.underAssessment) cordon(true, 'assessment');
    }
  }

  /** Serves until the pool asks for something else; watches EC2 for what AWS (or anyone) decides about the host. */
  async function serve(): Promise<void> {
    const watchMs = Math.max(1000, Math.round(((input.pollSeconds * 10) / scale) * 1000));
    for (;;) {
      const woke = await condition(() => life.retireReason !== undefined || life.command !== undefined, watchMs);
      if (woke) break;
      let h;
      try {
        h = await ec2.describeHost({ pool: input.pool, hostId: life.hostId! });
      } catch (e) {
        // Not found: released outside Marina (a new, non-retryable failure: no old history has it).
        const f = activityFailure(e);
        if (f?.type !== HOST_NOT_FOUND) throw e;
        vanish(evidenceOf(f));
        return;
      }
      // Patch `host-released-state-is-final`: old code went on serving a host EC2 lists `released` (the
      // state matched nothing it looked for). Asked only when EC2 says so, so the marker is written at that
      // point; a history recorded before keeps serving, as it did.
      if (RELEASED_STATES.has(h.state) && patched('host-released-state-is-final')) {
        vanish(
          h.state === 'released-permanent-failure'
            ? 'EC2 lists it released-permanent-failure (AWS retired it)'
            : `EC2 lists it ${h.state}`,
        );
        return;
      }
      if (h.state === 'permanent-failure') {
        life.retireReason ??= 'AWS marked the host permanent-failure';
        return;
      }
      // AWS is checking the hardware: running work goes on (AWS leaves the instance up), new work goes elsewhere.
      const assessed = h.state === 'under-assessment';
      if (assessed !== (life.underAssessment === true)) {
        life.underAssessment = assessed;
        if (!life.draining) cordon(assessed, 'assessment');
        showDetails(`**ready** · host ${life.hostId}${assessed ? ' · under assessment by AWS: cordoned' : ''}`);
      }
      if (workflowInfo().continueAsNewSuggested) await continueAsNewNow();
    }
    const c = life.command;
    if (life.retireReason || !c) return;
    // Patch `host-clears-acted-park`: the old code left a park it carried out standing, so once the scrub
    // was over, parked() took it again: launch, terminate, a second scrub of hours. Histories recorded before
    // keep that path.
    if (c.action === 'park' && patched('host-clears-acted-park')) life.command = undefined;
    if (c.action === 'park') enter('parking');
    else if (c.action === 'replace-root') enter('replacing-root');
    else life.command = undefined; // launching a host that runs already: nothing to do
  }

  /** Available without an instance: wait for a launch (to serve, or to park it). */
  async function parked(): Promise<void> {
    for (;;) {
      const woke = await condition(
        () => life.retireReason !== undefined || life.command !== undefined,
        Math.max(1000, Math.round(((input.pollSeconds * 60) / scale) * 1000)),
      );
      if (woke) break;
      // Patch `host-parked-watches-ec2`: old code never looked at EC2 while parked, so a parked host
      // released outside Marina counted as the pool's capacity until its next launch. Now each wake-up
      // (once per EC2 hour at pollSeconds 60) describes it; histories recorded before (a timer, then the next
      // timer) keep that path.
      if (patched('host-parked-watches-ec2') && (await hostGone())) return;
      if (workflowInfo().continueAsNewSuggested) await continueAsNewNow();
    }
    const c = life.command;
    life.command = undefined;
    if (life.retireReason || !c || c.action === 'replace-root') return;
    life.parkOnLaunch = c.action === 'park';
    enter('launching');
  }

  /**
   * The outbox's delivery loop (new path): sends the next report; on a failure (the pool's run is not there)
   * marks every report to go again and waits, on a durable timer, 1 s doubling to 5 min, or until the pool asks
   * (resendReport: it runs again). History stays small: one signal per report, one timer per failure.
   */
  async function deliverReports(r: HostReports): Promise<void> {
    let wait = REPORT_RETRY_FIRST_MS;
    for (;;) {
      await condition(() => nextReport(r) !== undefined);
      const p = nextReport(r)!;
      sending = true;
      let failed: string | undefined;
      try {
        await deliver(p);
      } catch (e) {
        failed = e instanceof Error ? e.message : String(e);
      } finally {
        sending = false;
      }
      if (failed === undefined) {
        const wasFailing = r.failures > 0;
        markDelivered(r, p);
        wait = REPORT_RETRY_FIRST_MS;
        if (wasFailing) showDetails();
        continue;
      }
      noteFailure(r, failed, new Date(Date.now()).toISOString());
      redeliverAll(r);
      showDetails();
      resendAsked = false;
      await condition(() => resendAsked, wait);
      wait = Math.min(wait * 2, REPORT_RETRY_MAX_MS);
    }
  }

  /** One report to the pool, its ages as of now (the pool dates the allocation from them on receipt). */
  async function deliver(p: PendingReport): Promise<void> {
    const age = life.allocatedAt !== undefined ? ec2Now() - life.allocatedAt : undefined;
    switch (p.kind) {
      case 'status': {
        const m = p.slot.msg;
        if (m.kind === 'ready') {
          const dynamic = { ...m.spec.dynamic!, ...(age !== undefined ? { ageSecondsAtReady: age } : {}) };
          await pool.signal(hostReadySignal, { ...m.spec, dynamic });
        } else {
          await pool.signal(hostPhaseSignal, { ...m.report, ...(age !== undefined ? { ageSeconds: age } : {}) });
        }
        return;
      }
      case 'cordon':
        await pool.signal(hostDrainSignal, p.slot.msg);
        return;
      case 'gone':
        await pool.signal(hostGoneSignal, p.slot.msg);
        return;
    }
  }

  /**
   * The outbox of this run: carried in `life`, or, on the first run on the new path of a host that ran on the
   * old one, what the old path had already sent (marked delivered, so a resendReport has something to send).
   */
  function seedReports(): HostReports {
    if (life.reports) return life.reports;
    const r = (life.reports = emptyReports());
    if (life.allocatedAt === undefined || life.hostId === undefined) return r;
    if (life.phase === 'ready' && life.endpoint) {
      setReport(r, 'status', {
        kind: 'ready',
        spec: {
          name: life.hostId,
          resources: input.announce!.resources,
          labels: input.announce!.labels,
          dynamic: { workflowId: id, ...life.endpoint, ageSecondsAtReady: 0, readyAtMs: Date.now() },
        },
      });
    } else {
      const fleet = fleetPhaseOfHost(life.phase, life.parkOnLaunch === true);
      if (fleet && fleet !== 'ready')
        setReport(r, 'status', {
          kind: 'phase',
          report: {
            workflowId: id,
            host: life.hostId,
            phase: fleet,
            ageSeconds: 0,
            scrubbingSeconds: life.scrubbingSeconds ?? 0,
          },
        });
    }
    if (life.draining || life.underAssessment)
      setReport(r, 'cordon', { host: life.hostId, drain: true, reason: life.draining ? 'drain' : 'assessment' });
    for (const s of [r.status, r.cordon]) if (s) s.delivered = true;
    return r;
  }

  /** Waits (bounded) for the pool to take the gone report; if it does not, says so and ends anyway. */
  async function flushGone(): Promise<void> {
    const gone = reports?.gone;
    if (!gone) return;
    if (await condition(() => gone.delivered, GONE_REPORT_WAIT_MS)) return;
    life.note =
      `the pool did not take this host's gone report within ${GONE_REPORT_WAIT_MS / 60_000} min ` +
      `(${reports.failures} attempt(s), last: ${reports.lastError ?? '?'}); the pool's lease check and the ` +
      `reconciler notice the closed host workflow`;
    showDetails();
  }

  /**
   * The host was released behind Marina's back. Nothing to terminate (an instance cannot outlive its host's
   * release) or release (EC2 has nothing left of it): tell the pool, whose hostGone handler revokes the leases
   * on the host (their jobs run again on another host) and records a decision, and end.
   *
   * The workflow fails (`HostVanished`, not retryable) rather than completing `released`: the host's life was
   * ended by someone else, not by this workflow, and an operator should see it where abnormal ends are looked
   * for (ExecutionStatus="Failed", alerts on failed host workflows) with what happened in the message. Nothing
   * leaks and a retry could not bring the host back; completing would file an outside release among normal ends.
   */
  async function endVanished(why: string): Promise<never> {
    enter('vanished');
    await reportGone({ workflowId: id, host: life.hostId, reason: why });
    await flushGone();
    const told = !input.announce
      ? 'No pool to tell (not started by one).'
      : reports && !reports.gone?.delivered
        ? 'The pool did not take the gone report (see the note).'
        : "The pool was told (hostGone): it revokes the host's leases and their jobs run again on another host.";
    showDetails(
      `**vanished** · ${why}. ${told} Nothing terminated or released: EC2 holds nothing of this host any more` +
        ` (instance ${life.instanceId ?? '—'} went with it).`,
    );
    throw ApplicationFailure.create({ message: why, type: 'HostVanished', nonRetryable: true, details: [life] });
  }

  if (life.vanished) return endVanished(life.vanished);

  if (life.phase === 'retiring') {
    const gone = { workflowId: id, host: life.hostId, reason: life.retireReason ?? 'retired' };
    await reportGone(gone);
    if (life.instanceId) await terminate();
    enter('releasing');
  }
  if (life.phase === 'releasing') {
    for (;;) {
      const r = await ec2.releaseHost({ pool: input.pool, hostId: life.hostId! });
      if (r.released) {
        // Released already: by an earlier attempt whose answer was lost, or outside Marina meanwhile.
        if (r.gone)
          life.note = `ReleaseHosts found the host ${r.gone === 'not-found' ? 'unknown to EC2' : 'released already'} (by an earlier attempt, or outside Marina)`;
        break;
      }
      life.releaseAttempts++;
      // Too young: AWS names the earliest time; wait exactly that (plus a second for clock skew).
      // Occupied: the instance is still shutting down; look again shortly.
      const wait = r.retryAt !== undefined ? r.retryAt - ec2Now() + 1 : 60;
      setCurrentDetails(
        `**releasing** · host ${life.hostId} refused (${r.code}); retrying in ${Math.round(wait)} s (EC2 time)`,
      );
      await sleepEc2(Math.max(1, wait));
    }
    enter('released');
  }
  await flushGone();
  if (life.error) {
    enter('failed');
    throw ApplicationFailure.create({
      message: `host ${life.hostId}: ${life.error} (the host was released)`,
      type: 'HostFailed',
      nonRetryable: true,
    });
  }
  return life;
}
