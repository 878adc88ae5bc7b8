/**
 * The policies the simulator compares. Marina's wraps the production policy
 * (src/policy/fleet.ts); the others are baselines, written here because nothing in
 * production runs them.
 */
import { DAY } from '../ec2mac/model';
import { DemandHistory } from '../policy/forecast';
import { DEFAULT_FLEET_POLICY, forecastHorizons, planFleet, type FleetPolicyConfig } from '../policy/fleet';
import type { Fleet, FleetPolicy, SimHost } from './engine';

const TICK_SECONDS = 60;

/** Free slots already coming: booting instances and hosts being allocated to serve. */
function incomingSlots(fleet: Fleet): number {
  let n = 0;
  for (const h of fleet.hosts) {
    if (h.phase === 'launching' && !h.parkOnReady) n += h.slots - h.busy;
    else if (h.phase === 'allocating') n += h.slots;
  }
  return n;
}

/** Marina: forecast from the recent past, pack jobs, park idle hosts by scrubbing, release past last week's peak. */
export function marinaPolicy(overrides: Partial<FleetPolicyConfig> = {}, name = 'marina'): FleetPolicy {
  const config = { ...DEFAULT_FLEET_POLICY, ...overrides };
  const history = new DemandHistory();
  let weekPeak = 0;
  let weekPeakAt = -Infinity;
  const act = (fleet: Fleet): void => {
    const now = fleet.now;
    const need = fleet.busySlots + fleet.queued;
    history.record(now, need);
    const horizons = forecastHorizons(fleet.config.timings, config.scrubAssumption);
    // The week's peak changes slowly; an hourly refresh keeps the tick cheap.
    if (now - weekPeakAt >= 3600) {
      weekPeak = history.peak(now - 7 * DAY, now + 1);
      weekPeakAt = now;
    }
    const plan = planFleet({
      now,
      busySlots: fleet.busySlots,
      queued: fleet.queued,
      hosts: fleet.hosts,
      forecast: {
        soon: history.forecast(now, horizons.soon, config.combine),
        parkWindow: history.forecast(now, horizons.parkWindow, config.combine),
        week: Math.max(weekPeak, need),
      },
      maxHosts: fleet.config.maxHosts,
      timings: fleet.config.timings,
      billing: fleet.config.billing,
      config,
    });
    for (const h of plan.launch) fleet.launch(h);
    if (plan.allocate > 0) fleet.allocate(plan.allocate, true);
    for (const h of plan.park) fleet.park(h);
    for (const h of plan.replaceRoot) fleet.replaceRoot(h);
    for (const h of plan.release) fleet.release(h);
  };
  return {
    name,
    slotModel: 'nested',
    tickSeconds: TICK_SECONDS,
    onTick: act,
    onQueued(fleet) {
      // A queued job must not wait for the next tick to get capacity started.
      if (fleet.queued > incomingSlots(fleet)) act(fleet);
    },
    // Pack: the busiest host first, then the youngest (its 24 h is paid for longest), so
    // other hosts go idle and can be parked or released.
    pickHost(candidates) {
      let best = candidates[0]!;
      for (const h of candidates) {
        if (h.busy > best.busy || (h.busy === best.busy && h.allocatedAt > best.allocatedAt)) best = h;
      }
      return best;
    },
  };
}

/** Aquarium Fish's dedicated-pool constants (aquarium.md). */
export interface AquariumConfig {
  /** release_delay: a mac host is never released younger than this. */
  releaseDelaySeconds: number;
  /** scrubbing_delay: how long an idle young host waits before Fish scrubs it. */
  scrubbingDelaySeconds: number;
}

export const AQUARIUM_DEFAULTS: AquariumConfig = { releaseDelaySeconds: DAY, scrubbingDelaySeconds: 300 };

/**
 * Aquarium Fish's pool policy as Fish runs it (intended behaviour: release_delay 24 h).
 * `instance-per-job`: one job = one instance = one scrub. `nested`: the same policy over
 * Marina's 2 VM slots per long-lived instance, to separate the policy from the nesting.
 */
export function aquariumPolicy(
  slotModel: 'instance-per-job' | 'nested',
  cfg: AquariumConfig = AQUARIUM_DEFAULTS,
): FleetPolicy {
  const young = (h: SimHost, now: number): boolean => now - h.allocatedAt < cfg.releaseDelaySeconds;
  const acquire = (fleet: Fleet): void => {
    // Fish's acquire(): a host with capacity, else allocate one (up to max), per waiting job.
    let short = fleet.queued - incomingSlots(fleet);
    if (short <= 0) return;
    if (slotModel === 'nested') {
      for (const h of fleet.hosts) {
        if (short <= 0) break;
        if (h.phase === 'idle' && fleet.launch(h)) short -= h.slots;
      }
    } else {
      for (const h of fleet.hosts) if (h.phase === 'idle') short -= 1;
    }
    if (short > 0) fleet.allocate(Math.ceil(short / (slotModel === 'nested' ? 2 : 1)), slotModel === 'nested');
  };
  return {
    name: slotModel === 'nested' ? 'aquarium-2slot' : 'aquarium',
    slotModel,
    tickSeconds: TICK_SECONDS,
    onQueued: acquire,
    onTick(fleet) {
      acquire(fleet);
      const now = fleet.now;
      // Backwards: release() moves the last host into the released one's place.
      for (let i = fleet.hosts.length - 1; i >= 0; i--) {
        const h = fleet.hosts[i]!;
        if (h.phase === 'pending') {
          if (!young(h, now)) fleet.release(h);
          continue;
        }
        const unused = h.busy === 0 && (h.phase === 'idle' || (h.phase === 'ready' && slotModel === 'nested'));
        if (!unused) continue;
        if (!young(h, now)) fleet.release(h);
        else if (now - h.idleSince >= cfg.scrubbingDelaySeconds) fleet.park(h);
      }
    },
    pickHost(candidates, fleet) {
      return candidates[Math.floor(fleet.random() * candidates.length)]!;
    },
  };
}

/** Naive: allocate on demand, keep every host its paid 24 h, release it when idle after that. */
export function naivePolicy(): FleetPolicy {
  const act = (fleet: Fleet): void => {
    const short = fleet.queued - incomingSlots(fleet);
    if (short > 0) fleet.allocate(Math.ceil(short / 2), true);
  };
  return {
    name: 'naive',
    slotModel: 'nested',
    tickSeconds: TICK_SECONDS,
    onQueued: act,
    onTick(fleet) {
      act(fleet);
      for (let i = fleet.hosts.length - 1; i >= 0; i--) {
        const h = fleet.hosts[i]!;
        if (h.busy === 0 && (h.phase === 'ready' || h.phase === 'idle') && fleet.now - h.allocatedAt >= DAY)
          fleet.release(h);
      }
    },
    pickHost(candidates) {
      let best = candidates[0]!;
      for (const h of candidates) if (h.busy > best.busy) best = h;
      return best;
    },
  };
}

export const POLICY_NAMES = ['marina', 'marina-noscrub', 'aquarium', 'aquarium-2slot', 'naive'] as const;
export type PolicyName = (typeof POLICY_NAMES)[number];

export function policyByName(name: PolicyName, marina: Partial<FleetPolicyConfig> = {}): FleetPolicy {
  switch (name) {
    case 'marina':
      return marinaPolicy(marina);
    case 'marina-noscrub':
      return marinaPolicy({ ...marina, park: false }, 'marina-noscrub');
    case 'aquarium':
      return aquariumPolicy('instance-per-job');
    case 'aquarium-2slot':
      return aquariumPolicy('nested');
    case 'naive':
      return naivePolicy();
  }
}
