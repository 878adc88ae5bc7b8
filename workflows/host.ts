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
 */
import {
  ApplicationFailure,
  CancellationScope,
  condition,
  isCancellation,
  getExternalWorkflowHandle,
  continueAsNew,
  defineQuery,
  defineSignal,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities/types';
import { MIN_ALLOCATION_SECONDS } from '../src/ec2mac/model';
import type { CordonReason, HostSpec } from '../src/domain/pool';
import type { FleetHostPhase } from '../src/policy/fleet';
import {
  SA_HOST,
  SA_HOST_STATE,
  SA_POOL,
  hostDrainSignal,
  hostGoneSignal,
  hostPhaseSignal,
  hostReadySignal,
  poolWorkflowId,
} from './definitions';

export type HostPhase =
  | 'allocating'
  | 'waiting-available'
  | 'launching'
  | 'booting'
  | 'ready'
  | 'replacing-root'
  | 'parking'
  | 'scrubbing'
  | 'parked'
  | 'retiring'
  | 'releasing'
  | 'released'
  | 'failed';

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

/** How the pool's fleet policy sees each phase (src/policy/fleet.ts). */
function fleetPhase(p: HostPhase, parkOnLaunch: boolean): FleetHostPhase | undefined {
  switch (p) {
    case 'allocating':
    case 'waiting-available':
      return 'allocating';
    case 'launching':
    case 'booting':
      return parkOnLaunch ? 'pending' : 'launching';
    case 'ready':
      return 'ready';
    case 'replacing-root':
      return 'replacing';
    case 'parking':
    case 'scrubbing':
      return 'pending';
    case 'parked':
      return 'idle';
    default:
      return undefined;
  }
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
  /** Tells the pool (if it started this host), never failing the host over a lost message. */
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

  setHandler(hostStateQuery, () => ({
    ...life,
    ...(life.allocatedAt !== undefined
      ? {
          ageSeconds: Math.round(ec2Now() - life.allocatedAt),
          releasableAt: new Date((life.allocatedAt + MIN_ALLOCATION_SECONDS) * 1000).toISOString(),
        }
      : {}),
  }));
  setHandler(retireHostSignal, ({ reason }) => {
    life.retireReason ??= reason;
  });
  setHandler(hostCommandSignal, (c) => {
    life.command = c;
  });
  const cordon = (drain: boolean, reason: CordonReason): void => {
    if (life.hostId) tell(() => pool.signal(hostDrainSignal, { host: life.hostId!, drain, reason }));
  };
  setHandler(drainHostSignal, ({ drain }) => {
    life.draining = drain;
    cordon(drain, 'drain');
  });

  const enter = (phase: HostPhase): void => {
    life.phase = phase;
    if (life.allocatedAt !== undefined && life.allocatedAtWorkflowMs !== undefined) life.phaseSince = ec2Now();
    upsertSearchAttributes([
      { key: SA_POOL, value: input.pool },
      { key: SA_HOST_STATE, value: phase },
      ...(life.hostId ? [{ key: SA_HOST, value: life.hostId }] : []),
    ]);
    setCurrentDetails(
      `**${phase}** · host ${life.hostId ?? '—'} (${life.zone ?? '—'}) · instance ${life.instanceId ?? '—'}` +
        ` · generation ${life.generation}` +
        (life.endpoint && phase === 'ready' ? ` · ${life.endpoint.address}:${life.endpoint.port}` : '') +
        (life.command ? ` · ${life.command.action}: ${life.command.reason}` : '') +
        (life.retireReason ? ` · retiring: ${life.retireReason}` : ''),
    );
    const fleet = fleetPhase(phase, life.parkOnLaunch === true);
    // `ready` is announced with the host's endpoint (hostReady); gone with hostGone.
    if (fleet && fleet !== 'ready' && life.allocatedAt !== undefined) {
      const report = {
        workflowId: id,
        host: life.hostId,
        phase: fleet,
        ageSeconds: ec2Now() - life.allocatedAt,
        scrubbingSeconds: life.scrubbingSeconds ?? 0,
      };
      tell(() => pool.signal(hostPhaseSignal, report));
    }
  };
  /** Runs one step of a host that exists: a failure retires it (releases it) instead of leaking it. */
  const step = async (what: () => Promise<void>): Promise<void> => {
    try {
      await what();
    } catch (e) {
      const err = e as Error & { cause?: Error };
      life.error = err.cause?.message ?? err.message;
      life.retireReason ??= `failed: ${life.error}`;
    }
  };

  if (life.phase === 'allocating') {
    enter('allocating');
    // A fatal error here leaves nothing behind: no host was made. The pool still hears of it,
    // or it would count this host's slots as coming for ever.
    const h = await ec2.allocateHost({ pool: input.pool, workflowId: id }).catch(async (e: Error) => {
      const cause = (e as Error & { cause?: Error }).cause?.message ?? e.message;
      if (input.announce)
        await pool
          .signal(hostGoneSignal, { workflowId: id, reason: `allocation failed: ${cause}` })
          .catch(() => undefined);
      throw e;
    });
    life.hostId = h.hostId;
    life.zone = h.zone;
    life.allocatedAt = h.allocatedAt;
    life.allocatedAtWorkflowMs = Date.now();
    enter('waiting-available');
  }

  while (LIVE.has(life.phase)) {
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
          // A fresh root volume has fresh SSH host keys: pin the new one.
          life.endpoint = await waiting.waitInstanceReady({ pool: input.pool, instanceId: life.instanceId!, pollMs });
          life.replacements = (life.replacements ?? 0) + 1;
          await serveFromNowOn();
        });
        break;
      case 'parking':
        await step(async () => {
          await ec2.terminateInstance({ pool: input.pool, instanceId: life.instanceId! });
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
          // AWS releases a scrubbing host: a retire need not wait for the scrub to end.
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
      await pool.signal(hostReadySignal, {
        name: life.hostId!,
        resources: input.announce.resources,
        labels: input.announce.labels,
        dynamic: {
          workflowId: id,
          ...life.endpoint!,
          ageSecondsAtReady: ec2Now() - life.allocatedAt!,
          readyAtMs: Date.now(),
        },
      });
      // A new hostReady replaces the pool's view of the host: carry a drain or assessment over.
      if (life.draining) cordon(true, 'drain');
      else if (life.underAssessment) cordon(true, 'assessment');
    }
  }

  /** Serves until the pool asks for something else; watches EC2 for what AWS decides about the host. */
  async function serve(): Promise<void> {
    const watchMs = Math.max(1000, Math.round(((input.pollSeconds * 10) / scale) * 1000));
    for (;;) {
      const woke = await condition(() => life.retireReason !== undefined || life.command !== undefined, watchMs);
      if (woke) break;
      const h = await ec2.describeHost({ pool: input.pool, hostId: life.hostId! });
      if (h.state === 'permanent-failure') {
        life.retireReason ??= 'AWS marked the host permanent-failure';
        return;
      }
      // AWS is checking the hardware: running work goes on (AWS leaves the instance up), new work goes elsewhere.
      const assessed = h.state === 'under-assessment';
      if (assessed !== (life.underAssessment === true)) {
        life.underAssessment = assessed;
        if (!life.draining) cordon(assessed, 'assessment');
        setCurrentDetails(`**ready** · host ${life.hostId}${assessed ? ' · under assessment by AWS: cordoned' : ''}`);
      }
      if (workflowInfo().continueAsNewSuggested) await continueAsNew<typeof hostWorkflow>({ ...input, life });
    }
    const c = life.command;
    if (life.retireReason || !c) return;
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
      if (workflowInfo().continueAsNewSuggested) await continueAsNew<typeof hostWorkflow>({ ...input, life });
    }
    const c = life.command;
    life.command = undefined;
    if (life.retireReason || !c || c.action === 'replace-root') return;
    life.parkOnLaunch = c.action === 'park';
    enter('launching');
  }

  if (life.phase === 'retiring') {
    const gone = { workflowId: id, host: life.hostId, reason: life.retireReason ?? 'retired' };
    if (input.announce) await pool.signal(hostGoneSignal, gone).catch(() => undefined);
    if (life.instanceId) await ec2.terminateInstance({ pool: input.pool, instanceId: life.instanceId });
    enter('releasing');
  }
  if (life.phase === 'releasing') {
    for (;;) {
      const r = await ec2.releaseHost({ pool: input.pool, hostId: life.hostId! });
      if (r.released) break;
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
