/**
 * Pre-pull: which images to pull onto which hosts before any job asks. A pool's pre-pull images
 * (and its standby images) go onto hosts that are up, schedulable and idle (no lease: a new host
 * is idle too), one pull per host at a time, and again when the host's cache lost the version
 * (evicted) or the tag may have moved (after `recheckMs`). Pure: the pool workflow and tests call it.
 */
import type { HostState, Lease } from '../domain/pool';

export interface PrePullRecord {
  /** Workflow time (ms) the last pre-pull of this image onto this host ended (or started, while running). */
  at: number;
  /** The host cache name it produced (`marina-img-...`); absent while running or after a failure. */
  cacheName?: string;
  running?: boolean;
}

export const prePullKey = (host: string, image: string): string => `${host}|${image}`;

/** After this long a pre-pulled image is pulled again (a no-op if its tag did not move). */
export const PREPULL_RECHECK_MS = 15 * 60 * 1000;
/** A pre-pull said to be running this long never reported back (terminated): the host may pull again. */
export const PREPULL_STALE_MS = 5 * 60 * 60 * 1000;

export function prePullsDue(
  hosts: readonly HostState[],
  leases: readonly Lease[],
  images: readonly string[],
  records: Readonly<Record<string, PrePullRecord>>,
  now: number,
  recheckMs = PREPULL_RECHECK_MS,
): Array<{ host: string; image: string }> {
  const due: Array<{ host: string; image: string }> = [];
  for (const h of hosts) {
    if (h.cordoned || h.consecutiveHealthFailures > 0 || h.images === undefined) continue;
    if (leases.some((l) => l.host === h.name)) continue;
    const running = (image: string) => {
      const r = records[prePullKey(h.name, image)];
      return r?.running === true && now - r.at < PREPULL_STALE_MS;
    };
    if (images.some(running)) continue;
    const image = images.find((img) => {
      const r = records[prePullKey(h.name, img)];
      if (!r) return true;
      if (r.cacheName && !h.images!.includes(r.cacheName)) return true; // evicted, or never landed
      return now - r.at >= recheckMs;
    });
    if (image) due.push({ host: h.name, image });
  }
  return due;
}
