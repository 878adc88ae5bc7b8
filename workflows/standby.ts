/**
 * One standby VM slot of a pool: lease a slot, fetch the image, boot a VM, and wait. A job
 * for the same image takes the VM (the pool hands it the lease) and starts in seconds; this
 * workflow then boots the next one, as a new run. Told to stop, it destroys its VM and gives
 * the slot back. Started by the pool, one per configured standby VM.
 */
import {
  CancellationScope,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  proxyActivities,
  setCurrentDetails,
  workflowInfo,
} from '@temporalio/workflow';
import { setDescribedHandler } from './handlers';
import { untilGone } from './activity-call';
import type { Activities } from '../activities/types';
import type { Labels, Resources } from '../src/domain/pool';
import { imageCacheName, standbyVmName } from '../src/domain/job';
import { LeaseClient } from './lease';
import { poolWorkflowId, standbyClaimedSignal, standbyReadySignal, standbyStopSignal } from './definitions';

export interface StandbyInput {
  pool: string;
  /** Its place among the pool's standbys, e.g. `0-1` (entry 0, VM 1): names its VMs. */
  slot: string;
  image: string;
  resources: Resources;
  labels: Labels;
  /** Counts the VMs this slot has booted (one per run). */
  generation?: number;
}

const retry = {
  initialInterval: '1s',
  maximumInterval: '30s',
  nonRetryableErrorTypes: ['ImageNotFound', 'UnknownHost'],
};
const { resolveImage } = proxyActivities<Activities>({ startToCloseTimeout: '1m', retry });
const { ensureImage } = proxyActivities<Activities>({ startToCloseTimeout: '4h', heartbeatTimeout: '10s', retry });
const { bootVm } = proxyActivities<Activities>({ startToCloseTimeout: '20m', heartbeatTimeout: '10s', retry });
/** Until the VM is gone, however long the workers are away (`untilGone`); options made in workflow context. */
const destroyVm = (...args: Parameters<Activities['destroyVm']>) =>
  proxyActivities<Activities>(
    untilGone({
      startToCloseTimeout: '5m',
      scheduleToCloseTimeout: '2h',
      retry: { ...retry, maximumInterval: '1m' },
    }),
  ).destroyVm(...args);

export async function standbyWorkflow(input: StandbyInput): Promise<void> {
  const generation = input.generation ?? 0;
  let claimedBy: string | undefined;
  let stop = false;
  setDescribedHandler(standbyClaimedSignal, ({ by }) => {
    claimedBy = by;
  });
  setDescribedHandler(standbyStopSignal, () => {
    stop = true;
  });
  const leases = new LeaseClient(input.pool);
  const image = await resolveImage(input.image);
  const cacheName = imageCacheName(image.digest);
  const vm = standbyVmName(input.pool, input.slot, generation);
  setCurrentDetails(`standby **${vm}** (${image.ref}): waiting for a slot`);

  const lease = await Promise.race([
    leases.acquire({
      resources: input.resources,
      labels: input.labels,
      image: cacheName,
      imageRef: image.ref,
      client: 'standby',
      vm,
    }),
    condition(() => stop).then(() => undefined),
  ]);
  if (!lease) {
    await leases.release(); // withdraws the queued request
    return;
  }
  const vmRef = {
    pool: input.pool,
    host: lease.host,
    vm,
    jobId: vm.slice('marina-'.length),
    ...(image.vmHostKey ? { vmHostKey: image.vmHostKey } : {}),
  };
  try {
    await ensureImage({ pool: input.pool, host: lease.host }, image);
    const booted = await bootVm(vmRef, image, input.resources, [], lease.runArgs ?? []);
    leases.standby = { vm, ip: booted.ip, image: cacheName };
    await getExternalWorkflowHandle(poolWorkflowId(input.pool)).signal(standbyReadySignal, {
      workflowId: workflowInfo().workflowId,
      vm,
      ip: booted.ip,
      image: cacheName,
    });
    setCurrentDetails(`standby **${vm}** (${image.ref}) booted on **${lease.host}**, waiting for a job`);
    await condition(() => claimedBy !== undefined || stop || leases.revoked !== undefined);
  } finally {
    // A claimed VM and its lease are the job's now; a revoked one went with its host.
    if (claimedBy === undefined && leases.revoked === undefined) {
      await CancellationScope.nonCancellable(() => destroyVm(vmRef));
      await leases.release();
    }
  }
  if (stop && claimedBy === undefined) return;
  await continueAsNew<typeof standbyWorkflow>({ ...input, generation: generation + 1 });
}
