/**
 * When a pool lets one of its EC2 Mac hosts go. Pure: the pool workflow calls it for each
 * idle host, and the constants are the ones the simulator prices (src/ec2mac/model.ts).
 */
import { MIN_ALLOCATION_SECONDS } from '../ec2mac/model';

export interface RetireInput {
  /** Jobs on the host now. */
  leases: number;
  /** Jobs waiting in the pool that this host could take. */
  queued: number;
  /** Host age on EC2's clock, seconds. */
  ageSeconds: number;
  /** How long it has had no job, seconds (EC2 clock). */
  idleSeconds: number;
  /** The keep-warm window: an idle host stays this long for the next job. */
  idleRetireSeconds: number;
}

export type RetireDecision = { retire: false; why: string } | { retire: true; why: string };

export function retireDecision(i: RetireInput): RetireDecision {
  if (i.leases > 0) return { retire: false, why: 'running work is never interrupted' };
  if (i.queued > 0) return { retire: false, why: 'jobs are waiting' };
  if (i.ageSeconds < MIN_ALLOCATION_SECONDS) {
    return { retire: false, why: `its first 24 h are paid (age ${Math.round(i.ageSeconds / 60)} min): keep it warm` };
  }
  if (i.idleSeconds < i.idleRetireSeconds) {
    return {
      retire: false,
      why: `idle ${Math.round(i.idleSeconds / 60)} min < the ${Math.round(i.idleRetireSeconds / 60)} min keep-warm window`,
    };
  }
  return {
    retire: true,
    why: `idle ${Math.round(i.idleSeconds / 60)} min ≥ the ${Math.round(i.idleRetireSeconds / 60)} min keep-warm window, and its 24 h are paid`,
  };
}
