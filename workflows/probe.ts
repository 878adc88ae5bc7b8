/**
 * A lease probe: takes a slot from a pool exactly as a job does (the same LeaseClient),
 * holds it without touching the host, and gives it back. The placement benchmark and the
 * pool's load tests measure the scheduler with it; no VM, SSH or S3 is involved.
 */
import { condition, defineSignal, sleep } from '@temporalio/workflow';
import { setDescribedHandler } from './handlers';
import { LeaseClient } from './lease';

export interface ProbeInput {
  pool: string;
  client?: string;
  resources?: Record<string, number>;
  labels?: Record<string, string>;
  /** Hold the slot this long (ms), or until `finishProbe` is signalled when absent. */
  holdMs?: number;
}

export interface ProbeResult {
  host: string;
  leaseId: string;
  /** Workflow time (ms) the pool granted the lease, and the probe heard of it. */
  grantedAt: number;
  receivedAt: number;
  /** Workflow time (ms) the probe stopped holding the slot, just before giving it back. */
  heldUntil: number;
}

export const finishProbeSignal = defineSignal('finishProbe');

export async function leaseProbeWorkflow(input: ProbeInput): Promise<ProbeResult> {
  const leases = new LeaseClient(input.pool);
  let finish = false;
  setDescribedHandler(finishProbeSignal, () => {
    finish = true;
  });
  try {
    const lease = await leases.acquire({
      resources: input.resources ?? { vm: 1 },
      labels: input.labels ?? {},
      ...(input.client ? { client: input.client } : {}),
    });
    const receivedAt = Date.now();
    if (input.holdMs !== undefined) await sleep(input.holdMs);
    else await condition(() => finish);
    return { host: lease.host, leaseId: lease.leaseId, grantedAt: lease.grantedAt, receivedAt, heldUntil: Date.now() };
  } finally {
    await leases.release();
  }
}

/**
 * The floor the benchmark compares against: a workflow that starts and completes at once,
 * with no message to or from a pool. What the Temporal server itself costs per job.
 */
export async function bareWorkflow(): Promise<number> {
  return Date.now();
}
