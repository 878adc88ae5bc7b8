/**
 * What an EC2 Mac dedicated host does and when, and what it costs. Pure: the simulator
 * steps it in virtual time and the EC2 emulator serves it over the wire, so a figure
 * priced by one is the figure the other enforces. Sources: ../shared/reference/ec2-mac.md.
 */

export const HOUR = 3600;
export const DAY = 24 * HOUR;

/** Apple's licence, enforced by ReleaseHosts (Client.HostMinAllocationPeriodUnexpired). */
export const MIN_ALLOCATION_SECONDS = DAY;

/** Mac instances per dedicated host (ec2-mac §1.4). */
export const INSTANCES_PER_HOST = 1;

/** macOS VMs the licence allows per Mac (SLA 2B(iii)): Marina's slots per host. */
export const VM_SLOTS_PER_HOST = 2;

/** Every duration the model draws, in seconds. Ranges are [min, max], drawn uniformly. */
export interface MacTimings {
  /** AllocateHosts → host `available`. Undocumented by AWS; seconds in practice. */
  allocationSeconds: number;
  /** RunInstances → instance `running`. */
  instanceRunningSeconds: number;
  /** `running` → SSH answers (AWS: up to 15 min on M4; 6–20 min launch overall). */
  sshReadySeconds: number;
  /** SSH answers → the host is prepared to serve (agent installed, base image cached). */
  prepareSeconds: number;
  /** A macOS VM clone + boot inside a prepared host (Tart, image cached). */
  vmBootSeconds: number;
  /** Stop/terminate → the instance is gone and the scrub begins: billed, the host still occupied. */
  stoppingSeconds: number;
  /** Terminate → ReleaseHosts stops answering `Client.InvalidHost.Occupied`, scrubbing or not (~20 min, macOSWorld). */
  occupiedSeconds: number;
  /** The scrub (`pending`, unbilled): instance gone → the host is listed `available` again. */
  scrubSeconds: [number, number];
  /** Listed `available` after a scrub, yet launches still fail (billed). */
  settleSeconds: number;
  /** CreateReplaceRootVolumeTask → SSH answers again; no scrub. */
  rootVolumeReplacementSeconds: number;
}

/**
 * Defaults. Boot: 2 + 8 min = 10 min to SSH, inside AWS's 6–20 min. Stopping: "about 15
 * minutes" on Mac (mac-instance-stop). Occupied: ~20 min after a terminate (macOSWorld).
 * Scrub: "roughly 1–2 h" (observed 40 min – 3 h; Apple silicon "up to 4.5 h" on the current
 * page: configure `scrubSeconds` for the pessimistic case). Settling: "minutes" (Aquarium
 * Fish added a configurable delay); 5 min here.
 */
export const DEFAULT_TIMINGS: MacTimings = {
  allocationSeconds: 30,
  instanceRunningSeconds: 2 * 60,
  sshReadySeconds: 8 * 60,
  prepareSeconds: 3 * 60,
  vmBootSeconds: 45,
  stoppingSeconds: 15 * 60,
  occupiedSeconds: 20 * 60,
  scrubSeconds: [1 * HOUR, 2 * HOUR],
  settleSeconds: 5 * 60,
  rootVolumeReplacementSeconds: 15 * 60,
};

/** On-Demand $/host-hour, us-east-1 (ec2-mac §3.1). mac-m4 is derived; others unknown. */
export const HOURLY_PRICE_USD: Readonly<Record<string, number>> = {
  'mac1.metal': 1.083,
  'mac2.metal': 0.65,
  'mac2-m2.metal': 0.878,
  'mac2-m2pro.metal': 1.56,
  'mac-m4.metal': 1.23,
};

export type HostAllocationState = 'available' | 'pending' | 'under-assessment' | 'permanent-failure' | 'released';

/**
 * How the scrub (`pending`) meets the 24 h minimum on the bill. AWS: "metering and billing
 * is paused" while pending, and "a 24 h minimum"; how the two combine is undocumented
 * (ec2-mac §1.6), so every figure is reported under each reading:
 * - `minimum-of-metered` (default, the literal reading): max(24 h, allocated − pending);
 * - `minimum-then-pause`: max(24 h, allocated) − pending: scrubbing saves even inside the
 *   first 24 h (what Aquarium Fish's simulator assumes);
 * - `scrub-billed`: max(24 h, allocated): as if scrubbing were billed.
 */
export const BILLING_MODES = ['minimum-of-metered', 'minimum-then-pause', 'scrub-billed'] as const;
export type BillingMode = (typeof BILLING_MODES)[number];

/** Seconds billed for one host's life. */
export function billedSeconds(allocatedSeconds: number, pendingSeconds: number, mode: BillingMode): number {
  switch (mode) {
    case 'minimum-of-metered':
      return Math.max(MIN_ALLOCATION_SECONDS, allocatedSeconds - pendingSeconds);
    case 'minimum-then-pause':
      return Math.max(MIN_ALLOCATION_SECONDS, allocatedSeconds) - pendingSeconds;
    case 'scrub-billed':
      return Math.max(MIN_ALLOCATION_SECONDS, allocatedSeconds);
  }
}

/** Whether scrubbing pauses the bill at all under this reading. */
export const scrubPausesBilling = (mode: BillingMode): boolean => mode !== 'scrub-billed';

/** Seconds from RunInstances until a host can take its first VM. */
export function launchToServeSeconds(t: MacTimings): number {
  return t.instanceRunningSeconds + t.sshReadySeconds + t.prepareSeconds;
}

/** A scrub's duration for a uniform draw u ∈ [0, 1). */
export function scrubDuration(t: MacTimings, u: number): number {
  const [lo, hi] = t.scrubSeconds;
  return Math.round(lo + (hi - lo) * u);
}
