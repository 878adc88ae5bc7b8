/**
 * The policies the simulator compares. Marina's wraps the production policy
 * (src/policy/fleet.ts); the others are baselines, written here because nothing in
 * production runs them.
 */
import { DAY } from '../ec2mac/model';
import { fleetStep } from '../policy/fleet-step';
import { placeOnPool } from './placement';
import { DemandHistory } from '../policy/forecast';
import { DEFAULT_FLEET_POLICY, type FleetPolicyConfig } from '../policy/fleet';
import type { Fleet, FleetPolicy, SimHost } from './types';

const TICK_SECONDS = 60;

/** Free slots already coming: booting instances and hosts being allocated to serve. */
function incomingSlots(fleet: Fleet): number {
  let n = 0;
  for (const h of fleet.hosts) {
    if (h.phase === 'launching') n += h.slots - h.busy;
    else if (h.phase === 'allocating') n += h.slots;
  }
  return n;
}

/**
 * Marina: the pool's own fleet step (src/policy/fleet-step.ts: forecast from the recent past,
 * start idle hosts first, allocate only for jobs waiting now, park, release past last week's
 * peak) and the pool's own placement (src/policy/placement.ts).
 */
export function marinaPolicy(overrides: Partial<FleetPolicyConfig> = {}, name = 'marina'): FleetPolicy {
  const config = { ...DEFAULT_FLEET_POLICY, ...overrides };
  const history = new DemandHistory();
  const act = (fleet: Fleet): void => {
    const plan = fleetStep(history, {
      now: fleet.now,
      busySlots: fleet.busySlots,
      queued: fleet.queued,
      hosts: fleet.hosts,
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
    pickHost: (candidates) => placeOnPool(candidates),
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
      // Only hosts that can be released or parked, each list backwards: an action moves the host out of
      // its list and the list's last host (already seen) into its place.
      const pending = fleet.inPhase('pending');
      for (let i = pending.length - 1; i >= 0; i--) {
        const h = pending[i]!;
        if (!young(h, now)) fleet.release(h);
      }
      const lists = slotModel === 'nested' ? [fleet.inPhase('idle'), fleet.inPhase('ready')] : [fleet.inPhase('idle')];
      for (const list of lists) {
        for (let i = list.length - 1; i >= 0; i--) {
          const h = list[i]!;
          if (h.busy > 0) continue;
          if (!young(h, now)) fleet.release(h);
          else if (now - h.idleSince >= cfg.scrubbingDelaySeconds) fleet.park(h);
        }
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
      for (const h of [...fleet.inPhase('ready'), ...fleet.inPhase('idle')])
        if (h.busy === 0 && fleet.now - h.allocatedAt >= DAY) fleet.release(h);
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
