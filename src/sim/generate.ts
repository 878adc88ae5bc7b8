/**
 * A seeded generator of synthetic CI traces: a working-day curve, quiet weekends, release
 * days with bursts, holidays, and job lengths from a mix of unit tests, builds and UI
 * tests. The same options and seed give the same trace, byte for byte.
 */
import { seeded, type Uniform } from '../ec2mac/random';
import type { TraceJob } from './trace';

export interface TraceShape {
  /** First day, `YYYY-MM-DD` (UTC midnight). */
  startDate: string;
  days: number;
  /** Jobs per hour at the busiest hour of an ordinary weekday. */
  peakJobsPerHour: number;
  /** The team's offset from UTC, hours: where its working day falls. */
  utcOffsetHours: number;
  /** Release days per 30 days; each multiplies demand by `burstFactor` for a working afternoon. */
  releasesPerMonth: number;
  burstFactor: number;
  /** `MM-DD` days (every year) when hardly anyone pushes. */
  holidays: string[];
  seed: number;
}

export const PRESETS: Readonly<Record<string, Omit<TraceShape, 'seed' | 'startDate' | 'days'>>> = {
  // A product team: ~30k jobs a year.
  small: { peakJobsPerHour: 14, utcOffsetHours: -5, releasesPerMonth: 2, burstFactor: 2.5, holidays: US_HOLIDAYS() },
  // Several teams sharing a pool: ~120k jobs a year.
  medium: { peakJobsPerHour: 55, utcOffsetHours: 1, releasesPerMonth: 4, burstFactor: 2, holidays: EU_HOLIDAYS() },
  // A company-wide pool: ~330k jobs a year, sharp release bursts.
  large: { peakJobsPerHour: 150, utcOffsetHours: -8, releasesPerMonth: 4, burstFactor: 2.5, holidays: US_HOLIDAYS() },
};

function US_HOLIDAYS(): string[] {
  return [
    '01-01',
    '01-19',
    '05-25',
    '07-03',
    '09-07',
    '11-26',
    '11-27',
    '12-24',
    '12-25',
    '12-28',
    '12-29',
    '12-30',
    '12-31',
  ];
}
function EU_HOLIDAYS(): string[] {
  return ['01-01', '04-03', '04-06', '05-01', '05-14', '05-25', '12-24', '12-25', '12-26', '12-31'];
}

// Relative demand by local hour (0–23), a working day with a lunch dip and a late tail.
const HOURLY = [
  0.04, 0.03, 0.03, 0.03, 0.04, 0.06, 0.12, 0.3, 0.65, 0.9, 1, 0.95, 0.75, 0.9, 1, 0.95, 0.85, 0.65, 0.4, 0.25, 0.18,
  0.12, 0.08, 0.05,
];
// Relative demand by local weekday, Sunday first (nightly builds keep weekends above zero).
const WEEKLY = [0.12, 1, 1, 0.95, 0.95, 0.8, 0.15];

interface JobKind {
  stage: string;
  share: number;
  /** Median seconds and log-normal sigma. */
  median: number;
  sigma: number;
}
const KINDS: JobKind[] = [
  { stage: 'unit-tests', share: 0.45, median: 8 * 60, sigma: 0.5 },
  { stage: 'build', share: 0.35, median: 22 * 60, sigma: 0.45 },
  { stage: 'ui-tests', share: 0.15, median: 45 * 60, sigma: 0.4 },
  { stage: 'archive', share: 0.05, median: 70 * 60, sigma: 0.35 },
];
const PROJECTS = ['ios-app', 'macos-app', 'sdk', 'watch-app', 'widgets', 'design-system'];

function gaussian(u: Uniform): number {
  // Box–Muller.
  const a = Math.max(u(), 1e-12);
  return Math.sqrt(-2 * Math.log(a)) * Math.cos(2 * Math.PI * u());
}

function poisson(u: Uniform, mean: number): number {
  if (mean > 30) return Math.max(0, Math.round(mean + Math.sqrt(mean) * gaussian(u)));
  const limit = Math.exp(-mean);
  let k = 0;
  let p = u();
  while (p > limit) {
    k++;
    p *= u();
  }
  return k;
}

export function shapeFor(preset: string, days: number, seed: number, startDate = '2026-01-05'): TraceShape {
  const p = PRESETS[preset];
  if (!p) throw new Error(`unknown trace preset "${preset}" (known: ${Object.keys(PRESETS).join(', ')})`);
  return { ...p, startDate, days, seed };
}

export function generateTrace(shape: TraceShape): TraceJob[] {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(shape.startDate))
    throw new Error(`startDate must be YYYY-MM-DD, got "${shape.startDate}"`);
  if (!(shape.days > 0)) throw new Error(`days must be > 0, got ${shape.days}`);
  const u = seeded(shape.seed);
  const t0 = Date.parse(`${shape.startDate}T00:00:00Z`) / 1000;
  const minutes = shape.days * 24 * 60;
  const holidays = new Set(shape.holidays);
  // Release days: drawn per day so the count per month is right on average.
  const releaseDay = new Set<number>();
  for (let d = 0; d < shape.days; d++) {
    const local = new Date((t0 + d * 86400) * 1000);
    const wd = local.getUTCDay();
    if (wd >= 1 && wd <= 4 && u() < shape.releasesPerMonth / 17.4) releaseDay.add(d);
  }
  const jobs: TraceJob[] = [];
  let counter = 0;
  for (let m = 0; m < minutes; m++) {
    const utc = t0 + m * 60;
    const local = utc + shape.utcOffsetHours * 3600;
    const date = new Date(local * 1000);
    const hour = date.getUTCHours();
    const day = Math.floor((local - t0) / 86400);
    let rate = shape.peakJobsPerHour * HOURLY[hour]! * WEEKLY[date.getUTCDay()]!;
    if (holidays.has(date.toISOString().slice(5, 10))) rate *= 0.1;
    if (releaseDay.has(day) && hour >= 13 && hour < 19) rate *= shape.burstFactor;
    const k = poisson(u, rate / 60);
    for (let i = 0; i < k; i++) {
      let pick = u();
      let kind = KINDS[0]!;
      for (const kd of KINDS) {
        if (pick < kd.share) {
          kind = kd;
          break;
        }
        pick -= kd.share;
      }
      const duration = Math.min(4 * 3600, Math.max(60, Math.round(kind.median * Math.exp(kind.sigma * gaussian(u)))));
      const project = PROJECTS[Math.floor(u() * PROJECTS.length)]!;
      jobs.push({
        start: utc + Math.floor(u() * 60),
        duration,
        jobName: `${project}#${++counter}`,
        stageName: kind.stage,
      });
    }
  }
  jobs.sort((a, b) => a.start - b.start);
  return jobs;
}
