/**
 * Pre-pull: one image onto one host ahead of demand, started by the pool for new and idle hosts
 * (src/policy/prepull.ts). The pull's progress is the ensureImage activity's heartbeat, which the
 * Web UI shows on the pending activity; the result goes back to the pool by signal, so it survives
 * the pool continuing as new meanwhile.
 */
import { getExternalWorkflowHandle, proxyActivities, setCurrentDetails } from '@temporalio/workflow';
import type { Activities } from '../activities/types';
import { imageCacheName } from '../src/domain/job';
import { poolWorkflowId, prePullDoneSignal } from './definitions';

const retry = { initialInterval: '2s', maximumInterval: '1m', maximumAttempts: 5 };
const { resolveImage } = proxyActivities<Activities>({ startToCloseTimeout: '1m', retry });
const { ensureImage } = proxyActivities<Activities>({ startToCloseTimeout: '4h', heartbeatTimeout: '30s', retry });

export interface PrePullInput {
  pool: string;
  host: string;
  image: string;
}

export async function prePullWorkflow(
  input: PrePullInput,
): Promise<{ digest: string; cached: boolean; fetchedBytes: number }> {
  const pool = getExternalWorkflowHandle(poolWorkflowId(input.pool));
  try {
    setCurrentDetails(`pre-pulling **${input.image}** onto **${input.host}**: resolving`);
    const image = await resolveImage(input.image);
    setCurrentDetails(
      `pre-pulling **${image.ref}** (${(image.dataBytes / 1e9).toFixed(2)} GB of data) onto **${input.host}**: progress on the pending ensureImage activity`,
    );
    const r = await ensureImage({ pool: input.pool, host: input.host }, image);
    setCurrentDetails(
      r.cached
        ? `**${image.ref}** was already cached on **${input.host}**`
        : `pre-pulled **${image.ref}** onto **${input.host}**: ${(r.fetchedBytes / 1e9).toFixed(2)} GB fetched, ${(r.copiedBytes / 1e9).toFixed(2)} GB copied from cached versions in ${r.seconds.toFixed(0)} s`,
    );
    await pool.signal(prePullDoneSignal, {
      host: input.host,
      image: input.image,
      cacheName: imageCacheName(image.digest),
    });
    return { digest: image.digest, cached: r.cached, fetchedBytes: r.fetchedBytes };
  } catch (e) {
    await pool.signal(prePullDoneSignal, { host: input.host, image: input.image, error: (e as Error).message });
    throw e;
  }
}
