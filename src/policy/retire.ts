/**
 * What becomes of one EC2 Mac host that the fleet no longer needs as it is: keep it warm,
 * park it (terminate the instance: AWS scrubs the host, the host stays ours), clean it by
 * replacing its root volume, or release it. Pure: planFleet (fleet.ts) asks it for each
 * surplus or dirty host, in the pool workflow and in the simulator alike.
 *
 * The constants it plays to, all from ../shared/reference/ec2-mac.md via src/ec2mac/model.ts:
 * - MIN_ALLOCATION_SECONDS (24 h): AWS refuses a release before it, and bills it anyway;
 * - the scrub delay (DEFAULT_TIMINGS.scrubSeconds, 1–2 h): a stopped or terminated instance
 *   sends the host to `pending`, unbilled under most readings of the bill, unusable meanwhile;
 * - root-volume replacement (DEFAULT_TIMINGS.rootVolumeReplacementSeconds, about 15 min):
 *   the instance restarts on a fresh disk without a scrub, billed throughout; on or off per pool;
 * - the keep-warm window (FleetPolicyConfig.idleGraceSeconds): how long an idle host waits
 *   for the next job before it counts as surplus.
 */
import { DEFAULT_TIMINGS, MIN_ALLOCATION_SECONDS } from '../ec2mac/model';

export { MIN_ALLOCATION_SECONDS };
export const SCRUB_SECONDS = DEFAULT_TIMINGS.scrubSeconds;
export const ROOT_VOLUME_REPLACEMENT_SECONDS = DEFAULT_TIMINGS.rootVolumeReplacementSeconds;
/** The default keep-warm window. */
export const KEEP_WARM_SECONDS = 10 * 60;

export type HostAction = 'keep' | 'park' | 'replace-root' | 'release';

export interface RetireInput {
  /** `surplus`: idle past the keep-warm window and beyond what the forecast needs. `dirty`: its instance must be cleaned. */
  reason: 'surplus' | 'dirty';
  /** Jobs on the host now. */
  busy: number;
  /** At least 24 h old, its paid hours used up, and the fleet larger than last week's peak needed. */
  releasable: boolean;
  /** Parking is on and saves money under the pool's billing reading (scrubbing unbilled). */
  parkPays: boolean;
  /** The fleet wants this host serving again within a scrub plus a launch. */
  wanted: boolean;
  /** The pool allows root-volume replacement. */
  rootVolumeReplacement: boolean;
}

export interface RetireVerdict {
  action: HostAction;
  why: string;
}

export function retireAction(i: RetireInput): RetireVerdict {
  if (i.busy > 0) return { action: 'keep', why: 'running work is never interrupted' };
  if (i.reason === 'dirty') {
    if (i.wanted && i.rootVolumeReplacement) {
      return {
        action: 'replace-root',
        why: `wanted again soon: a root-volume replacement cleans it in ${Math.round(ROOT_VOLUME_REPLACEMENT_SECONDS / 60)} min without a ${hours(SCRUB_SECONDS)} scrub`,
      };
    }
    if (i.releasable) return { action: 'release', why: 'dirty, its 24 h are paid and the fleet does not need it' };
    return {
      action: 'park',
      why: i.wanted
        ? 'dirty and root-volume replacement is off: a scrub cleans it'
        : `dirty and not wanted within a scrub: a ${hours(SCRUB_SECONDS)} scrub cleans it${i.parkPays ? ' while billing pauses' : ''}`,
    };
  }
  if (i.releasable) return { action: 'release', why: 'its 24 h are paid and the fleet does not need it' };
  if (i.parkPays) return { action: 'park', why: 'parked by a scrub: billing pauses and the host stays ours' };
  return {
    action: 'keep',
    why: 'kept warm: releasing is refused or wastes paid hours, and parking saves nothing under this billing reading',
  };
}

function hours([lo, hi]: readonly [number, number]): string {
  return `${lo / 3600}–${hi / 3600} h`;
}
