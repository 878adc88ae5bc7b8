/**
 * Messages, queries and search attributes of Marina's workflows: the contract
 * between workflows, the client, the CLI and the Web UI. No Node APIs here.
 */
import { defineSignal, defineQuery, defineUpdate } from '@temporalio/workflow';
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import type { CordonReason, HostSpec, Lease, PoolState, StandbySpec } from '../src/domain/pool';
import type { PoolView } from '../src/policy/pool-view';
import type { PackedPoolState } from '../src/policy/pool-snapshot';
import type { FleetHostPhase } from '../src/policy/fleet';
import type { BillingMode } from '../src/ec2mac/model';
import type { JobSpec, Volume } from '../src/domain/job';
import type { SecurityPolicy } from '../src/domain/security';
import type { PlacementOptions } from '../src/policy/placement';
import type { CapacitySchedule } from '../src/policy/schedule';

// Search attributes: what an operator filters on in the Web UI (`MarinaPool="ci" AND MarinaJobState="running"`).
export const SA_POOL = defineSearchAttributeKey('MarinaPool', SearchAttributeType.KEYWORD);
export const SA_HOST = defineSearchAttributeKey('MarinaHost', SearchAttributeType.KEYWORD);
export const SA_IMAGE = defineSearchAttributeKey('MarinaImage', SearchAttributeType.KEYWORD);
export const SA_JOB_STATE = defineSearchAttributeKey('MarinaJobState', SearchAttributeType.KEYWORD);
export const SA_CLIENT = defineSearchAttributeKey('MarinaClient', SearchAttributeType.KEYWORD);
/** A host workflow's phase: allocating, waiting-available, launching, booting, ready, retiring, releasing, released, failed. */
export const SA_HOST_STATE = defineSearchAttributeKey('MarinaHostState', SearchAttributeType.KEYWORD);

/** Registered by `marina dev` and docker-compose; keep in sync with the keys above. */
export const SEARCH_ATTRIBUTES: Record<string, 'Keyword'> = {
  MarinaPool: 'Keyword',
  MarinaHost: 'Keyword',
  MarinaImage: 'Keyword',
  MarinaJobState: 'Keyword',
  MarinaClient: 'Keyword',
  MarinaHostState: 'Keyword',
};

/** Every state a job passes through or ends in (`MarinaJobState`); the CLI checks `--state` against it. */
export const JOB_STATES = [
  'validating',
  'queued',
  'fetching',
  'booting',
  'running',
  'snapshotting',
  'cleaning',
  'succeeded',
  'failed',
  'timed_out',
  'cancelled',
  'error',
] as const;
export type JobState = (typeof JOB_STATES)[number];
/** The states a job ends in. */
export const FINAL_JOB_STATES: ReadonlySet<JobState> = new Set([
  'succeeded',
  'failed',
  'timed_out',
  'cancelled',
  'error',
]);

/**
 * Failure types of a job workflow whose script failed or timed out; the failure's details hold its
 * JobResult. Non-retryable: retrying would run the script again.
 */
export const JOB_FAILED = 'JobFailed';
export const JOB_TIMED_OUT = 'JobTimedOut';

export type Stage = 'resolve' | 'queue' | 'fetch' | 'boot' | 'run' | 'snapshot' | 'cleanup';

export interface JobResult {
  jobId: string;
  state: 'succeeded' | 'failed' | 'timed_out';
  exitCode: number;
  host: string;
  /** Milliseconds spent in each stage (workflow time). */
  stages: Partial<Record<Stage, number>>;
  log: { bucket: string; key: string };
  snapshot?: { image: string; digest: string };
  /** The job took this standby VM, already booted: no fetch, no boot. */
  standbyVm?: string;
}

export interface JobStatus {
  spec: JobSpec;
  state: JobState;
  host?: string;
  lease?: Lease;
  stages: Partial<Record<Stage, number>>;
  logPrefix: string;
  /** The script's exit code, once it ended. */
  exitCode?: number;
  error?: string;
  /** Hosts lost under this job, each with why: the job ran again on another. */
  hostsLost?: string[];
}

export interface LeaseRequestMsg {
  jobWorkflowId: string;
  resources: Record<string, number>;
  labels: Record<string, string>;
  client?: string;
  /** The host cache name of the job's image (cache affinity). */
  image?: string;
  /** The image reference and volumes, for the pool's security policy. */
  imageRef?: string;
  volumes?: Volume[];
  /** For the security policy too: the tag the job's snapshot would write, and whether the job gets secrets. */
  snapshot?: string;
  secrets?: boolean;
  priority?: number;
  /** A standby workflow's request: the VM it will boot under the lease. */
  vm?: string;
  /** Workflow time (ms) the job first asked: kept when it asks again, so a restarted pool keeps the order. */
  requestedAt?: number;
}

export interface LeaseRefusal {
  reason: string;
}

// Job -> pool
export const requestLeaseSignal = defineSignal<[LeaseRequestMsg]>('requestLease');
/** `cachedImage`: the host now holds this image (its cache name), so later jobs prefer it. */
export const releaseLeaseSignal = defineSignal<[{ jobWorkflowId: string; cachedImage?: string }]>('releaseLease');
/**
 * What a pool tells a job, a standby or a host workflow (`to`: its workflow id), through its
 * outbox (activities/messages.ts): one signal each, confirmed, retried with a cap.
 */
export type PoolMessage =
  | { kind: 'granted'; to: string; lease: Lease }
  | { kind: 'refused'; to: string; reason: string }
  | { kind: 'revoked'; to: string; leaseId: string; reason: string }
  /** To a standby workflow: a job took its VM; or the pool wants it gone. */
  | { kind: 'claimed'; to: string; by: string }
  | { kind: 'stop'; to: string }
  /** To an EC2 host workflow: the fleet policy's command, or retire. */
  | { kind: 'host-command'; to: string; action: 'launch' | 'park' | 'replace-root'; reason: string }
  | { kind: 'retire-host'; to: string; reason: string }
  /** To a static host workflow. */
  | { kind: 'reap-vms'; to: string; vms: string[]; reason: string }
  | { kind: 'stop-watch'; to: string; reason: string }
  /** To any host workflow: a new pool run asks for its report. */
  | { kind: 'resend-report'; to: string };

/** How the delivery of one message ended: delivered, its workflow gone (closed or never existed), or an error. */
export type DeliveryOutcome = 'ok' | 'gone' | { error: string };

// Pool -> job
export const leaseGrantedSignal = defineSignal<[Lease]>('leaseGranted');
export const leaseRefusedSignal = defineSignal<[LeaseRefusal]>('leaseRefused');
/** The host under a lease is gone (failed, retired by AWS): the job runs again elsewhere. */
export const leaseRevokedSignal = defineSignal<[{ leaseId: string; reason: string }]>('leaseRevoked');
// Standby workflow <-> pool
/** A standby VM is booted and waits for a job. */
export const standbyReadySignal =
  defineSignal<[{ workflowId: string; vm: string; ip: string; image: string }]>('standbyReady');
/** A job took the standby's VM (and its lease): the standby boots the next one. */
export const standbyClaimedSignal = defineSignal<[{ by: string }]>('standbyClaimed');
/** The pool keeps fewer standbys now: destroy the VM and give the slot back. */
export const standbyStopSignal = defineSignal('standbyStop');

// Pre-pull workflow -> pool
/** A pre-pull ended: the cache name it produced, or why it failed. */
export const prePullDoneSignal =
  defineSignal<[{ host: string; image: string; cacheName?: string; error?: string }]>('prePullDone');

// Worker / operator -> pool
/** Before versioned settings, every worker sent its config's settings; a versioned pool ignores it. */
export const syncHostsSignal = defineSignal<[PoolSettings]>('syncHosts');

/** Which settings a pool runs: a version that only `marina pool apply` (or a first start) sets, and by whom. */
export interface PoolSettingsVersion {
  version: number;
  /** Who set it: `user@host` for `marina pool apply`, `worker <identity>` for a first start. */
  by: string;
  at: string;
  /** The config file it came from, as its writer named it. */
  source?: string;
}

export interface ApplySettingsRequest {
  settings: PoolSettings;
  by: string;
  source?: string;
  /** Refuse unless the pool still runs this version: the one the shown difference was made against. */
  basedOn?: number;
}

/** A pool's settings and their version (null: set by a worker from before settings were versioned). */
export interface PoolSettingsView {
  settings: PoolSettings;
  version: PoolSettingsVersion | null;
}

export const applySettingsUpdate = defineUpdate<PoolSettingsVersion, [ApplySettingsRequest]>('applySettings');
export const poolSettingsQuery = defineQuery<PoolSettingsView>('settings');

/** What a planner or operator asks of a pool (`marina pool ...`). Validated: a bad request fails with the fix. */
export type PoolControl =
  | { action: 'pause' }
  | { action: 'resume' }
  | { action: 'cordon' | 'uncordon'; host: string }
  /** Take no new work on the host; answers once its running jobs have finished. */
  | { action: 'drain'; host: string }
  /** AWS host: drain, then terminate and release it (when AWS allows). */
  | { action: 'retire'; host: string }
  /** AWS pools: override the configured capacity until changed again (absent fields keep their value). */
  | { action: 'capacity'; minHosts?: number; maxHosts?: number; headroomSlots?: number }
  /** AWS pools: replace the configured capacity schedules (null: back to the config's). */
  | { action: 'schedules'; schedules: CapacitySchedule[] | null };

export interface PoolControlResult {
  message: string;
}

export const controlPoolUpdate = defineUpdate<PoolControlResult, [PoolControl]>('controlPool');

export const jobStatusQuery = defineQuery<JobStatus>('status');

/** The pool's state, bounded: the first leases and queued requests, with their totals. */
export const poolStateQuery = defineQuery<PoolView>('state');

export interface PoolSettings {
  hosts: HostSpec[];
  healthCheckSeconds: number;
  leaseCheckSeconds: number;
  /** Continue as new after this many events; absent: when the server suggests. */
  historyEventsPerRun?: number;
  /** Requests queued at most; past it a request is refused, naming the limit (back-pressure). */
  queueLimit?: number;
  placement?: PlacementOptions;
  security?: SecurityPolicy;
  /** VMs kept booted ahead of demand. */
  standby?: StandbySpec[];
  /** Images pulled onto new and idle hosts before jobs ask (src/policy/prepull.ts). */
  prePull?: string[];
  /** AWS pools: the pool starts host workflows when queued demand exceeds free and starting slots. */
  aws?: AwsPoolSettings;
}

export interface AwsPoolSettings {
  maxHosts: number;
  /** Never fewer hosts (serving, parked or scrubbing) than this. */
  minHosts: number;
  /** Spare slots kept serving above the forecast. */
  headroomSlots: number;
  /** What each new host offers (resources, labels). */
  template: HostSpec;
  timeScale: number;
  pollSeconds: number;
  /** How long an idle host waits for the next job before the fleet policy may park or release it. */
  keepWarmSeconds: number;
  /** Park idle hosts by terminating their instance (AWS scrubs them; billing pauses under most readings). */
  park: boolean;
  /** How AWS's bill is read (src/ec2mac/model.ts): decides whether parking pays and when a host is paid up. */
  billing: BillingMode;
  /** Clean an instance after this many jobs (0: never). */
  refreshAfterJobs: number;
  /** Clean a host wanted soon by root-volume replacement instead of a scrub. */
  rootVolumeReplacement: boolean;
  /** Capacity by cron period; the last matching entry wins. */
  schedules?: CapacitySchedule[];
}

// Host -> pool
/** A host workflow told to drain: the pool places no new work on it; running work finishes. */
export const hostDrainSignal = defineSignal<[{ host: string; drain: boolean; reason?: CordonReason }]>('hostDrain');
/** A host workflow's phase as the fleet policy sees it (every phase but `ready`, which hostReady announces). */
export const hostPhaseSignal =
  defineSignal<
    [{ workflowId: string; host?: string; phase: FleetHostPhase; ageSeconds: number; scrubbingSeconds: number }]
  >('hostPhase');
export const hostReadySignal = defineSignal<[HostSpec]>('hostReady');
export const hostGoneSignal = defineSignal<[{ workflowId: string; host?: string; reason: string }]>('hostGone');

// Static (on-prem) host workflow <-> pool. Each configured Mac has a workflow `host/<pool>/<name>`
// (workflows/static-host.ts) that watches it and reports to the pool only when something changed.

/** What a host workflow saw of its host. */
export interface HostReport {
  /** The host's name in the pool. */
  host: string;
  workflowId: string;
  healthy: boolean;
  /** Consecutive failed checks; unhealthy from UNHEALTHY_AFTER_FAILURES (src/policy/placement.ts) on. */
  failures: number;
  error?: string;
  /** Image-cache VMs (`marina-img-…`) on the host: cache affinity. */
  images: string[];
  /** Job and standby VMs (`marina-…`, not images) on the host. */
  vms: string[];
  /** Grows with each report of this host: the pool ignores an older one arriving late. */
  seq: number;
}
/** Static host -> pool: its report, sent only when health, images or VMs changed (and on `resendReport`). */
export const hostReportSignal = defineSignal<[HostReport]>('hostReport');
/** Pool -> static host: destroy these VMs (standby VMs no lease holds); the pool re-sends while a report lists them. */
export const reapVmsSignal = defineSignal<[{ vms: string[]; reason: string }]>('reapVms');
/** Pool -> static host: the host left the config; stop watching it and end. */
export const stopWatchSignal = defineSignal<[{ reason: string }]>('stopWatch');
/** Pool -> host (static or EC2): send your current report again (a new pool run has not heard it). */
export const resendReportSignal = defineSignal('resendReport');

export interface StaticHostInput {
  pool: string;
  spec: HostSpec;
  healthCheckSeconds: number;
  /** The last report sent, carried across continue-as-new. */
  last?: HostReport;
  /** `last` was not yet confirmed by the pool: the new run sends it again. */
  pending?: boolean;
  /** Checks so far, carried across continue-as-new (details only). */
  checks?: number;
  /** How long one watch activity runs before the workflow continues as new; default 6 h. For tests and benchmarks. */
  watchMaxMs?: number;
  /** Bound on one check (connect, `tart --version`, `tart list`); default 15 s. */
  checkTimeoutMs?: number;
}

/** What a static host workflow knows of its host (`hostReportQuery`). */
export interface StaticHostView {
  /** The host as its watch last returned it; `seq` is that of the last report due. */
  report?: HostReport;
  /** The pool confirmed it holds `report` (its signal was accepted); false while a send is retried. */
  delivered: boolean;
  /** Why the last send failed (the pool is not running), while `delivered` is false. */
  deliveryError?: string;
  /** Checks so far, as of the watch's latest return (the live count is in the watch activity's heartbeat). */
  checks: number;
  /** What made the last report due, e.g. `vms -marina-42`, and when (workflow time, ISO). */
  lastChange?: { why: string; at: string };
  /** The latest reaps of this host's VMs, newest last. */
  reaped: Array<{ vm: string; why: string; at: string; error?: string }>;
}
export const hostReportQuery = defineQuery<StaticHostView>('lastHostReport');

/** What a lease taker (job, standby, probe) holds or waits for: how a restarted pool learns its leases and queue. */
export interface LeaseHolding {
  pool: string;
  lease?: Lease;
  /** Waiting for a slot: the request as sent. */
  request?: LeaseRequestMsg;
  /** A standby workflow's booted VM, waiting for a job (its cache name: the image a job must want). */
  standby?: { vm: string; ip: string; image: string };
}
export const leaseHoldingQuery = defineQuery<LeaseHolding>('leaseHolding');

export interface PoolInput {
  name: string;
  settings: PoolSettings;
  /** Carried across continue-as-new, whole (earlier runs of this release). */
  state?: PoolState;
  /** Carried across continue-as-new: the state but its queue, leases and outbox, which follow as more arguments. */
  packed?: PackedPoolState;
  /** Absent: started by a worker from before settings were versioned. */
  settingsVersion?: PoolSettingsVersion;
}

export const poolWorkflowId = (pool: string): string => `pool/${pool}`;

/**
 * What each query, signal and update is for, as the Web UI and `temporal workflow metadata` show it.
 * SDK 1.24's defineQuery/defineSignal/defineUpdate take no description (only typeInfo); setHandler does,
 * so workflows register handlers through workflows/handlers.ts, which looks them up here by name.
 */
export const HANDLER_DESCRIPTIONS: Record<string, string> = {
  // job
  status: "The job's spec, state, host, lease, stage times (ms), exit code once ended, and hosts lost under it.",
  leaseHolding:
    'The lease this job, standby or probe holds, or the request it waits on: how a restarted pool rebuilds.',
  leaseGranted: 'From the pool: a slot on a host is yours (the lease).',
  leaseRefused: 'From the pool: this request can never be placed (the reason says why).',
  leaseRevoked: 'From the pool: the host under this lease is gone; run again elsewhere.',
  // pool
  state: "The pool's state, bounded: hosts, first leases and queued requests with totals, fleet, latest decisions.",
  controlPool:
    'Planner and operator controls (pause, resume, cordon, uncordon, drain, retire, capacity, schedules): validated, answered at once.',
  requestLease: 'From a job, standby or probe: place me (resources, labels, image); repeated requests are one.',
  releaseLease: 'From a lease holder: the slot is free again (and the host now caches this image).',
  hostReport: 'From a static host workflow: its health, images and VMs, when they changed.',
  hostReady: 'From an EC2 host workflow: the host is up and takes work.',
  hostPhase: 'From an EC2 host workflow: its phase, for the fleet policy.',
  hostGone: 'From a host workflow: the host left (released, failed, vanished); its leases are revoked.',
  hostDrain: 'From a host workflow: take no new work on the host (or again, with drain false).',
  standbyReady: 'From a standby workflow: its VM is booted and waits for a job.',
  prePullDone: 'From a pre-pull workflow: the image is (or failed to be) in the host cache.',
  syncHosts:
    "Workers before versioned settings: the pool's settings from the worker's config. Ignored by a pool whose settings have a version.",
  applySettings:
    "`marina pool apply`: replace the pool's settings (hosts, checks, placement, security, standby, AWS capacity); validated, refused if the pool's version moved since `basedOn`. Answers the new version.",
  settings: "The pool's settings, with their version and who set them.",
  // standby
  standbyClaimed: "From the pool: a job took this standby VM; it is the job's now.",
  standbyStop: 'From the pool: stop this standby (destroy the VM, return the slot).',
  // static host
  lastHostReport: 'What this host workflow last saw of its host, whether the pool has it, and the latest reaps.',
  reapVms: 'From the pool: destroy these VMs on the host (standby VMs no lease holds).',
  stopWatch: 'From the pool: the host left the config; stop watching it and end.',
  resendReport: 'From a new pool run: send your current report again.',
  // EC2 host
  hostState: "This EC2 host's phase, instance, age, jobs run and when AWS allows its release.",
  retireHost: 'Retire: take no work, terminate the instance, release the host as soon as AWS allows.',
  drainHost: 'Take no new work (drain: true) or take work again (false); running work finishes.',
  hostCommand: "From the pool's fleet policy: park, launch or clean (replace the root volume of) this idle host.",
  // probe
  finishProbe: 'End this lease probe and release its slot.',
};
