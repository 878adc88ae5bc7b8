/** Pool, host and lease state: plain data shared by the pool workflow, the policy and the client. */
import type { PrePullRecord } from '../policy/prepull';
import type { Volume } from './job';
import type { CapacitySchedule } from '../policy/schedule';

export type Resources = Record<string, number>;
export type Labels = Record<string, string>;

/** Apple's macOS licence allows two macOS VMs per Mac. */
export const DEFAULT_VM_SLOTS_PER_HOST = 2;

/**
 * A device or setting handed to the VM of a job that takes a given resource (Cirrus's resource
 * modifiers): a job asking for at most `match` of each listed resource gets `run` appended to
 * its `tart run`, one job per modifier at a time.
 */
export interface ResourceModifier {
  match: Resources;
  /** `tart run` options, e.g. `--disk=/dev/disk4` or `--net-bridged=en1`. */
  run: string[];
}

export interface HostSpec {
  name: string;
  /** What the host offers, e.g. `{ vm: 2, cpu: 8, memory: 16384 }`. */
  resources: Resources;
  labels: Labels;
  modifiers?: ResourceModifier[];
  /** A host Marina allocated (EC2): the host workflow that owns it, and where to reach it. */
  dynamic?: {
    workflowId: string;
    address: string;
    port: number;
    /** known_hosts line pinned on first contact. */
    knownHostsLine: string;
    /** Its age on EC2's clock when it became ready, and the workflow time (ms) then. */
    ageSecondsAtReady: number;
    readyAtMs: number;
  };
}

/** `assessment`: AWS is checking the hardware (DescribeHosts says under-assessment). */
export type CordonReason = 'operator' | 'health' | 'drain' | 'assessment';

export interface HostState extends HostSpec {
  /** Why no new work is placed here; undefined when schedulable. */
  cordoned?: CordonReason;
  /** Images the host holds in its cache (`marina-img-<digest>` names), from health checks and finished jobs. */
  images?: string[];
  consecutiveHealthFailures: number;
  lastHealthError?: string;
}

export interface LeaseRequest {
  /** Workflow id of the job asking; leases are keyed by it. */
  jobWorkflowId: string;
  resources: Resources;
  labels: Labels;
  /** The CI system that submitted the job: the unit of fair share. */
  client?: string;
  /** The host cache name of the job's image: hosts holding it are preferred. */
  image?: string;
  /** Higher runs first among one client's jobs. */
  priority?: number;
  /** Volumes as the security policy allows them. */
  volumes?: Volume[];
  /** Workflow time in ms when the pool received the request. */
  requestedAt: number;
  /** A standby workflow's request: the VM it will boot under the lease. */
  vm?: string;
}

/** What a pool keeps booted ahead of demand: `count` VMs of `image` (a standby workflow each). */
export interface StandbySpec {
  image: string;
  count: number;
  resources: Resources;
  labels: Labels;
}

/** A booted standby VM waiting for a job, by its standby workflow's id (which holds its lease). */
export interface StandbyVm {
  host: string;
  vm: string;
  ip: string;
  /** The image's host cache name: a job for the same image digest may take it. */
  image: string;
  readySince: number;
}

export interface Lease {
  leaseId: string;
  jobWorkflowId: string;
  host: string;
  resources: Resources;
  grantedAt: number;
  client?: string;
  /** Host directories to share into the VM, as the pool's security policy allows them (read-only forced where it says). */
  volumes?: Volume[];
  /** The VM the work runs in when it is not the job's own: a standby VM (its name, and its address once booted). */
  vm?: string;
  ip?: string;
  /** The host's resource modifier this lease holds (its index), and the `tart run` options it adds. */
  modifier?: number;
  runArgs?: string[];
}

export interface PoolState {
  name: string;
  hosts: HostState[];
  leases: Lease[];
  queue: LeaseRequest[];
  /** AWS pools: every host workflow the pool started that is not gone, by workflow id. */
  fleet?: Record<string, FleetRecord>;
  /** AWS pools: since when (workflow ms) each dynamic host has had no lease. */
  idleSince?: Record<string, number>;
  /** AWS pools: the demand memory the forecast reads (src/policy/forecast.ts), carried across continue-as-new. */
  demand?: { stamps: number[]; peaks: number[] };
  /** The latest capacity decisions with their reasons, newest last. */
  decisions?: Decision[];
  /** Paused by an operator: nothing new is placed or allocated; running jobs go on. */
  paused?: boolean;
  /** Which capacity schedule entry applied at the last look (AWS pools). */
  scheduleIndex?: number;
  /** Standby workflows the pool started (ids), and the standby VMs booted and waiting, by workflow id. */
  standbyWorkflows?: string[];
  standbys?: Record<string, StandbyVm>;
  /** Capacity schedules a planner set, in place of the configured ones (AWS pools). */
  schedules?: CapacitySchedule[];
  /** Pre-pulls by `host|image` (src/policy/prepull.ts): running, or when each last ended. */
  prePulls?: Record<string, PrePullRecord>;
  /** Workflow time (ms) of the next health round, carried across continue-as-new. */
  nextHealthAt?: number;
  /** Capacity a planner set, over the configured one (AWS pools). */
  capacity?: { minHosts?: number; maxHosts?: number; headroomSlots?: number };
  /** Drains an operator asked for and not yet done, by host: since when (workflow ms). */
  drains?: Record<string, number>;
  /** Retires an operator asked for: carried out once the host has no lease, sent again until it is gone. */
  retiring?: Record<string, { since: number; workflowId: string; sentAt?: number }>;
  /** The workflow watching each configured (on-prem) host, the last report applied, and the spec it was started with. */
  watchers?: Record<string, { workflowId: string; lastSeq: number; spec: string }>;
  /** Standby VMs a host reported that no lease held, by host: since when (workflow ms); reaped after a grace. */
  reapSuspects?: Record<string, Record<string, number>>;
  /** A new run that has not yet learnt from the lease takers which leases they hold: nothing is placed. */
  recovering?: boolean;
  /** Messages not yet delivered (carried across continue-as-new), and the latest ones given up on. */
  outbox?: OutboxEntry[];
  parked?: ParkedMessage[];
}

/** A message waiting in the pool's outbox. */
export interface OutboxEntry {
  message: import('../../workflows/definitions').PoolMessage;
  attempts: number;
  /** Workflow ms before which it is not tried again (backoff after a failure). */
  notBefore?: number;
  lastError?: string;
}

/** A message the outbox gave up on, shown in the pool's query and details. */
export interface ParkedMessage {
  at: string;
  to: string;
  kind: string;
  attempts: number;
  error: string;
}

/** Where a host is, as the fleet policy sees it (src/policy/fleet.ts). */
export type FleetPhase = 'allocating' | 'idle' | 'launching' | 'ready' | 'pending' | 'replacing' | 'released';

/** What a pool knows of one of its EC2 hosts. Times are the pool's EC2-clock seconds. */
export interface FleetRecord {
  workflowId: string;
  /** The EC2 host id, once allocated. */
  host?: string;
  phase: FleetPhase;
  allocatedAt: number;
  phaseSince: number;
  scrubbingSeconds: number;
  /** Leases granted since its instance last started clean. */
  jobsSinceClean: number;
  /** Workflow time (ms) the pool started the host workflow. */
  startedAtMs?: number;
  /** A command sent to the host workflow and not yet reported done; when (workflow ms) it was last sent, and why. */
  commanded?: 'launch' | 'park' | 'replace-root' | 'release';
  commandedAt?: number;
  commandReason?: string;
}

export interface Decision {
  /** ISO time (workflow clock). */
  at: string;
  what: string;
}

export function usedResources(leases: readonly Lease[], host: string): Resources {
  const used: Resources = {};
  for (const l of leases) {
    if (l.host !== host) continue;
    for (const [k, v] of Object.entries(l.resources)) used[k] = (used[k] ?? 0) + v;
  }
  return used;
}

export function freeResources(host: HostSpec, leases: readonly Lease[]): Resources {
  const used = usedResources(leases, host.name);
  const free: Resources = {};
  for (const [k, v] of Object.entries(host.resources)) free[k] = v - (used[k] ?? 0);
  return free;
}

// Fractional resources accumulate rounding error; a tiny epsilon keeps 0.1 * 10 fitting into 1.
/** Resource amounts are compared with this slack (fractional cpu shares add up inexactly). */
export const RESOURCE_EPSILON = 1e-9;
const EPSILON = RESOURCE_EPSILON;

export function fits(want: Resources, free: Resources): boolean {
  return Object.entries(want).every(([k, v]) => v <= (free[k] ?? 0) + EPSILON);
}

export function labelsMatch(want: Labels, have: Labels): boolean {
  return Object.entries(want).every(([k, v]) => have[k] === v);
}
