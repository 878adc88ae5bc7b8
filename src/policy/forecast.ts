/**
 * Demand memory for the capacity policy: the peak of (busy + queued) slots per 5-minute
 * bucket over the last 8 days. The forecast for a window ahead is the larger of what the
 * same window needed yesterday and a week ago, and what the last half hour needed: CI
 * demand follows the working day and the working week. It only ever looks back. Pure and
 * small (2,305 numbers), so a pool workflow can carry it across continue-as-new.
 */
import { DAY } from '../ec2mac/model';

export const BUCKET_SECONDS = 300;
const SPAN_BUCKETS = Math.ceil((8 * DAY) / BUCKET_SECONDS) + 1;
const RECENT_SECONDS = 30 * 60;

export interface DemandHistoryState {
  /** Bucket number (time / BUCKET_SECONDS) each cell holds, or -1. */
  stamps: number[];
  peaks: number[];
}

export class DemandHistory {
  private readonly stamps: Float64Array;
  private readonly peaks: Float64Array;

  constructor(state?: DemandHistoryState) {
    this.stamps = new Float64Array(SPAN_BUCKETS).fill(-1);
    this.peaks = new Float64Array(SPAN_BUCKETS);
    if (state) {
      this.stamps.set(state.stamps.slice(0, SPAN_BUCKETS));
      this.peaks.set(state.peaks.slice(0, SPAN_BUCKETS));
    }
  }

  record(now: number, slots: number): void {
    const b = Math.floor(now / BUCKET_SECONDS);
    const i = b % SPAN_BUCKETS;
    if (this.stamps[i] !== b) {
      this.stamps[i] = b;
      this.peaks[i] = slots;
    } else if (slots > this.peaks[i]!) {
      this.peaks[i] = slots;
    }
  }

  /** The highest demand recorded in [from, to), 0 where nothing was recorded. */
  peak(from: number, to: number): number {
    let best = 0;
    const last = Math.floor((to - 1) / BUCKET_SECONDS);
    for (let b = Math.floor(from / BUCKET_SECONDS); b <= last; b++) {
      const i = b % SPAN_BUCKETS;
      if (this.stamps[i] === b && this.peaks[i]! > best) best = this.peaks[i]!;
    }
    return best;
  }

  /**
   * Slots expected to be wanted at some point in [now, now + horizon): the same window
   * yesterday and a week ago (`max` of the two, or their `mean`), and never less than the
   * last half hour needed.
   */
  forecast(now: number, horizon: number, combine: 'max' | 'mean' = 'max'): number {
    const yesterday = this.peak(now - DAY, now - DAY + horizon);
    const lastWeek = this.peak(now - 7 * DAY, now - 7 * DAY + horizon);
    const seasonal = combine === 'max' ? Math.max(yesterday, lastWeek) : (yesterday + lastWeek) / 2;
    return Math.max(seasonal, this.peak(now - RECENT_SECONDS, now + 1));
  }

  toState(): DemandHistoryState {
    return { stamps: Array.from(this.stamps), peaks: Array.from(this.peaks) };
  }
}
