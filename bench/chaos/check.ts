/**
 * The chaos run's end (bench/chaos.ts): wait for every job to reach a final state, then check what Marina
 * promises against the witness, the logs in S3, the hosts' disks and the pools' leases.
 */
import { readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { logsLocation, type LoadedConfig } from '../../src/config/load';
import { s3ClientFor } from '../../src/config/s3';
import { jobResultOfFailure } from '../../src/client/job-result';
import { isJobVm, jobWorkflowId } from '../../src/domain/job';
import { poolStateQuery, poolWorkflowId, type JobResult } from '../../workflows/definitions';
import type { WitnessCounts } from './witness';

export const LOG_LINES = 20;

export interface JobRecord {
  id: string;
  pool: string;
  cancelAfterMs?: number;
  snapshot?: string;
  submitted: boolean;
}

export type Anomaly = { kind: string; job?: string; detail: string };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Retries a client call through a Temporal restart. */
export async function patiently<T>(what: string, fn: () => Promise<T>, ms = 120_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > until) throw new Error(`${what}: ${(e as Error).message}`, { cause: e });
      await sleep(1000);
    }
  }
}

/** Waits for every job to end; its result, or what it ended as. */
export type Outcome = JobResult | { state: 'cancelled' };

export async function settle(
  client: Client,
  jobs: JobRecord[],
  ms: number,
  anomalies: Anomaly[],
): Promise<Map<string, Outcome>> {
  const results = new Map<string, Outcome>();
  const until = Date.now() + ms;
  for (const job of jobs) {
    if (!job.submitted) {
      anomalies.push({ kind: 'never-submitted', job: job.id, detail: 'the submit did not go through' });
      continue;
    }
    const handle = client.workflow.getHandle(jobWorkflowId(job.id));
    for (;;) {
      const d = await patiently('describe', () => handle.describe()).catch((e: unknown) => {
        if (e instanceof WorkflowNotFoundError) return undefined;
        throw e;
      });
      const status = d?.status.name;
      if (status && status !== 'RUNNING') {
        if (status === 'COMPLETED') results.set(job.id, (await handle.result()) as JobResult);
        else if (status === 'FAILED') {
          const r = await handle.result().catch((e: unknown) => jobResultOfFailure(e));
          if (r) results.set(job.id, r as JobResult);
          else anomalies.push({ kind: 'job-errored', job: job.id, detail: 'failed without a job result' });
        } else if (status === 'CANCELLED') results.set(job.id, { state: 'cancelled' });
        else anomalies.push({ kind: 'job-ended-badly', job: job.id, detail: status });
        break;
      }
      if (Date.now() > until) {
        anomalies.push({ kind: 'never-ended', job: job.id, detail: `still ${status ?? 'unknown'} after settling` });
        break;
      }
      await sleep(1000);
    }
  }
  return results;
}

export async function check(
  config: LoadedConfig,
  directS3: string,
  client: Client,
  hostDirs: string[],
  jobs: JobRecord[],
  results: Map<string, Outcome>,
  counts: WitnessCounts,
  anomalies: Anomaly[],
  pools: string[],
): Promise<void> {
  const loc = logsLocation(config);
  // Logs are read straight from S3, not through the fault proxy.
  const s3 = s3ClientFor(config, { ...loc, endpoint: directS3 });
  for (const job of jobs) {
    const r = results.get(job.id);
    if (!r) continue;
    const seen = counts[job.id] ?? { start: 0, end: 0 };
    if (r.state === 'cancelled' || !('jobId' in r)) {
      if (seen.start > 1)
        anomalies.push({ kind: 'ran-twice', job: job.id, detail: `cancelled, started ${seen.start} times` });
      continue;
    }
    if (r.state !== 'succeeded') {
      anomalies.push({ kind: `job-${r.state}`, job: job.id, detail: `exit ${r.exitCode} on ${r.host}` });
      continue;
    }
    if (seen.start !== 1 || seen.end !== 1)
      anomalies.push({
        kind: seen.start > 1 ? 'ran-twice' : 'witness-mismatch',
        job: job.id,
        detail: JSON.stringify(seen),
      });
    const text = await s3
      .send(new GetObjectCommand({ Bucket: r.log.bucket, Key: r.log.key }))
      .then((out) => out.Body!.transformToString())
      .catch((e: unknown) => `unreadable: ${String(e)}`);
    const want = Array.from({ length: LOG_LINES }, (_, i) => `line ${i + 1} of ${job.id}`).join('\n');
    if (!text.includes(want)) anomalies.push({ kind: 'log-incomplete', job: job.id, detail: `${text.length} bytes` });
  }
  s3.destroy();
  // No job VM left on any host (standby VMs belong to the pool, cached images to the host cache).
  for (const dir of hostDirs) {
    const vms = join(dir, 'tart', 'vms');
    if (!existsSync(vms)) continue;
    for (const vm of readdirSync(vms))
      if (isJobVm(vm) && !vm.startsWith('marina-standby-'))
        anomalies.push({ kind: 'vm-left', detail: `${vm} on ${dir.split('/').pop()}` });
  }
  // Every job's lease is back, nothing queued, in every pool.
  for (const pool of pools) {
    const view = await patiently('pool state', () =>
      client.workflow.getHandle(poolWorkflowId(pool)).query(poolStateQuery),
    );
    for (const l of view.leases)
      if (l.jobWorkflowId.startsWith('job/') || l.jobWorkflowId.includes('chaos-'))
        anomalies.push({ kind: 'lease-held', detail: `${l.leaseId} by ${l.jobWorkflowId} on ${pool}/${l.host}` });
    if (view.queued > 0) anomalies.push({ kind: 'queue-not-empty', detail: `${pool}: ${view.queued} requests queued` });
  }
}
