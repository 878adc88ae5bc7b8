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
 * up in a short run; the first `FAULT_KINDS.length` faults cover every kind once.
 */
export function faultSchedule(seed: number, durationMs: number, everyMs: number, targets: number): Fault[] {
  const random = seeded(seed);
  const faults: Fault[] = [];
  let deck: FaultKind[] = [];
  for (let at = everyMs / 2; at < durationMs; at += everyMs * (0.5 + random())) {
    if (deck.length === 0) deck = shuffled([...FAULT_KINDS], random);
    faults.push({ atMs: Math.round(at), kind: deck.pop()!, target: Math.floor(random() * targets) });
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
