/**
 * One round of Marina's fleet policy, as the pool runs it and the simulator prices it: record
 * demand, forecast the launch lead and the park window from the recent past, and plan. The
 * pool (pool-fleet.ts) and the simulator (src/sim/policies.ts) both call this and nothing else,
 * so the glue around planFleet exists once.
 */
import { DAY, type BillingMode, type MacTimings } from '../ec2mac/model';
import type { DemandHistory } from './forecast';
import { forecastHorizons, planFleet, type FleetHostView, type FleetPlan, type FleetPolicyConfig } from './fleet';

export interface FleetStepInput<H extends FleetHostView> {
  /** EC2 seconds. */
  now: number;
  busySlots: number;
  queued: number;
  hosts: readonly H[];
  maxHosts: number;
  timings: MacTimings;
  billing: BillingMode;
  config: FleetPolicyConfig;
}

export function fleetStep<H extends FleetHostView>(history: DemandHistory, i: FleetStepInput<H>): FleetPlan<H> {
  const need = i.busySlots + i.queued;
  history.record(i.now, need);
  const horizons = forecastHorizons(i.timings, i.config.scrubAssumption, i.config.ec2Machine !== false);
  return planFleet({
    now: i.now,
    busySlots: i.busySlots,
    queued: i.queued,
    hosts: i.hosts,
    forecast: {
      soon: history.forecast(i.now, horizons.soon, i.config.combine),
      parkWindow: history.forecast(i.now, horizons.parkWindow, i.config.combine),
      week: Math.max(history.peak(i.now - (i.config.peakLookbackDays ?? 7) * DAY, i.now + 1), need),
    },
    maxHosts: i.maxHosts,
    timings: i.timings,
    billing: i.billing,
    config: i.config,
  });
}
