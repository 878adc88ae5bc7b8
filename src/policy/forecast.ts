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

// Blocks of buckets, each with its own peak, so a week's peak reads ~200 numbers, not 2,000:
// the simulator asks for it every virtual minute of a year.
const BLOCK = 12;
const SPAN_BLOCKS = Math.ceil(SPAN_BUCKETS / BLOCK) + 1;

export class DemandHistory {
  private readonly stamps: Float64Array;
  private readonly peaks: Float64Array;
  private readonly blockStamps: Float64Array;
  private readonly blockPeaks: Float64Array;
  /** The newest bucket recorded: no bucket within SPAN_BUCKETS of it has been reused. */
  private latest = -1;
  /** Peaks of ranges that end before the newest bucket: they change only if an older bucket is written. */
  private readonly settled = new Map<number, number>();

  constructor(state?: DemandHistoryState) {
    this.stamps = new Float64Array(SPAN_BUCKETS).fill(-1);
    this.peaks = new Float64Array(SPAN_BUCKETS);
    this.blockStamps = new Float64Array(SPAN_BLOCKS).fill(-1);
    this.blockPeaks = new Float64Array(SPAN_BLOCKS);
    if (state) {
      const n = Math.min(SPAN_BUCKETS, state.stamps.length);
      for (let i = 0; i < n; i++)
        if (state.stamps[i]! >= 0) this.record(state.stamps[i]! * BUCKET_SECONDS, state.peaks[i]!);
    }
  }

  record(now: number, slots: number): void {
    const b = Math.floor(now / BUCKET_SECONDS);
    if (b > this.latest) this.latest = b;
    else if (b < this.latest && this.settled.size > 0) this.settled.clear();
    const i = b % SPAN_BUCKETS;
    if (this.stamps[i] !== b) {
      this.stamps[i] = b;
      this.peaks[i] = slots;
    } else if (slots > this.peaks[i]!) {
      this.peaks[i] = slots;
    }
    const k = Math.floor(b / BLOCK);
    const j = k % SPAN_BLOCKS;
    if (this.blockStamps[j] !== k) {
      this.blockStamps[j] = k;
      this.blockPeaks[j] = slots;
    } else if (slots > this.blockPeaks[j]!) {
      this.blockPeaks[j] = slots;
    }
  }

  /** The highest demand recorded in [from, to), 0 where nothing was recorded. */
  peak(from: number, to: number): number {
    const last = Math.floor((to - 1) / BUCKET_SECONDS);
    const first = Math.floor(from / BUCKET_SECONDS);
    // The forecast asks for the same past windows every minute for five: remember those already closed,
    // and read only the buckets still open.
    if (last < this.latest) return this.closed(first, last);
    if (first < this.latest) return Math.max(this.closed(first, this.latest - 1), this.scan(this.latest, last));
    return this.scan(first, last);
  }

  private closed(first: number, last: number): number {
    const key = first * 65536 + (last - first);
    let p = this.settled.get(key);
    if (p === undefined) {
      if (this.settled.size > 256) this.settled.clear();
      this.settled.set(key, (p = this.scan(first, last)));
    }
    return p;
  }

  private scan(first: number, last: number): number {
    let best = 0;
    let b = first;
    // A block counts only while its buckets are all still held (the 8-day ring has not reused any of them).
    const oldest = Math.max(last, this.latest) - SPAN_BUCKETS + 1;
    while (b <= last) {
      if (b % BLOCK === 0 && b + BLOCK - 1 <= last && b >= oldest) {
        const k = b / BLOCK;
        const j = k % SPAN_BLOCKS;
        if (this.blockStamps[j] === k && this.blockPeaks[j]! > best) best = this.blockPeaks[j]!;
        b += BLOCK;
        continue;
      }
      const i = b % SPAN_BUCKETS;
      if (this.stamps[i] === b && this.peaks[i]! > best) best = this.peaks[i]!;
      b++;
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
