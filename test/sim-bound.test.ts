/**
 * The lower bound is a bound: no policy, under any billing reading, bills less than LB(its own
 * longest wait). Random small traces (pure-rand, seeded) plus the counterexample that sank the
 * old bound under `minimum-then-pause`.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import { BILLING_MODES, DEFAULT_TIMINGS, type MacTimings } from '../src/ec2mac/model';
import { simulate, type SimConfig } from '../src/sim/engine';
import { lowerBound } from '../src/sim/lower-bound';
import { POLICY_NAMES, policyByName } from '../src/sim/policies';
import { parseTrace, type TraceJob } from '../src/sim/trace';

const HOUR = 3600;
const T0 = Date.parse('2026-03-02T06:00:00Z') / 1000;

const config = (billing: SimConfig['billing'], timings: MacTimings): SimConfig => ({
  timings,
  billing,
  maxHosts: 500,
  zones: [{ name: 'a', hosts: Number.MAX_SAFE_INTEGER }],
  hourlyPriceUsd: 1,
  seed: 7,
});

describe('the lower bound, for every policy and reading', () => {
  it('holds on 60 random small traces (timings drawn too)', () => {
    const rng = xoroshiro128plus(20261202);
    const int = (a: number, b: number): number => uniformInt(rng, a, b);
    for (let round = 0; round < 60; round++) {
      const n = int(1, 12);
      const jobs: TraceJob[] = [];
      // Bursts and gaps: most jobs near a few instants, some days apart (where parking and the 24 h rule bite).
      for (let i = 0; i < n; i++)
        jobs.push({
          start: T0 + int(0, 3) * 24 * HOUR + int(0, 8 * 60) * 60,
          duration: int(60, 5 * HOUR),
          jobName: `j${i}`,
          stageName: 's',
        });
      jobs.sort((a, b) => a.start - b.start);
      const scrub = int(10, 120) * 60;
      const timings: MacTimings = {
        ...DEFAULT_TIMINGS,
        stoppingSeconds: int(0, 20) * 60,
        occupiedSeconds: int(0, 30) * 60,
        scrubSeconds: [scrub, scrub + int(0, 60) * 60],
        settleSeconds: int(0, 10) * 60,
      };
      for (const billing of BILLING_MODES) {
        for (const name of POLICY_NAMES) {
          const r = simulate(jobs, policyByName(name), config(billing, timings));
          const lb = lowerBound(jobs, r.maxWaitSeconds, billing).hostHours;
          expect(r.hostHours, `round ${round}, ${name}, ${billing}`).toBeGreaterThanOrEqual(lb - 1e-9);
        }
      }
    }
  });

  it('drops the 24 h-per-peak-host part under minimum-then-pause, where the counterexample undercuts it', () => {
    const jobs = parseTrace(readFileSync('test/fixtures/lb-counterexample.csv', 'utf8'), 'lb-counterexample.csv');
    expect(jobs).toHaveLength(201);
    const pause = lowerBound(jobs, 0, 'minimum-then-pause');
    // 100 hosts at the peak: the old reading claimed 2,400 h.
    expect(pause.peakHours).toBe(2400);
    expect(pause.hostHours).toBe(pause.slotHours);
    expect(lowerBound(jobs, 0, 'minimum-of-metered').hostHours).toBe(2400);
    const billed = POLICY_NAMES.map((p) =>
      simulate(jobs, policyByName(p), config('minimum-then-pause', DEFAULT_TIMINGS)),
    );
    // Fleets that park bill far below 24 h per peak host, and still above the integral part.
    expect(Math.min(...billed.map((r) => r.hostHours))).toBeLessThan(pause.peakHours);
    for (const r of billed)
      expect(r.hostHours, r.policy).toBeGreaterThanOrEqual(
        lowerBound(jobs, r.maxWaitSeconds, 'minimum-then-pause').hostHours,
      );
  });
});
