/**
 * A job's side of the lease exchange with its pool: ask by signal, wait for the pool's
 * answer (a grant, a refusal), hear of a revoked lease, give the slot back. The pool
 * answers with a signal, so a long queue costs no open update or activity.
 * The job workflow and the placement benchmark's probe both use this, so the benchmark
 * measures exactly what a job goes through.
 *
 * The exchange is level-triggered: a job that waits asks again every few minutes (the pool
 * takes a repeated request as the same one, and re-sends a grant it made), and a pool found
 * gone is started again from the worker's config. What the job holds or waits for is its
 * `leaseHolding` query, which a restarted pool reads to rebuild its leases and queue.
 */
import {
  ApplicationFailure,
  CancellationScope,
  condition,
  getExternalWorkflowHandle,
  isCancellation,
  patched,
  proxyActivities,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { setDescribedHandler } from './handlers';
import type { Activities } from '../activities/types';
import type { Lease } from '../src/domain/pool';
import {
  SA_POOL,
  leaseGrantedSignal,
  leaseHoldingQuery,
  leaseRefusedSignal,
  leaseRevokedSignal,
  poolWorkflowId,
  releaseLeaseSignal,
  requestLeaseSignal,
  type LeaseRefusal,
  type LeaseRequestMsg,
} from './definitions';

/**
 * A waiting job asks again after 10 to 20 minutes (spread, so a burst of jobs queued together does not ask
 * again together): a grant given up on reaches it; a restarted pool learns of it even without the recovery.
 * 5,000 jobs waiting cost the pool about 6 signals a second.
 */
export const LEASE_REQUEST_REPEAT_MS = 10 * 60 * 1000;

const { ensurePool } = proxyActivities<Activities>({
  startToCloseTimeout: '30s',
  retry: {
    initialInterval: '1s',
    maximumInterval: '10s',
    maximumAttempts: 10,
    nonRetryableErrorTypes: ['UnknownPool'],
  },
  summary: 'start the pool workflow again',
});

export class LeaseClient {
  lease: Lease | undefined;
  refusal: LeaseRefusal | undefined;
  /** Why the pool took the current lease back (its host is gone), if it did. */
  revoked: string | undefined;
  /** Called when the current lease is revoked. */
  onRevoked: (() => void) | undefined;
  private readonly me = workflowInfo().workflowId;
  private readonly pool;
  /** The request while waiting for its answer. */
  private waiting: LeaseRequestMsg | undefined;
  /** Set by a standby workflow once its VM is booted: a restarted pool offers it to jobs again. */
  standby: { vm: string; ip: string; image: string } | undefined;
  /** Histories recorded before level-triggered leases keep their old path (see `marina` README, upgrades). */
  private readonly levelTriggered: boolean;

  constructor(private readonly poolName: string) {
    this.pool = getExternalWorkflowHandle(poolWorkflowId(poolName));
    this.levelTriggered = patched('level-triggered-lease');
    // A restarted pool finds its lease takers by MarinaPool: a taker started without it says so itself.
    if (this.levelTriggered && workflowInfo().typedSearchAttributes.get(SA_POOL) !== poolName)
      upsertSearchAttributes([{ key: SA_POOL, value: poolName }]);
    setDescribedHandler(leaseHoldingQuery, () => ({
      pool: poolName,
      ...(this.lease ? { lease: this.lease } : {}),
      ...(this.waiting ? { request: this.waiting } : {}),
      ...(this.lease && this.standby ? { standby: this.standby } : {}),
    }));
    setDescribedHandler(leaseGrantedSignal, (l) => {
      if (l.jobWorkflowId === this.me) this.lease = l;
    });
    setDescribedHandler(leaseRefusedSignal, (r) => {
      this.refusal = r;
    });
    setDescribedHandler(leaseRevokedSignal, ({ leaseId, reason }) => {
      if (this.lease?.leaseId !== leaseId) return;
      this.revoked = reason;
      this.onRevoked?.();
    });
  }

  /** Asks for a slot; resolves with the lease once granted, fails `Refused` if the pool never could run it. */
  async acquire(request: Omit<LeaseRequestMsg, 'jobWorkflowId'>): Promise<Lease> {
    this.lease = undefined;
    this.revoked = undefined;
    const answered = () => this.lease !== undefined || this.refusal !== undefined;
    if (!this.levelTriggered) {
      // Plain state, no command: a restarted pool can still learn what this older run waits for.
      this.waiting = { jobWorkflowId: this.me, ...request };
      try {
        await this.pool.signal(requestLeaseSignal, { jobWorkflowId: this.me, ...request });
      } catch (e) {
        if (isCancellation(e)) throw e;
        throw this.unknownPool();
      }
      await condition(answered);
      this.waiting = undefined;
    } else {
      const msg: LeaseRequestMsg = { jobWorkflowId: this.me, ...request, requestedAt: Date.now() };
      this.waiting = msg;
      try {
        await this.tell(() => this.pool.signal(requestLeaseSignal, msg));
        while (!(await condition(answered, LEASE_REQUEST_REPEAT_MS * (1 + Math.random())))) {
          await this.tell(() => this.pool.signal(requestLeaseSignal, msg));
        }
      } finally {
        this.waiting = undefined;
      }
    }
    if (this.refusal) {
      throw ApplicationFailure.create({
        message: `refused by pool "${this.poolName}": ${this.refusal.reason}`,
        type: 'Refused',
        nonRetryable: true,
      });
    }
    return this.lease!;
  }

  /** Gives the slot back (also when the job is cancelled); `cachedImage`: the host now holds it. */
  async release(cachedImage?: string): Promise<void> {
    const msg = { jobWorkflowId: this.me, ...(cachedImage ? { cachedImage } : {}) };
    await CancellationScope.nonCancellable(() =>
      this.levelTriggered
        ? this.tell(() => this.pool.signal(releaseLeaseSignal, msg))
        : this.pool.signal(releaseLeaseSignal, msg),
    ).catch(
      // The pool's own lease check reclaims a slot whose job has closed.
      () => undefined,
    );
    this.lease = undefined;
  }

  /** Sends to the pool; a pool found gone is started again (from the worker's config) and told again. */
  private async tell(send: () => Promise<void>): Promise<void> {
    try {
      await send();
      return;
    } catch (e) {
      if (isCancellation(e)) throw e;
    }
    try {
      await ensurePool(this.poolName);
    } catch (e) {
      if (isCancellation(e)) throw e;
      throw this.unknownPool();
    }
    await send();
  }

  private unknownPool(): ApplicationFailure {
    return ApplicationFailure.create({
      message: `pool "${this.poolName}" is not running and no worker's config defines it: check the pool name, or start a worker whose config does`,
      type: 'UnknownPool',
      nonRetryable: true,
    });
  }
}
