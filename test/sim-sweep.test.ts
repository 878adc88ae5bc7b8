/** The planner's sweep: its grammar, its refusals, and a frontier no other setting beats on both cost and p95. */
import { describe, expect, it } from 'vitest';
import { DEFAULT_TIMINGS } from '../src/ec2mac/model';
import { generateTrace, shapeFor } from '../src/sim/generate';
import { parseSweep, sweep } from '../src/sim/sweep';

const minutes = (v: string): number => Number(/^(\d+)m$/.exec(v)?.[1] ?? NaN) * 60;

describe('marina simulate --sweep', () => {
  it('reads whole-number and duration ranges, and refuses bad ones naming the fix', () => {
    expect(parseSweep('headroom=0..4', minutes)).toEqual({ param: 'headroom', values: [0, 1, 2, 3, 4] });
    expect(parseSweep('keepWarm=5m..20m', minutes).values).toEqual([300, 600, 900, 1200]);
    expect(parseSweep('keepWarm=5m..60m:15m', minutes).values).toEqual([300, 1200, 2100, 3000]);
    expect(() => parseSweep('colour=1..2', minutes)).toThrow(
      /unknown setting "colour"; sweep one of headroom, keepWarm/,
    );
    expect(() => parseSweep('headroom=4..0', minutes)).toThrow(/FROM ≤ TO/);
    expect(() => parseSweep('headroom', minutes)).toThrow(/NAME=FROM..TO\[:STEP\], e.g. headroom=0..4/);
  });

  it('marks the settings no other beats on both cost and p95 wait', () => {
    const jobs = generateTrace(shapeFor('small', 14, 3));
    const points = sweep(jobs, [parseSweep('headroom=0..3', minutes)], {
      timings: DEFAULT_TIMINGS,
      billing: 'minimum-of-metered',
      maxHosts: 500,
      zones: [{ name: 'a', hosts: Number.MAX_SAFE_INTEGER }],
      hourlyPriceUsd: 1,
      seed: 1,
    });
    expect(points).toHaveLength(4);
    const front = points.filter((p) => p.frontier);
    expect(front.length).toBeGreaterThan(0);
    for (const p of front)
      for (const q of points)
        expect(
          q.hostHours < p.hostHours && q.p95WaitSeconds < p.p95WaitSeconds,
          JSON.stringify([p.settings, q.settings]),
        ).toBe(false);
    // More headroom never waits longer at the 95th percentile here, and costs more.
    const byHeadroom = [...points].sort((a, b) => a.settings.headroom! - b.settings.headroom!);
    expect(byHeadroom[3]!.hostHours).toBeGreaterThan(byHeadroom[0]!.hostHours);
  });
});
