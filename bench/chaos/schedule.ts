/**
 * The chaos run's fault schedule: drawn from a seed before the run starts and printed with the report,
 * so a run that finds an anomaly can be replayed with the same faults at the same moments.
 */
import { seeded } from '../../src/ec2mac/random';

export const FAULT_KINDS = [
  'worker-kill', // SIGKILL one worker process; it comes back a few seconds later
  'temporal-restart', // SIGKILL the Temporal dev server; started again on its database
  'ssh-cut', // every SSH connection to one host (and its VMs) dropped mid-stream
  'host-vanish', // one host unreachable for a while
  's3-errors', // S3 answers a share of requests 500/503
  's3-stall', // S3 holds a share of requests for seconds
  'cancel', // a running job cancelled by its client
  'all-workers-down', // every worker process SIGKILLed, none for --outage-seconds, then all started again
  'ec2-throttle', // EC2 answers a share of requests 503 RequestLimitExceeded (the emulator's admin API)
  'ec2-500', // EC2 answers a share of requests 500 InternalError
  'ec2-drop', // EC2 commits a share of requests and drops the answer (connection reset)
  'ec2-consistency', // a new host or instance id unknown to EC2's other calls for a few seconds
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface Fault {
  atMs: number;
  kind: FaultKind;
  /** Which worker or host, by index. */
  target: number;
}

/**
 * One fault every `everyMs` on average (jittered), kinds in turn from a shuffled deck so every kind comes
 * up in a short run. The first `FAULT_KINDS.length` faults cover every kind once, and always fit in the
 * first 80 % of the run: where `everyMs` would not leave room for them, the first deck comes closer together
 * (a two-minute CI run injects every kind).
 */
export function faultSchedule(seed: number, durationMs: number, everyMs: number, targets: number): Fault[] {
  const random = seeded(seed);
  const faults: Fault[] = [];
  let deck: FaultKind[] = [];
  // Jitter averages 1x: n faults take about n * spacing; 1.5x is the most one can take.
  const firstEvery = Math.min(everyMs, (durationMs * 0.8) / (FAULT_KINDS.length * 1.5));
  for (let at = firstEvery / 2; at < durationMs;) {
    if (deck.length === 0) deck = shuffled([...FAULT_KINDS], random);
    faults.push({ atMs: Math.round(at), kind: deck.pop()!, target: Math.floor(random() * targets) });
    at += (faults.length < FAULT_KINDS.length ? firstEvery : everyMs) * (0.5 + random());
  }
  return faults;
}

function shuffled<T>(xs: T[], random: () => number): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}
