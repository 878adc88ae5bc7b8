/** The fleet simulator: exact figures on a hand-computed trace, and invariants every policy must keep. */
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { DEFAULT_TIMINGS, billedSeconds, type MacTimings } from '../src/ec2mac/model';
import { releaseVerdict } from '../src/ec2mac/machine';
import { simulate, type FleetPolicy, type SimConfig } from '../src/sim/engine';
import { lowerBound } from '../src/sim/lower-bound';
import { POLICY_NAMES, naivePolicy, policyByName } from '../src/sim/policies';
import { generateTrace, shapeFor } from '../src/sim/generate';
import { formatTrace, parseTrace, TraceError, type TraceJob } from '../src/sim/trace';
import { DemandHistory } from '../src/policy/forecast';
import { DEFAULT_FLEET_POLICY, planFleet, type FleetHostView } from '../src/policy/fleet';
import { retireAction } from '../src/policy/retire';
import { marinaPolicy } from '../src/sim/policies';

const HOUR = 3600;
const instant: MacTimings = {
  allocationSeconds: 0,
  instanceRunningSeconds: 0,
  sshReadySeconds: 0,
  prepareSeconds: 0,
  vmBootSeconds: 0,
  stoppingSeconds: 0,
  occupiedSeconds: 0,
  scrubSeconds: [HOUR, HOUR],
  settleSeconds: 0,
  rootVolumeReplacementSeconds: 0,
};
const config = (over: Partial<SimConfig> = {}): SimConfig => ({
  timings: DEFAULT_TIMINGS,
  billing: 'minimum-of-metered',
  maxHosts: 500,
  zones: [{ name: 'a', hosts: Number.MAX_SAFE_INTEGER }],
  hourlyPriceUsd: 1,
  seed: 1,
  ...over,
});
const job = (start: number, duration: number, n = 0): TraceJob => ({
  start,
  duration,
  jobName: `j${n}`,
  stageName: 's',
});

describe('simulator: a hand-computed trace', () => {
  // 2026-01-31 20:00 UTC: three 1 h jobs at once, then one 30 min job 30 h later.
  const t0 = Date.parse('2026-01-31T20:00:00Z') / 1000;
  const trace = [job(t0, HOUR, 1), job(t0, HOUR, 2), job(t0, HOUR, 3), job(t0 + 30 * HOUR, HOUR / 2, 4)];

  it('gives the exact figures for the naive policy', () => {
    // Naive takes 2 hosts at t0 (3 jobs, 2 slots each), releases both at 24 h (idle), then
    // takes a third at t0 + 30 h that the trace's end leaves with its 24 h minimum.
    const r = simulate(trace, naivePolicy(), config({ timings: instant }));
    expect(r.hostsAllocated).toBe(3);
    expect(r.peakHosts).toBe(2);
    expect(r.hostHours).toBeCloseTo(72, 9);
    expect(r.instanceHours).toBeCloseTo(3.5, 9);
    expect(r.wait).toMatchObject({ p50: 0, p95: 0, max: 0 });
    expect(r.hostsStillAllocated).toBe(1);
    // Hours split at the month boundary: 2 hosts × 4 h in January, the rest in February.
    expect(r.months.map((m) => m.month)).toEqual(['2026-01', '2026-02']);
    expect(r.months[0]!.hostHours).toBeCloseTo(8, 9);
    expect(r.months[1]!.hostHours).toBeCloseTo(64, 9);
    expect(r.months[0]!.instanceHours).toBeCloseTo(3, 9);
    expect(r.months[1]!.instanceHours).toBeCloseTo(0.5, 9);
    expect(r.costUsd).toBeCloseTo(72, 9);
  });

  it('gives the exact lower bound', () => {
    // 3 jobs need 2 hosts for 1 h, the last 1 host for 0.5 h; 2 hosts at the peak × 24 h dominate.
    expect(lowerBound(trace)).toMatchObject({ slotHours: 2.5, peakHosts: 2, peakHours: 48, hostHours: 48 });
    // Allowing 1 h of waiting, no job must run at any given moment: the bound falls to nothing.
    expect(lowerBound(trace, HOUR).hostHours).toBe(0);
  });

  it('counts waits from submit to the script starting', () => {
    // One host at a time: the third job waits for a slot; boot times add to every wait.
    const timings = {
      ...instant,
      vmBootSeconds: 30,
      instanceRunningSeconds: 60,
      sshReadySeconds: 60,
      prepareSeconds: 60,
    };
    const r = simulate(trace, naivePolicy(), config({ timings, maxHosts: 1 }));
    // Allocate + launch 180 s, then VM boot 30 s. The third job gets the slot the first
    // frees at 210 s + 1 h, and boots its VM for 30 s more.
    expect(r.wait.max).toBe(210 + HOUR + 30);
    expect(r.wait.p50).toBe(210);
    expect(r.allocationFailures).toBeGreaterThan(0);
  });
});

describe('EC2 Mac billing and release rules', () => {
  it('bills a host under each reading of scrubbing and the 24 h minimum', () => {
    // 30 h allocated, 10 h of it scrubbing.
    expect(billedSeconds(30 * HOUR, 10 * HOUR, 'minimum-of-metered') / HOUR).toBe(24);
    expect(billedSeconds(30 * HOUR, 10 * HOUR, 'minimum-then-pause') / HOUR).toBe(20);
    expect(billedSeconds(30 * HOUR, 10 * HOUR, 'scrub-billed') / HOUR).toBe(30);
    expect(billedSeconds(2 * HOUR, 0, 'minimum-of-metered') / HOUR).toBe(24);
  });

  it('refuses a release before 24 h with the AWS code and the earliest time', () => {
    const allocatedAt = Date.parse('2026-03-01T10:00:00Z') / 1000;
    const host = { id: 'h-0123456789abcdef0', instanceType: 'mac2-m2.metal', allocatedAt, hasLiveInstance: false };
    const early = releaseVerdict(host, allocatedAt + 23 * HOUR);
    expect(early).toMatchObject({ ok: false, code: 'Client.HostMinAllocationPeriodUnexpired' });
    expect(early.ok ? '' : early.message).toContain('any time after 2026-03-02T10:00:00.000Z');
    expect(releaseVerdict({ ...host, hasLiveInstance: true }, allocatedAt + 25 * HOUR)).toMatchObject({
      code: 'Client.InvalidHost.Occupied',
    });
    expect(releaseVerdict(host, allocatedAt + 24 * HOUR)).toEqual({ ok: true });
  });

  it('refuses and counts a policy that releases a young host', () => {
    const hasty: FleetPolicy = {
      ...naivePolicy(),
      name: 'hasty',
      onTick(fleet) {
        naivePolicy().onTick(fleet);
        for (let i = fleet.hosts.length - 1; i >= 0; i--) {
          const h = fleet.hosts[i]!;
          if (h.busy === 0) fleet.release(h);
        }
      },
    };
    const t0 = Date.parse('2026-01-05T09:00:00Z') / 1000;
    const r = simulate([job(t0, 600), job(t0 + 2 * HOUR, 600)], hasty, config({ timings: instant }));
    expect(r.earlyReleaseAttempts).toBeGreaterThan(0);
    expect(r.releasedYoungerThan24h).toBe(0);
    // The one host stayed and served both jobs.
    expect(r.hostsAllocated).toBe(1);
  });
});

describe('root-volume replacement', () => {
  it('takes the host out of service for its duration, billed, without a scrub', () => {
    // A policy that refreshes every idle ready host once: jobs arriving meanwhile wait for it.
    const refreshed = new Set<number>();
    const refresher: FleetPolicy = {
      ...naivePolicy(),
      name: 'refresher',
      onTick(fleet) {
        naivePolicy().onTick(fleet);
        for (const h of fleet.hosts)
          if (h.phase === 'ready' && !refreshed.has(h.id) && fleet.replaceRoot(h)) refreshed.add(h.id);
      },
    };
    const t0 = Date.parse('2026-01-05T09:00:00Z') / 1000;
    const timings = { ...instant, rootVolumeReplacementSeconds: 15 * 60 };
    const r = simulate([job(t0, 60), job(t0 + 120, 60)], refresher, config({ timings, maxHosts: 1 }));
    // The first job ran at once; the replacement began at the next tick (t0 + 60) and the
    // second job waited for it to end at t0 + 60 + 900.
    expect(r.wait.max).toBe(60 + 900 - 120);
    expect(r.scrubs).toBe(0);
    expect(r.phaseHours.replacing).toBeCloseTo(0.25, 9);
    expect(r.phaseHours.scrubbing).toBe(0);
  });

  it("prices Marina's cleaning rule: replacement where the host is wanted, scrubs without it", () => {
    const jobs = generateTrace(shapeFor('small', 14, 5));
    const plain = simulate(jobs, marinaPolicy(), config());
    // Every job dirties its host (refreshAfterJobs: 1), as for untrusted jobs.
    const rrv = simulate(jobs, marinaPolicy({ refreshAfterJobs: 1 }), config());
    const scrubOnly = simulate(jobs, marinaPolicy({ refreshAfterJobs: 1, rootVolumeReplacement: false }), config());
    for (const r of [plain, rrv, scrubOnly]) {
      expect(r.startedOnce && r.finishedOnce).toBe(true);
      expect(r.earlyReleaseAttempts).toBe(0);
    }
    expect(plain.phaseHours.replacing).toBe(0);
    expect(rrv.phaseHours.replacing).toBeGreaterThan(0);
    expect(scrubOnly.phaseHours.replacing).toBe(0);
    // Cleaning by scrubs alone takes wanted hosts away for hours: more scrubs, more hosts allocated to
    // cover for them, and longer waits than cleaning them in 15 min by replacement.
    expect(scrubOnly.scrubs).toBeGreaterThan(rrv.scrubs);
    expect(scrubOnly.hostsAllocated).toBeGreaterThan(rrv.hostsAllocated);
    expect(scrubOnly.wait.p95).toBeGreaterThan(rrv.wait.p95);
  });
});

describe('every policy, on generated traces', () => {
  const traces = [
    { name: 'small, 3 weeks', jobs: generateTrace(shapeFor('small', 21, 3)) },
    { name: 'medium, 2 weeks', jobs: generateTrace(shapeFor('medium', 14, 4)) },
  ];
  for (const t of traces) {
    for (const billing of ['minimum-of-metered', 'minimum-then-pause', 'scrub-billed'] as const) {
      it(`${t.name}, ${billing}: no early release, no job lost or run twice, cost ≥ the lower bound`, () => {
        const lb0 = lowerBound(t.jobs, 0, billing);
        for (const name of POLICY_NAMES) {
          const r = simulate(t.jobs, policyByName(name), config({ billing }));
          expect(r.earlyReleaseAttempts, name).toBe(0);
          expect(r.releasedYoungerThan24h, name).toBe(0);
          expect(r.startedOnce, name).toBe(true);
          expect(r.finishedOnce, name).toBe(true);
          // Proven: no fleet whose waits stay ≤ w bills less than LB(w).
          expect(r.hostHours, name).toBeGreaterThanOrEqual(lowerBound(t.jobs, r.maxWaitSeconds, billing).hostHours);
          // The zero-wait bound holds on these traces too (policies wait, so this is measured, not proven).
          expect(r.hostHours, name).toBeGreaterThanOrEqual(lb0.hostHours);
          // Monthly rows add up to the totals.
          const months = r.months.reduce((s, m) => s + m.hostHours, 0);
          expect(months, name).toBeCloseTo(r.hostHours, 6);
          expect(
            r.months.reduce((s, m) => s + m.jobs, 0),
            name,
          ).toBe(t.jobs.length);
        }
      });
    }
  }

  it('keeps every job when the host cap is far below demand', () => {
    const jobs = generateTrace(shapeFor('small', 4, 9));
    for (const name of POLICY_NAMES) {
      const r = simulate(jobs, policyByName(name), config({ maxHosts: 2 }));
      expect(r.startedOnce && r.finishedOnce, name).toBe(true);
      expect(r.peakHosts, name).toBeLessThanOrEqual(2);
      expect(r.wait.max, name).toBeGreaterThan(HOUR);
    }
  });

  it('falls back to the next zone when one is out of Mac hosts', () => {
    const jobs = generateTrace(shapeFor('small', 3, 2));
    const r = simulate(
      jobs,
      policyByName('naive'),
      config({
        zones: [
          { name: 'a', hosts: 1 },
          { name: 'b', hosts: 100 },
        ],
      }),
    );
    expect(r.finishedOnce).toBe(true);
    expect(r.peakHosts).toBeGreaterThan(1);
  });

  it("Marina's policy costs less than Aquarium's and the naive policy at no worse p95 wait", () => {
    const jobs = generateTrace(shapeFor('medium', 21, 5));
    const run = (n: (typeof POLICY_NAMES)[number]) => simulate(jobs, policyByName(n), config());
    const [marina, aquarium, naive] = [run('marina'), run('aquarium'), run('naive')];
    expect(marina.hostHours).toBeLessThan(0.5 * aquarium.hostHours);
    expect(marina.hostHours).toBeLessThan(naive.hostHours);
    expect(marina.wait.p95).toBeLessThanOrEqual(aquarium.wait.p95);
  });
});

describe("Marina's fleet policy (pure)", () => {
  const now = 1_800_000_000;
  const host = (over: Partial<FleetHostView> & { id: number }): FleetHostView => ({
    phase: 'ready',
    busy: 0,
    slots: 2,
    allocatedAt: now - 2 * HOUR,
    idleSince: now - HOUR,
    pendingSeconds: 0,
    phaseSince: now - 2 * HOUR,
    ...over,
  });
  const base = {
    now,
    busySlots: 0,
    queued: 0,
    maxHosts: 10,
    timings: DEFAULT_TIMINGS,
    billing: 'minimum-of-metered' as const,
    config: { ...DEFAULT_FLEET_POLICY, headroomSlots: 0, headroomFraction: 0 },
    forecast: { soon: 0, parkWindow: 0, week: 0 },
  };

  it('launches idle hosts before it allocates, and allocates only for jobs waiting now', () => {
    const hosts = [host({ id: 1, phase: 'idle' }), host({ id: 2, phase: 'pending' })];
    const plan = planFleet({ ...base, hosts, queued: 5, forecast: { soon: 8, parkWindow: 8, week: 8 } });
    expect(plan.launch.map((h) => h.id)).toEqual([1]);
    // 5 queued − 2 slots coming from host 1 = 3 slots → 2 new hosts; the forecast's extra 3 slots buy nothing.
    expect(plan.allocate).toBe(2);
    expect(plan.reasons).toEqual([
      expect.stringMatching(/^launch host 1: 8 slots wanted soon/),
      expect.stringMatching(/^allocate 2: 8 slots wanted/),
    ]);
  });

  it('allocates up to minHosts without demand, and counts them against the demand that comes', () => {
    const c = { ...base.config, minHosts: 2 };
    const empty = planFleet({ ...base, config: c, hosts: [] });
    expect(empty.allocate).toBe(2);
    expect(empty.reasons[0]).toMatch(/^allocate 2: the pool keeps at least 2 host\(s\) \(minHosts\)/);
    // 2 queued slots fit on the 2 minimum hosts: no third host.
    expect(planFleet({ ...base, config: c, hosts: [], queued: 2 }).allocate).toBe(2);
    expect(planFleet({ ...base, config: c, hosts: [], queued: 6 }).allocate).toBe(3);
    expect(planFleet({ ...base, config: c, maxHosts: 1, hosts: [] }).allocate).toBe(1);
  });

  it('cleans a dirty host by root-volume replacement when it is wanted soon, else by a scrub or a release', () => {
    const dirty = host({ id: 1, jobsSinceClean: 3 });
    const refresh = { ...base.config, refreshAfterJobs: 3 };
    // Wanted: the park window needs its slots.
    const wanted = planFleet({
      ...base,
      config: refresh,
      hosts: [dirty],
      forecast: { soon: 2, parkWindow: 2, week: 2 },
    });
    expect(wanted.replaceRoot.map((h) => h.id)).toEqual([1]);
    expect(wanted.reasons[0]).toMatch(/^replace the root volume of host 1: 3 jobs since it was clean/);
    // Root-volume replacement off: a scrub cleans it.
    const off = planFleet({
      ...base,
      config: { ...refresh, rootVolumeReplacement: false },
      hosts: [dirty],
      forecast: { soon: 2, parkWindow: 2, week: 2 },
    });
    expect(off.replaceRoot).toEqual([]);
    expect(off.park.map((h) => h.id)).toEqual([1]);
    // Not wanted: parked (scrubbing cleans it for free); one job short of the threshold: left alone.
    const spare = planFleet({
      ...base,
      config: refresh,
      hosts: [dirty, host({ id: 2 })],
      forecast: { soon: 2, parkWindow: 2, week: 2 },
    });
    expect(spare.park.map((h) => h.id)).toEqual([1]);
    expect(spare.replaceRoot).toEqual([]);
    const unwanted = planFleet({
      ...base,
      config: refresh,
      hosts: [dirty],
      forecast: { soon: 0, parkWindow: 0, week: 2 },
    });
    expect(unwanted.park.map((h) => h.id)).toEqual([1]);
    const clean = planFleet({
      ...base,
      config: refresh,
      hosts: [host({ id: 1, jobsSinceClean: 2, idleSince: now })],
      forecast: { soon: 2, parkWindow: 2, week: 2 },
    });
    expect([...clean.replaceRoot, ...clean.park, ...clean.release]).toEqual([]);
    // A busy dirty host is never touched; a host that failed health checks is dirty whatever its jobs.
    expect(
      planFleet({ ...base, config: refresh, hosts: [host({ id: 1, jobsSinceClean: 9, busy: 1 })], busySlots: 1 })
        .replaceRoot,
    ).toEqual([]);
    const sick = planFleet({
      ...base,
      hosts: [host({ id: 1, unhealthy: true })],
      forecast: { soon: 2, parkWindow: 2, week: 2 },
    });
    expect(sick.replaceRoot.map((h) => h.id)).toEqual([1]);
  });

  it('retires one host by the named rules: never busy, release paid-up, park where it pays, else keep warm', () => {
    const r = (o: Partial<Parameters<typeof retireAction>[0]>) =>
      retireAction({
        reason: 'surplus',
        busy: 0,
        releasable: false,
        parkPays: true,
        wanted: false,
        rootVolumeReplacement: true,
        ...o,
      }).action;
    expect(r({ busy: 1, releasable: true })).toBe('keep');
    expect(r({ releasable: true })).toBe('release');
    expect(r({})).toBe('park');
    expect(r({ parkPays: false })).toBe('keep');
    expect(r({ reason: 'dirty', wanted: true })).toBe('replace-root');
    expect(r({ reason: 'dirty', wanted: true, rootVolumeReplacement: false })).toBe('park');
    expect(r({ reason: 'dirty', releasable: true })).toBe('release');
    expect(r({ reason: 'dirty', parkPays: false })).toBe('park');
  });

  // Pools started before the EC2 Mac machine plan as they did (their histories replay): parking under the literal reading.
  const legacy = { ...base, config: { ...base.config, ec2Machine: false } };

  it('parks idle hosts the scrub window does not need, and never touches a busy one', () => {
    const hosts = [host({ id: 1, busy: 1 }), host({ id: 2 }), host({ id: 3 })];
    const plan = planFleet({ ...legacy, hosts, busySlots: 1, forecast: { soon: 1, parkWindow: 2, week: 6 } });
    expect(plan.park.map((h) => h.id)).toEqual([2, 3]);
    expect(plan.release).toEqual([]);
    // With the machine's whole park cycle billed, parking pays only under minimum-then-pause.
    const now = planFleet({ ...base, hosts, busySlots: 1, forecast: { soon: 1, parkWindow: 2, week: 6 } });
    expect(now.park).toEqual([]);
    const pause = planFleet({
      ...base,
      billing: 'minimum-then-pause',
      hosts,
      busySlots: 1,
      forecast: { soon: 1, parkWindow: 2, week: 6 },
    });
    expect(pause.park.map((h) => h.id)).toEqual([2, 3]);
  });

  it('under the literal reading, keeps young idle hosts warm and releases paid-up ones', () => {
    const old = { allocatedAt: now - 50 * HOUR, phaseSince: now - 50 * HOUR };
    const hosts = [host({ id: 1, ...old }), host({ id: 2 })];
    const plan = planFleet({ ...base, hosts, forecast: { soon: 0, parkWindow: 0, week: 6 } });
    expect(plan.release.map((h) => h.id)).toEqual([1]);
    expect(plan.park).toEqual([]);
  });

  it('releases only hosts whose 24 h are paid, beyond what last week needed', () => {
    const old = { allocatedAt: now - 50 * HOUR, phaseSince: now - 50 * HOUR };
    const hosts = [
      host({ id: 1, ...old }), // 50 h metered: paid up
      host({ id: 2, ...old, pendingSeconds: 40 * HOUR }), // 10 h metered: keeping it costs nothing yet
      host({ id: 3 }), // young
    ];
    const plan = planFleet({ ...legacy, hosts, forecast: { soon: 0, parkWindow: 0, week: 0 } });
    expect(plan.release.map((h) => h.id)).toEqual([1]);
    expect(plan.park.map((h) => h.id).sort()).toEqual([2, 3]);
    // Last week needed 3 hosts: nothing is released.
    const kept = planFleet({ ...legacy, hosts, forecast: { soon: 0, parkWindow: 0, week: 6 } });
    expect(kept.release).toEqual([]);
  });

  it('does not park where scrubbing is billed', () => {
    const plan = planFleet({ ...base, billing: 'scrub-billed', hosts: [host({ id: 1 })] });
    expect(plan.park).toEqual([]);
  });

  it('forecasts from yesterday and last week, never the future', () => {
    const h = new DemandHistory();
    const day = 24 * HOUR;
    h.record(now - day + 600, 7); // yesterday, 10 min after this time of day
    h.record(now - 7 * day + 3 * HOUR, 11); // a week ago, 3 h later in the day
    h.record(now + 600, 99); // "the future" recorded by mistake must not leak into a forecast from now
    expect(h.forecast(now, 1800)).toBe(7);
    expect(h.forecast(now, 4 * HOUR)).toBe(11);
    expect(h.forecast(now, 4 * HOUR, 'mean')).toBe(9);
    const restored = new DemandHistory(h.toState());
    expect(restored.forecast(now, 4 * HOUR)).toBe(11);
  });
});

describe('traces', () => {
  it('reads the Aquarium CSV format, extra columns included, and round-trips it', () => {
    const text =
      'startTime,endTime,executionTime,jobName,stageName,pool\n100,160,60,a,build,ios\n100,130,30,"b,c",test,\n';
    const jobs = parseTrace(text);
    expect(jobs).toEqual([
      { start: 100, duration: 60, jobName: 'a', stageName: 'build', pool: 'ios' },
      { start: 100, duration: 30, jobName: 'b,c', stageName: 'test' },
    ]);
    expect(parseTrace(formatTrace(jobs))).toEqual(jobs);
  });

  it.each([
    ['startTime,executionTime,jobName,stageName\n100,60,a,s\n1e3,60,b,s\n', /line 3: startTime must be a whole number/],
    ['startTime,executionTime,jobName,stageName\n100,60,a,s\n99,60,b,s\n', /line 3: rows must be sorted by startTime/],
    ['startTime,executionTime,jobName,stageName\n100,-5,a,s\n', /line 2: executionTime must be ≥ 0/],
    ['startTime,jobName,stageName\n100,a,s\n', /line 1: the header lacks executionTime/],
    ['startTime,executionTime,jobName,stageName,colour\n1,1,a,s,red\n', /line 1: unknown column\(s\) colour/],
    ['startTime,executionTime,jobName,stageName\n1,1,a\n', /Invalid Record Length/],
    ['startTime,executionTime,jobName,stageName\n', /no jobs/],
    // Out of range: each names its line, the bound and the likely fix.
    [
      'startTime,executionTime,jobName,stageName\n100,60,a,s\n1000000000000000000,60,b,s\n',
      /line 3: startTime 1000000000000000000 is out of range \(at most 7258118400\): Unix epoch seconds before 2200 \(milliseconds\? divide by 1000\)/,
    ],
    [
      'startTime,executionTime,jobName,stageName\n8640000000000,60,a,s\n',
      /line 2: startTime 8640000000000 is out of range/,
    ],
    [
      'startTime,executionTime,jobName,stageName\n100,31708800,a,s\n',
      /line 2: executionTime 31708800 is out of range \(at most 31622400\)/,
    ],
    [
      'startTime,executionTime,jobName,stageName\n100,60,a,s\n316310500,60,b,s\n',
      /line 3: startTime 316310500 is 3661 days after the first row's; a trace may span at most 3660 days: split it/,
    ],
    [
      `startTime,executionTime,jobName,stageName\n100,60,${'x'.repeat(1025)},s\n`,
      /line 2: jobName is longer than 1024 characters/,
    ],
    ['startTime,executionTime,jobName,stageName\n100,60,"a,s\n', /line 2: a quoted field is never closed/],
  ])('refuses a malformed trace with its line: %#', (text, message) => {
    expect(() => parseTrace(text, 'my.csv')).toThrow(TraceError);
    expect(() => parseTrace(text, 'my.csv')).toThrow(message);
  });

  it('runs a job longer than 30 days without a false starvation error', () => {
    const t0 = Date.parse('2026-01-05T09:00:00Z') / 1000;
    const long = [job(t0, 40 * 24 * HOUR), job(t0 + 60, 600, 1)];
    for (const name of POLICY_NAMES) {
      const r = simulate(long, policyByName(name), config());
      expect(r.finishedOnce, name).toBe(true);
    }
  });

  it('generates the same trace from the same seed, with working days busier than weekends', () => {
    const a = generateTrace(shapeFor('small', 14, 5));
    expect(generateTrace(shapeFor('small', 14, 5))).toEqual(a);
    expect(generateTrace(shapeFor('small', 14, 6))).not.toEqual(a);
    const byDay = new Map<number, number>();
    for (const j of a)
      byDay.set(new Date(j.start * 1000).getUTCDay(), (byDay.get(new Date(j.start * 1000).getUTCDay()) ?? 0) + 1);
    expect(byDay.get(3)!).toBeGreaterThan(3 * (byDay.get(0) ?? 0));
    expect(a.every((j, i) => i === 0 || a[i - 1]!.start <= j.start)).toBe(true);
  });

  it('ships reference traces that parse', () => {
    for (const f of ['small-13w', 'medium-13w', 'large-4w']) {
      const jobs = parseTrace(gunzipSync(readFileSync(join('traces', `${f}.csv.gz`))).toString(), f);
      expect(jobs.length, f).toBeGreaterThan(5000);
    }
  });
});

describe('marina simulate (CLI)', () => {
  const run = promisify(execFile);
  const marina = (args: string[]) => run('./bin/marina', args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });

  it('compares policies on a trace file and prints JSON', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'marina-sim-'));
    const file = join(dir, 'trace.csv');
    writeFileSync(file, formatTrace(generateTrace(shapeFor('small', 10, 8))));
    const { stdout } = await marina(['simulate', file, '--policies', 'marina,aquarium', '--json', '--plots', dir]);
    const out = JSON.parse(stdout) as {
      rows: { policy: string; hostHours: number; months: unknown[] }[];
      lowerBound: { hostHours: number };
    };
    expect(out.rows.map((r) => r.policy)).toEqual(['marina', 'aquarium']);
    for (const r of out.rows) expect(r.hostHours).toBeGreaterThanOrEqual(out.lowerBound.hostHours);
    for (const svg of ['hosts.svg', 'queue.svg', 'cost.svg'])
      expect(readFileSync(join(dir, svg), 'utf8')).toMatch(/^<svg[\s\S]*marina/);
  });

  it('names the flag and the fix for bad input', async () => {
    await expect(marina(['simulate', '--generate', 'small:14', '--billing', 'cheap'])).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/--billing: "cheap" is not a billing reading; use one of minimum-of-metered/),
    });
    await expect(marina(['simulate', '--generate', 'small:14', '--refresh-after-jobs', 'often'])).rejects.toMatchObject(
      {
        code: 2,
        stderr: expect.stringMatching(/--refresh-after-jobs: "often" must be a whole number ≥ 0 \(0: never\)/),
      },
    );
    const dir = mkdtempSync(join(tmpdir(), 'marina-sim-'));
    const file = join(dir, 'bad.csv');
    writeFileSync(file, 'startTime,executionTime,jobName,stageName\n100,60,a,s\nsoon,60,b,s\n');
    await expect(marina(['simulate', file])).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringContaining(`${file}: line 3: startTime must be a whole number`),
    });
  });
});
