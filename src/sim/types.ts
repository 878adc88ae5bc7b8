/** The simulator's vocabulary: hosts, what a policy may do, and what a run reports. */
import type { BillingMode, MacTimings } from '../ec2mac/model';
import type { MacHost, MacState } from '../ec2mac/machine';
import type { FleetPhase } from '../domain/pool';
import type { Uniform } from '../ec2mac/random';

/**
 * How jobs sit on hosts.
 * - `nested`: Marina's: a long-lived Mac instance runs up to 2 macOS VMs, one job each.
 * - `instance-per-job`: Aquarium Fish's: each job gets its own Mac instance, and its end
 *   terminates the instance, so AWS scrubs the host after every job.
 */
export type SlotModel = 'nested' | 'instance-per-job';

/**
 * Where a host is, as the fleet policy sees it (src/ec2mac/lifecycle.ts maps the EC2 Mac
 * machine's states onto these words, which the pool's records also use).
 */
export type HostPhase = FleetPhase;

export interface SimHost {
  readonly id: number;
  readonly zone: string;
  readonly allocatedAt: number;
  phase: HostPhase;
  /** The EC2 Mac machine (src/ec2mac/machine.ts): what AWS says of the host. */
  readonly mac: MacHost;
  /** VM slots while `ready` (nested), or 1 (instance-per-job). */
  readonly slots: number;
  busy: number;
  /** Since when it has had no job (valid when busy is 0). */
  idleSince: number;
  /** When the current phase started. */
  phaseSince: number;
  /** Seconds spent scrubbing, up to the start of the current phase. */
  pendingSeconds: number;
  jobsServed: number;
  /** Jobs since its instance last started clean (launch or root-volume replacement). */
  jobsSinceClean: number;
  /** Released by the policy: AWS stops its instance first, and the host goes as soon as ReleaseHosts allows. */
  retiring: boolean;
  /** Launch an instance as soon as the host is available (allocated for waiting jobs). */
  launchOnAvailable: boolean;
  /** Sequence number of the live machine timer; older timer events are stale. */
  timer: number;
  /** instance-per-job: the job this host's instance is booting for. */
  boundJob: number;
  /** Index in the engine's list of hosts in its phase. */
  phaseIndex: number;
  /** Index in the engine's live-host list. */
  index: number;
}

export interface ZoneCapacity {
  name: string;
  /** Mac hosts this zone can still give (InsufficientHostCapacity beyond). */
  hosts: number;
}

export interface SimConfig {
  timings: MacTimings;
  billing: BillingMode;
  maxHosts: number;
  zones: ZoneCapacity[];
  hourlyPriceUsd: number;
  seed: number;
}

/** What a policy may read and do. Every action obeys EC2's rules or is refused. */
export interface Fleet {
  readonly now: number;
  readonly config: SimConfig;
  readonly slotModel: SlotModel;
  /** Hosts not released, in allocation order. Do not mutate. */
  readonly hosts: readonly SimHost[];
  readonly queued: number;
  /** Jobs whose slot is taken (booting VM/instance or running). */
  readonly busySlots: number;
  /** Hosts per phase, kept current. */
  count(phase: HostPhase): number;
  /** The hosts in a phase, kept current (copy before acting on them: an action moves hosts between lists). */
  inPhase(phase: HostPhase): readonly SimHost[];
  /** AllocateHosts, zones in order. `launch`: start the instance as soon as it is available. */
  allocate(n: number, launch: boolean): number;
  /** RunInstances on an idle host. */
  launch(host: SimHost): boolean;
  /** Terminate an idle host's instance (or launch an empty one and terminate it): AWS scrubs it, unbilled. */
  park(host: SimHost): boolean;
  /** CreateReplaceRootVolumeTask: the instance restarts clean without a scrub. */
  replaceRoot(host: SimHost): boolean;
  /**
   * Retire: terminate its instance if it has one, then ReleaseHosts as soon as AWS allows (as the host
   * workflow does). Refused (and counted as a violation) before 24 h, or with a job on it.
   */
  release(host: SimHost): boolean;
  readonly random: Uniform;
}

export interface FleetPolicy {
  readonly name: string;
  readonly slotModel: SlotModel;
  /** How often onTick runs, in virtual seconds. */
  readonly tickSeconds: number;
  onTick(fleet: Fleet): void;
  /** A job found no free slot and was queued. */
  onQueued?(fleet: Fleet): void;
  /** Chooses among hosts that can take a job now (never empty). */
  pickHost(candidates: readonly SimHost[], fleet: Fleet): SimHost;
}

export interface MonthFigures {
  month: string;
  jobs: number;
  instanceHours: number;
  /** Billed host-hours (per `billing`), booked to the month they were spent in. */
  hostHours: number;
  /** Host-hours with scrubbing counted (as if `pending` were billed). */
  hostHoursWithScrub: number;
  queueHours: number;
  waitedJobs: number;
  meanWaitMinutes: number;
  costUsd: number;
}

export interface SimSeries {
  /** Seconds between samples. */
  step: number;
  t0: number;
  hostsLive: number[];
  hostsBilled: number[];
  busySlots: number[];
  queued: number[];
}

export interface SimResult {
  policy: string;
  slotModel: SlotModel;
  jobs: number;
  startedOnce: boolean;
  finishedOnce: boolean;
  /** Billed host-hours, default billing mode. */
  hostHours: number;
  hostHoursWithScrub: number;
  /** Host-hours spent in each EC2 Mac state (scrubbing = AWS's `pending`). */
  phaseHours: Record<MacState, number>;
  scrubHours: number;
  instanceHours: number;
  costUsd: number;
  peakHosts: number;
  hostsAllocated: number;
  hostsStillAllocated: number;
  scrubs: number;
  /** Scrubs Marina's policy asked for (parks), per 365 days of trace. */
  parksPerYear: number;
  /** ReleaseHosts refused as Occupied (an instance stopping, or just terminated). */
  occupiedRefusals: number;
  earlyReleaseAttempts: number;
  releasedYoungerThan24h: number;
  allocationFailures: number;
  /** Submit → script start, seconds: the VM boot (nested) or the instance launch (one per job) included. */
  wait: { p50: number; p95: number; p99: number; max: number; mean: number };
  /** The same without the VM boot (nested policies boot a VM for every job; 0 otherwise): waiting for a slot. */
  waitForSlot: { p50: number; p95: number };
  months: MonthFigures[];
  series: SimSeries;
  /** Longest wait any job had, seconds: what the lower bound at that wait allows. */
  maxWaitSeconds: number;
  wallMs: number;
}
