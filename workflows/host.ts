/**
 * One EC2 Mac dedicated host, for its whole life:
 * allocate → wait until available → launch the instance → wait for SSH → prepare →
 * serve → retire (terminate: AWS scrubs) → release once AWS allows (24 h) → done.
 * Every EC2 call is an idempotent activity keyed by this workflow's id, so a worker
 * killed anywhere resumes here without a second host or instance. Money leaks only if a
 * host outlives its workflow; the reconciler catches that.
 */
import {
  ApplicationFailure,
  condition,
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
import type { HostSpec } from '../src/domain/pool';
import {
  SA_HOST,
  SA_HOST_STATE,
  SA_POOL,
  hostDrainSignal,
  hostGoneSignal,
  hostReadySignal,
  poolWorkflowId,
} from './definitions';

export type HostPhase =
  | 'allocating'
  | 'waiting-available'
  | 'launching'
  | 'booting'
  | 'preparing'
  | 'ready'
  | 'retiring'
  | 'releasing'
  | 'released'
  | 'failed';

export interface HostWorkflowInput {
  pool: string;
  /**
   * Virtual seconds per real second of the EC2 endpoint's clock (the pool's aws.timeScale):
   * 1 on AWS; the emulator's speed factor in compressed-time runs.
   */
  timeScale: number;
  /** How often to poll EC2 while waiting, in EC2 seconds. */
  pollSeconds: number;
  /** Started by the pool: tell it when the host is ready (offering these resources and labels) and when it is gone. */
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

// One EC2 call (and the SDK's own retries) takes seconds: a short timeout lets a call lost
// with a dead worker be retried soon, and the idempotency tokens make the retry safe.
const ec2 = proxyActivities<Activities>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1m' },
});

// History stays bounded over days of life: a host waits in few, long steps, but a
// long-lived serving loop could still grow, so continue-as-new when Temporal suggests it.
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
    startToCloseTimeout: '2h',
    heartbeatTimeout: Math.max(10_000, 3 * pollMs),
    retry: { initialInterval: '1s', maximumInterval: '1m' },
  });
  const sleepEc2 = (seconds: number): Promise<void> => sleep(Math.max(1, Math.ceil((seconds / scale) * 1000)));

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
  setHandler(drainHostSignal, ({ drain }) => {
    life.draining = drain;
    if (input.announce && life.hostId) {
      void getExternalWorkflowHandle(poolWorkflowId(input.pool))
        .signal(hostDrainSignal, { host: life.hostId, drain })
        .catch(() => undefined);
    }
  });

  const enter = (phase: HostPhase): void => {
    life.phase = phase;
    upsertSearchAttributes([
      { key: SA_POOL, value: input.pool },
      { key: SA_HOST_STATE, value: phase },
      ...(life.hostId ? [{ key: SA_HOST, value: life.hostId }] : []),
    ]);
    setCurrentDetails(
      `**${phase}** · host ${life.hostId ?? '—'} (${life.zone ?? '—'}) · instance ${life.instanceId ?? '—'}` +
        (life.endpoint ? ` · ${life.endpoint.address}:${life.endpoint.port}` : '') +
        (life.retireReason ? ` · retiring: ${life.retireReason}` : ''),
    );
  };

  if (life.phase === 'allocating') {
    enter('allocating');
    // A fatal error here leaves nothing behind: no host was made.
    const h = await ec2.allocateHost({ pool: input.pool, workflowId: id });
    life.hostId = h.hostId;
    life.zone = h.zone;
    life.allocatedAt = h.allocatedAt;
    life.allocatedAtWorkflowMs = Date.now();
    enter('waiting-available');
  }
  try {
    if (life.phase === 'waiting-available') {
      await waiting.waitHostAvailable({ pool: input.pool, hostId: life.hostId!, pollMs });
      enter('launching');
    }
    if (life.phase === 'launching' && !life.retireReason) {
      life.instanceId = await ec2.launchInstance({
        pool: input.pool,
        workflowId: id,
        hostId: life.hostId!,
        generation: life.generation,
      });
      enter('booting');
    }
    if (life.phase === 'booting' && !life.retireReason) {
      life.endpoint = await waiting.waitInstanceReady({ pool: input.pool, instanceId: life.instanceId!, pollMs });
      enter('ready');
    }
  } catch (e) {
    // From here on a host exists and costs money: a failure retires it instead of leaking it.
    const err = e as Error & { cause?: Error };
    life.error = err.cause?.message ?? err.message;
    life.retireReason ??= `failed: ${life.error}`;
  }
  const pool = getExternalWorkflowHandle(poolWorkflowId(input.pool));
  if (
    life.phase === 'waiting-available' ||
    life.phase === 'launching' ||
    life.phase === 'booting' ||
    life.phase === 'ready'
  ) {
    // Serve until told to retire: the pool hands this host's slots out while it is ready.
    if (input.announce && life.phase === 'ready' && !life.retireReason) {
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
    }
    // While serving, look at the host in EC2 every ten polls: AWS may declare it failed.
    const watchMs = Math.max(1000, Math.round(((input.pollSeconds * 10) / scale) * 1000));
    while (!life.retireReason) {
      const woke = await condition(() => life.retireReason !== undefined, watchMs);
      if (woke) break;
      if (life.phase === 'ready') {
        const h = await ec2.describeHost({ pool: input.pool, hostId: life.hostId! });
        if (h.state === 'permanent-failure') life.retireReason = 'AWS marked the host permanent-failure';
      }
      if (!life.retireReason && workflowInfo().continueAsNewSuggested) {
        await continueAsNew<typeof hostWorkflow>({ ...input, life });
      }
    }
    enter('retiring');
  }
  if (life.phase === 'retiring') {
    if (input.announce)
      await pool
        .signal(hostGoneSignal, { workflowId: id, host: life.hostId, reason: life.retireReason ?? 'retired' })
        .catch(() => undefined);
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
