/**
 * The offline lower bound on billed host-hours for a trace, 2 VM slots per host, under
 * the 24 h rule. Derivation (README, "The lower bound"):
 *
 * Let r_w(t) be the number of jobs that must be running at t in any schedule where no job
 * waits longer than w: job j, submitted at s_j for e_j seconds, starts by s_j + w, so it
 * runs at least over [s_j + w, s_j + e_j). At t a fleet then needs ceil(r_w(t) / 2) hosts
 * that are serving, hence billed (scrubbing hosts serve nobody). So any such fleet bills
 *   (a) at least ∫ ceil(r_w(t) / 2) dt host-seconds, and
 *   (b) at least 24 h for each of the max_t ceil(r_w(t) / 2) hosts alive at the peak.
 * (a) holds under every reading: a host bills at least its unscrubbed time. (b) holds only
 * where each host bills at least 24 h: `minimum-of-metered` and `scrub-billed`. Under
 * `minimum-then-pause` a host bills max(24 h, allocated) − scrubbing, which falls below 24 h
 * for a host that scrubs: 100 hosts allocated for a burst of 2 h jobs and parked at once bill
 * about 2 h each, not 24 (test/fixtures/lb-counterexample.csv). So there LB(w) = (a) alone.
 * It holds whatever the fleet does with scrubbing, however hosts are placed, and with perfect
 * knowledge of the future. LB(0) is the bound for a fleet that starts every job on arrival.
 */
import { DAY, VM_SLOTS_PER_HOST, type BillingMode } from '../ec2mac/model';
import type { TraceJob } from './trace';

export interface LowerBound {
  /** The wait allowance w, seconds. */
  waitSeconds: number;
  hostHours: number;
  /** (a): hours of hosts needed to give every running job a slot. */
  slotHours: number;
  /** (b): 24 h for each host of the peak (not part of the bound under `minimum-then-pause`). */
  peakHosts: number;
  peakHours: number;
}

/** Whether the 24 h-per-peak-host part bounds this reading's bill (see above). */
export const peakPartHolds = (billing: BillingMode): boolean => billing !== 'minimum-then-pause';

export function lowerBound(
  trace: readonly TraceJob[],
  waitSeconds = 0,
  billing: BillingMode = 'minimum-of-metered',
): LowerBound {
  const deltas: number[] = [];
  for (const j of trace) {
    const from = j.start + waitSeconds;
    const to = j.start + j.duration;
    if (to > from) deltas.push(from * 2 + 1, to * 2); // +1 marks a start; ends sort first at a tie
  }
  deltas.sort((a, b) => a - b);
  let running = 0;
  let seconds = 0;
  let peak = 0;
  let last = 0;
  for (const d of deltas) {
    const t = Math.floor(d / 2);
    seconds += Math.ceil(running / VM_SLOTS_PER_HOST) * (t - last);
    last = t;
    running += d % 2 === 1 ? 1 : -1;
    peak = Math.max(peak, Math.ceil(running / VM_SLOTS_PER_HOST));
  }
  const slotHours = seconds / 3600;
  const peakHours = (peak * DAY) / 3600;
  const hostHours = peakPartHolds(billing) ? Math.max(slotHours, peakHours) : slotHours;
  return { waitSeconds, hostHours, slotHours, peakHosts: peak, peakHours };
}

/**
 * Not a bound on every policy but a yardstick for parking policies: the host-hours a
 * perfect forecaster must keep out of scrubbing to start every job on arrival, when a
 * parked host needs `windowSeconds` (worst scrub + launch) to serve again. At each minute
 * it keeps the most hosts any minute of the coming window needs: ∫ max_[t, t+W] ceil(r_0/2).
 */
export function parkingYardstick(trace: readonly TraceJob[], windowSeconds: number): number {
  if (trace.length === 0) return 0;
  const step = 60;
  const t0 = trace[0]!.start;
  const end = trace.reduce((m, j) => Math.max(m, j.start + j.duration), 0);
  const n = Math.ceil((end - t0) / step) + 1;
  const delta = new Int32Array(n + 1);
  for (const j of trace) {
    delta[Math.floor((j.start - t0) / step)]!++;
    delta[Math.floor((j.start + j.duration - t0) / step)]!--;
  }
  const hosts = new Int32Array(n);
  let running = 0;
  for (let i = 0; i < n; i++) {
    running += delta[i]!;
    hosts[i] = Math.ceil(running / VM_SLOTS_PER_HOST);
  }
  // Sliding-window maximum over [i, i + w] with a monotonic deque of indices.
  const w = Math.round(windowSeconds / step);
  const deque = new Int32Array(n);
  let head = 0;
  let tail = 0;
  let sum = 0;
  let next = 0;
  for (let i = 0; i < n; i++) {
    for (; next < n && next <= i + w; next++) {
      while (tail > head && hosts[deque[tail - 1]!]! <= hosts[next]!) tail--;
      deque[tail++] = next;
    }
    while (deque[head]! < i) head++;
    sum += hosts[deque[head]!]!;
  }
  return (sum * step) / 3600;
}
