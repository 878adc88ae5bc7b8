/** Monthly books and percentiles for the simulator's results. */
import type { MonthFigures } from './engine';

export function monthKey(t: number): string {
  return new Date(t * 1000).toISOString().slice(0, 7);
}

/** The first second of the month after the one holding t (UTC). */
export function nextMonthStart(t: number): number {
  const d = new Date(t * 1000);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) / 1000;
}

export class MonthBook {
  private readonly m = new Map<string, MonthFigures>();
  // The month last looked up: nearly every lookup hits it.
  private from = 1;
  private to = 0;
  private current: MonthFigures | undefined;
  at(t: number): MonthFigures {
    if (t >= this.from && t < this.to) return this.current!;
    const k = monthKey(t);
    let f = this.m.get(k);
    if (!f) {
      f = {
        month: k,
        jobs: 0,
        instanceHours: 0,
        hostHours: 0,
        hostHoursWithScrub: 0,
        queueHours: 0,
        waitedJobs: 0,
        meanWaitMinutes: 0,
        costUsd: 0,
      };
      this.m.set(k, f);
    }
    const d = new Date(t * 1000);
    this.from = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1) / 1000;
    this.to = nextMonthStart(t);
    this.current = f;
    return f;
  }
  /** Books [a, b) split at month boundaries (Fish booked whole stretches to their end month). */
  spread(a: number, b: number, add: (f: MonthFigures, hours: number) => void): void {
    while (a < b) {
      const f = this.at(a);
      const edge = Math.min(b, this.to);
      add(f, (edge - a) / 3600);
      a = edge;
    }
  }
  sorted(): MonthFigures[] {
    return [...this.m.values()].sort((x, y) => x.month.localeCompare(y.month));
  }
}

export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[i]!;
}
