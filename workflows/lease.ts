/**
 * A job's side of the lease exchange with its pool: ask by signal, wait for the pool's
 * answer (a grant, a refusal), hear of a revoked lease, give the slot back. The pool
 * answers with a signal, so a long queue costs no open update or activity.
 * The job workflow and the placement benchmark's probe both use this, so the benchmark
 * measures exactly what a job goes through.
 */
import {
  ApplicationFailure,
  CancellationScope,
  condition,
  getExternalWorkflowHandle,
  isCancellation,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { Lease } from '../src/domain/pool';
import {
  leaseGrantedSignal,
  leaseRefusedSignal,
  leaseRevokedSignal,
  poolWorkflowId,
  releaseLeaseSignal,
  requestLeaseSignal,
  type LeaseRefusal,
  type LeaseRequestMsg,
} from './definitions';

export class LeaseClient {
  lease: Lease | undefined;
  refusal: LeaseRefusal | undefined;
  /** Why the pool took the current lease back (its host is gone), if it did. */
  revoked: string | undefined;
  /** Called when the current lease is revoked. */
  onRevoked: (() => void) | undefined;
  private readonly me = workflowInfo().workflowId;
  private readonly pool;

  constructor(private readonly poolName: string) {
    this.pool = getExternalWorkflowHandle(poolWorkflowId(poolName));
    setHandler(leaseGrantedSignal, (l) => {
      if (l.jobWorkflowId === this.me) this.lease = l;
    });
    setHandler(leaseRefusedSignal, (r) => {
      this.refusal = r;
    });
    setHandler(leaseRevokedSignal, ({ leaseId, reason }) => {
      if (this.lease?.leaseId !== leaseId) return;
      this.revoked = reason;
      this.onRevoked?.();
    });
  }

  /** Asks for a slot; resolves with the lease once granted, fails `Refused` if the pool never could run it. */
  async acquire(request: Omit<LeaseRequestMsg, 'jobWorkflowId'>): Promise<Lease> {
    this.lease = undefined;
    this.revoked = undefined;
    try {
      await this.pool.signal(requestLeaseSignal, { jobWorkflowId: this.me, ...request });
    } catch (e) {
      if (isCancellation(e)) throw e;
      throw ApplicationFailure.create({
        message: `pool "${this.poolName}" is not running: check the pool name, or start a worker whose config defines it`,
        type: 'UnknownPool',
        nonRetryable: true,
      });
    }
    await condition(() => this.lease !== undefined || this.refusal !== undefined);
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
    await CancellationScope.nonCancellable(() =>
      this.pool.signal(releaseLeaseSignal, { jobWorkflowId: this.me, ...(cachedImage ? { cachedImage } : {}) }),
    ).catch(
      () => undefined, // pool gone: nothing to release
    );
  }
}
