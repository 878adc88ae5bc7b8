/** Runs several policies over one trace, with one EC2 Mac model, and sets them side by side. */
import { DEFAULT_TIMINGS, HOURLY_PRICE_USD, type BillingMode, type MacTimings } from '../ec2mac/model';
import { simulate, type SimConfig, type SimResult, type ZoneCapacity } from './engine';
import { lowerBound, parkingYardstick, type LowerBound } from './lower-bound';
import { forecastHorizons, type FleetPolicyConfig } from '../policy/fleet';
import { POLICY_NAMES, policyByName, type PolicyName } from './policies';
import type { TraceJob } from './trace';

export interface CompareOptions {
  policies: readonly PolicyName[];
  timings: MacTimings;
  billing: BillingMode;
  maxHosts: number;
  zones: ZoneCapacity[];
  instanceType: string;
  hourlyPriceUsd: number;
  seed: number;
  /** Marina's policy settings beyond the defaults (refreshAfterJobs, rootVolumeReplacement, ...). */
  marina?: Partial<FleetPolicyConfig>;
}

export const DEFAULT_INSTANCE_TYPE = 'mac2-m2.metal';

export function defaultCompareOptions(): CompareOptions {
  return {
    policies: POLICY_NAMES,
    timings: DEFAULT_TIMINGS,
    billing: 'minimum-of-metered',
    maxHosts: 500,
    zones: [{ name: 'us-east-1a', hosts: Number.MAX_SAFE_INTEGER }],
    instanceType: DEFAULT_INSTANCE_TYPE,
    hourlyPriceUsd: HOURLY_PRICE_USD[DEFAULT_INSTANCE_TYPE]!,
    seed: 1,
  };
}

export interface PolicyRow extends SimResult {
  /** Billed host-hours ÷ the zero-wait lower bound. */
  vsLowerBound: number;
  /** Billed host-hours ÷ Aquarium's (as Fish runs it), when it ran. */
  vsAquarium?: number;
  vsAquarium2Slot?: number;
  /** The bound for fleets that keep every wait ≤ this policy's longest: proven ≤ its cost. */
  lowerBoundAtItsMaxWait: LowerBound;
}

export interface Comparison {
  trace: { jobs: number; from: string; to: string; workHours: number };
  options: Omit<CompareOptions, 'zones'> & { zones: { name: string; hosts: number | 'unlimited' }[] };
  lowerBound: LowerBound;
  /** Host-hours a perfect forecaster keeps out of scrubbing (lower-bound.ts); a yardstick, not a bound. */
  parkingYardstick: { windowSeconds: number; hostHours: number };
  rows: PolicyRow[];
}

export function simConfig(opts: CompareOptions): SimConfig {
  return {
    timings: opts.timings,
    billing: opts.billing,
    maxHosts: opts.maxHosts,
    zones: opts.zones,
    hourlyPriceUsd: opts.hourlyPriceUsd,
    seed: opts.seed,
  };
}

/** Every policy, one after the other, in this thread (src/sim/parallel.ts runs them in worker threads). */
export function compare(trace: readonly TraceJob[], opts: CompareOptions): Comparison {
  const config = simConfig(opts);
  return assemble(
    trace,
    opts,
    opts.policies.map((p) => simulate(trace, policyByName(p, opts.marina), config)),
  );
}

/** Sets the policies' results side by side, against the bound and the baselines. */
export function assemble(trace: readonly TraceJob[], opts: CompareOptions, results: SimResult[]): Comparison {
  const lb = lowerBound(trace, 0, opts.billing);
  const aquarium = results.find((r) => r.policy === 'aquarium');
  const aquarium2 = results.find((r) => r.policy === 'aquarium-2slot');
  const rows: PolicyRow[] = results.map((r) => ({
    ...r,
    vsLowerBound: r.hostHours / lb.hostHours,
    ...(aquarium ? { vsAquarium: r.hostHours / aquarium.hostHours } : {}),
    ...(aquarium2 ? { vsAquarium2Slot: r.hostHours / aquarium2.hostHours } : {}),
    lowerBoundAtItsMaxWait: lowerBound(trace, r.maxWaitSeconds, opts.billing),
  }));
  const window = forecastHorizons(opts.timings).parkWindow;
  const work = trace.reduce((s, j) => s + j.duration, 0) / 3600;
  const iso = (t: number): string => new Date(t * 1000).toISOString().slice(0, 16).replace('T', ' ');
  return {
    trace: {
      jobs: trace.length,
      from: iso(trace[0]!.start),
      to: iso(trace.reduce((m, j) => Math.max(m, j.start + j.duration), 0)),
      workHours: work,
    },
    options: {
      ...opts,
      zones: opts.zones.map((z) => ({
        name: z.name,
        hosts: z.hosts >= Number.MAX_SAFE_INTEGER ? 'unlimited' : z.hosts,
      })),
    },
    lowerBound: lb,
    parkingYardstick: { windowSeconds: window, hostHours: parkingYardstick(trace, window) },
    rows,
  };
}
