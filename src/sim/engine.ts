/**
 * Discrete-event simulation of a pool of EC2 Mac hosts in virtual time. The engine owns
 * what AWS and the hosts do (src/ec2mac/model.ts: timings, the 24 h rule, scrubbing,
 * billing); a FleetPolicy owns every decision (allocate, launch, park, release, where a
 * job goes). Time is whole seconds since the epoch, as in the trace.
 */
import { PriorityQueue } from '@datastructures-js/priority-queue';
import {
  MIN_ALLOCATION_SECONDS as MIN_AGE,
  VM_SLOTS_PER_HOST,
  BILLING_MODES,
  billedSeconds,
  scrubDuration,
  scrubPausesBilling,
  type BillingMode,
  type MacTimings,
} from '../ec2mac/model';
import type { TraceJob } from './trace';
import { seeded, type Uniform } from '../ec2mac/random';

/**
 * How jobs sit on hosts.
 * - `nested`: Marina's: a long-lived Mac instance runs up to 2 macOS VMs, one job each.
 * - `instance-per-job`: Aquarium Fish's: each job gets its own Mac instance, and its end
 *   terminates the instance, so AWS scrubs the host after every job.
 */
export type SlotModel = 'nested' | 'instance-per-job';

/**
 * Where a host is. `idle`: allocated and `available`, no instance. `launching`: an instance
 * is booting (for a job, to serve, or an empty one about to be terminated to park the
 * host). `ready`: the instance serves jobs. `pending`: AWS is scrubbing it (unbilled).
 * `replacing`: root-volume replacement (billed, no scrub).
 */
export type HostPhase = 'allocating' | 'idle' | 'launching' | 'ready' | 'pending' | 'replacing' | 'released';

export interface SimHost {
  readonly id: number;
  readonly zone: string;
  readonly allocatedAt: number;
  phase: HostPhase;
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
  /** A launch that only exists to be terminated at once (park a host that has no instance). */
  parkOnReady: boolean;
  /** instance-per-job: the job this host's instance is booting for. */
  boundJob: number;
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
  /** AllocateHosts, zones in order. `launch`: start the instance as soon as it is available. */
  allocate(n: number, launch: boolean): number;
  /** RunInstances on an idle host. */
  launch(host: SimHost): boolean;
  /** Terminate an idle host's instance (or launch an empty one and terminate it): AWS scrubs it, unbilled. */
  park(host: SimHost): boolean;
  /** CreateReplaceRootVolumeTask: the instance restarts clean without a scrub. */
  replaceRoot(host: SimHost): boolean;
  /** ReleaseHosts. Refused (and counted as a violation) before 24 h or with a job on it. */
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
  /** Host-hours spent in each phase (pending = scrubbing). */
  phaseHours: Record<HostPhase, number>;
  /** Billed host-hours under each reading of how scrubbing meets the 24 h minimum. */
  billedByMode: Record<BillingMode, number>;
  scrubHours: number;
  instanceHours: number;
  costUsd: number;
  peakHosts: number;
  hostsAllocated: number;
  hostsStillAllocated: number;
  scrubs: number;
  earlyReleaseAttempts: number;
  releasedYoungerThan24h: number;
  allocationFailures: number;
  wait: { p50: number; p95: number; p99: number; max: number; mean: number };
  months: MonthFigures[];
  series: SimSeries;
  /** Longest wait any job had, seconds: what the lower bound at that wait allows. */
  maxWaitSeconds: number;
  wallMs: number;
}

const enum Ev {
  Allocated,
  Ready,
  ScrubDone,
  JobEnd,
  RootReplaced,
}

interface Event {
  t: number;
  seq: number;
  kind: Ev;
  host: SimHost;
  job: number;
}

/** A policy under which no job finishes for this long, with the trace over, is stuck, not slow. */
// Module-level copies: exported bindings are getters in CJS, and these sit in hot loops.
const MIN_AGE_SECONDS = MIN_AGE;
const STARVATION_LIMIT_SECONDS = 30 * 86400;

function monthKey(t: number): string {
  return new Date(t * 1000).toISOString().slice(0, 7);
}

/** The first second of the month after the one holding t (UTC). */
function nextMonthStart(t: number): number {
  const d = new Date(t * 1000);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) / 1000;
}

class MonthBook {
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

const PHASES: readonly HostPhase[] = ['allocating', 'idle', 'launching', 'ready', 'pending', 'replacing', 'released'];
const perPhase = (): Record<HostPhase, number> =>
  Object.fromEntries(PHASES.map((p) => [p, 0])) as Record<HostPhase, number>;

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[i]!;
}

export function simulate(trace: readonly TraceJob[], policy: FleetPolicy, config: SimConfig): SimResult {
  const wall = performance.now();
  const t = config.timings;
  const slotModel = policy.slotModel;
  const random = seeded(config.seed);
  const n = trace.length;
  const starts = new Uint8Array(n);
  const ends = new Uint8Array(n);
  const waits = new Float64Array(n);
  const book = new MonthBook();
  const events = new PriorityQueue<Event>((a, b) => a.t - b.t || a.seq - b.seq);
  let seq = 0;
  const live: SimHost[] = [];
  const phaseCount = perPhase();
  const queue: number[] = [];
  let qHead = 0;
  let busySlots = 0;
  let now = n > 0 ? trace[0]!.start : 0;
  let nextId = 1;
  let peakHosts = 0;
  let scrubs = 0;
  let earlyReleaseAttempts = 0;
  let releasedYoung = 0;
  let allocationFailures = 0;
  let hostHours = 0;
  let hostHoursWithScrub = 0;
  let scrubHours = 0;
  let hostsAllocated = 0;
  const zoneUsed = new Map<string, number>();
  const pauses = scrubPausesBilling(config.billing);
  const billedByMode = Object.fromEntries(BILLING_MODES.map((m) => [m, 0])) as Record<BillingMode, number>;
  // When each host's current billed (non-pending) stretch began.
  const billedSince = new Map<number, number>();

  const schedule = (at: number, kind: Ev, host: SimHost, job = -1): void => {
    events.enqueue({ t: at, seq: seq++, kind, host, job });
  };
  const phaseHours = perPhase();
  // Free slots on ready hosts, kept current so that dispatch skips its scan when there are none.
  let freeReady = 0;
  const setPhase = (h: SimHost, p: HostPhase): void => {
    if (h.phase === 'ready') freeReady -= h.slots - h.busy;
    if (p === 'ready') freeReady += h.slots - h.busy;
    phaseHours[h.phase] += (now - h.phaseSince) / 3600;
    phaseCount[h.phase]--;
    phaseCount[p]++;
    // A pending stretch is not billed: close the billed stretch on entry, reopen on exit.
    if (p === 'pending' && h.phase !== 'pending') {
      const since = billedSince.get(h.id)!;
      book.spread(since, now, (f, hours) => (f.hostHours += hours));
      book.spread(since, now, (f, hours) => (f.hostHoursWithScrub += hours));
    } else if (h.phase === 'pending' && p !== 'pending') {
      book.spread(h.phaseSince, now, (f, hours) => {
        f.hostHoursWithScrub += hours;
        if (!pauses) f.hostHours += hours;
      });
      h.pendingSeconds += now - h.phaseSince;
      billedSince.set(h.id, now);
    }
    h.phase = p;
    h.phaseSince = now;
  };

  const launchSeconds = (): number =>
    slotModel === 'nested'
      ? t.instanceRunningSeconds + t.sshReadySeconds + t.prepareSeconds
      : t.instanceRunningSeconds + t.sshReadySeconds;

  const fleet: Fleet = {
    get now() {
      return now;
    },
    config,
    slotModel,
    hosts: live,
    get queued() {
      return queue.length - qHead;
    },
    get busySlots() {
      return busySlots;
    },
    random,
    count: (p) => phaseCount[p],
    allocate(k, launch) {
      let made = 0;
      for (let i = 0; i < k; i++) {
        if (live.length >= config.maxHosts) {
          allocationFailures++;
          break;
        }
        const zone = config.zones.find((z) => (zoneUsed.get(z.name) ?? 0) < z.hosts);
        if (!zone) {
          allocationFailures++;
          break;
        }
        zoneUsed.set(zone.name, (zoneUsed.get(zone.name) ?? 0) + 1);
        const h: SimHost = {
          id: nextId++,
          zone: zone.name,
          allocatedAt: now,
          phase: 'allocating',
          slots: slotModel === 'nested' ? VM_SLOTS_PER_HOST : 1,
          busy: 0,
          idleSince: now,
          phaseSince: now,
          pendingSeconds: 0,
          jobsServed: 0,
          jobsSinceClean: 0,
          parkOnReady: false,
          boundJob: -1,
          index: live.length,
        };
        phaseCount.allocating++;
        live.push(h);
        billedSince.set(h.id, now);
        hostsAllocated++;
        made++;
        // `launch` is remembered by scheduling the launch right after allocation.
        schedule(now + t.allocationSeconds, Ev.Allocated, h, launch ? 1 : 0);
      }
      if (live.length > peakHosts) peakHosts = live.length;
      return made;
    },
    launch(h) {
      if (h.phase !== 'idle') return false;
      setPhase(h, 'launching');
      schedule(now + launchSeconds(), Ev.Ready, h);
      return true;
    },
    park(h) {
      if (h.busy > 0) return false;
      if (h.phase === 'ready') {
        startScrub(h);
        return true;
      }
      if (h.phase === 'idle') {
        setPhase(h, 'launching');
        h.parkOnReady = true;
        schedule(now + t.emptyInstanceSeconds, Ev.Ready, h);
        return true;
      }
      return false;
    },
    replaceRoot(h) {
      if (h.phase !== 'ready' || h.busy > 0) return false;
      setPhase(h, 'replacing');
      schedule(now + t.rootVolumeReplacementSeconds, Ev.RootReplaced, h);
      return true;
    },
    release(h) {
      if (h.phase === 'released' || h.phase === 'allocating') return false;
      if (now - h.allocatedAt < MIN_AGE_SECONDS) {
        earlyReleaseAttempts++;
        return false;
      }
      if (h.busy > 0 || h.phase === 'launching' || h.phase === 'replacing') return false;
      closeHost(h);
      return true;
    },
  };

  function startScrub(h: SimHost): void {
    scrubs++;
    setPhase(h, 'pending');
    schedule(now + scrubDuration(t, random()), Ev.ScrubDone, h);
  }

  function closeHost(h: SimHost, atEnd = false): void {
    if (h.phase === 'ready') freeReady -= h.slots - h.busy;
    if (h.phase === 'pending') {
      book.spread(h.phaseSince, now, (f, hours) => {
        f.hostHoursWithScrub += hours;
        if (!pauses) f.hostHours += hours;
      });
      h.pendingSeconds += now - h.phaseSince;
    } else {
      const since = billedSince.get(h.id)!;
      book.spread(since, now, (f, hours) => (f.hostHours += hours));
      book.spread(since, now, (f, hours) => (f.hostHoursWithScrub += hours));
    }
    phaseHours[h.phase] += (now - h.phaseSince) / 3600;
    const life = now - h.allocatedAt;
    if (!atEnd && life < MIN_AGE_SECONDS) releasedYoung++;
    const billed = billedSeconds(life, h.pendingSeconds, config.billing);
    const withScrub = billedSeconds(life, h.pendingSeconds, 'scrub-billed');
    // The 24 h minimum's top-up is booked to the month the host goes.
    const m = book.at(now);
    m.hostHours += (billed - (pauses ? life - h.pendingSeconds : life)) / 3600;
    m.hostHoursWithScrub += (withScrub - life) / 3600;
    hostHours += billed / 3600;
    hostHoursWithScrub += withScrub / 3600;
    for (const mode of BILLING_MODES) billedByMode[mode] += billedSeconds(life, h.pendingSeconds, mode) / 3600;
    scrubHours += h.pendingSeconds / 3600;
    phaseCount[h.phase]--;
    h.phase = 'released';
    zoneUsed.set(h.zone, (zoneUsed.get(h.zone) ?? 0) - 1);
    billedSince.delete(h.id);
    const last = live.pop()!;
    if (last !== h) {
      live[h.index] = last;
      last.index = h.index;
    }
  }

  // Series, one sample per hour (max within the hour for queue and hosts).
  const step = 3600;
  const t0 = now;
  const series: SimSeries = { step, t0, hostsLive: [], hostsBilled: [], busySlots: [], queued: [] };
  const sample = (): void => {
    const i = Math.floor((now - t0) / step);
    while (series.hostsLive.length <= i) {
      series.hostsLive.push(0);
      series.hostsBilled.push(0);
      series.busySlots.push(0);
      series.queued.push(0);
    }
    const billed = live.length - phaseCount.pending;
    if (live.length > series.hostsLive[i]!) series.hostsLive[i] = live.length;
    if (billed > series.hostsBilled[i]!) series.hostsBilled[i] = billed;
    if (busySlots > series.busySlots[i]!) series.busySlots[i] = busySlots;
    const q = queue.length - qHead;
    if (q > series.queued[i]!) series.queued[i] = q;
  };

  const startJob = (job: number, at: number): void => {
    const before = starts[job]!;
    starts[job] = before + 1;
    if (before > 0) return;
    const j = trace[job]!;
    const wait = at - j.start;
    waits[job] = wait;
    const m = book.at(at);
    m.jobs++;
    m.instanceHours += j.duration / 3600;
    if (wait > 0) {
      m.queueHours += wait / 3600;
      m.waitedJobs++;
      m.meanWaitMinutes += wait / 60; // a sum until the end
    }
  };

  const candidates: SimHost[] = [];
  /** Hands queued jobs to hosts that can take one now. */
  const dispatch = (): void => {
    while (qHead < queue.length) {
      if (slotModel === 'nested' ? freeReady === 0 : phaseCount.idle === 0) break;
      candidates.length = 0;
      if (slotModel === 'nested') {
        for (const h of live) if (h.phase === 'ready' && h.busy < h.slots) candidates.push(h);
      } else {
        for (const h of live) if (h.phase === 'idle') candidates.push(h);
      }
      if (candidates.length === 0) return;
      const h = policy.pickHost(candidates, fleet);
      const job = queue[qHead++]!;
      busySlots++;
      if (h.phase === 'ready') freeReady--;
      h.busy++;
      h.jobsServed++;
      h.jobsSinceClean++;
      if (slotModel === 'nested') {
        const begin = now + t.vmBootSeconds;
        startJob(job, begin);
        schedule(begin + trace[job]!.duration, Ev.JobEnd, h, job);
      } else {
        h.boundJob = job;
        setPhase(h, 'launching');
        schedule(now + launchSeconds(), Ev.Ready, h);
      }
    }
    if (qHead > 4096 && qHead * 2 > queue.length) {
      queue.splice(0, qHead);
      qHead = 0;
    }
  };

  const handle = (e: Event): void => {
    const h = e.host;
    switch (e.kind) {
      case Ev.Allocated:
        setPhase(h, 'idle');
        h.idleSince = now;
        if (e.job === 1) fleet.launch(h);
        break;
      case Ev.Ready:
        if (h.parkOnReady) {
          h.parkOnReady = false;
          startScrub(h);
        } else if (slotModel === 'instance-per-job') {
          setPhase(h, 'ready');
          const job = h.boundJob;
          startJob(job, now);
          schedule(now + trace[job]!.duration, Ev.JobEnd, h, job);
        } else {
          setPhase(h, 'ready');
          h.idleSince = now;
          h.jobsSinceClean = 0;
        }
        break;
      case Ev.ScrubDone:
        if (h.phase !== 'pending') break; // released while scrubbing
        setPhase(h, 'idle');
        h.idleSince = now;
        break;
      case Ev.RootReplaced:
        setPhase(h, 'ready');
        h.idleSince = now;
        h.jobsSinceClean = 0;
        break;
      case Ev.JobEnd:
        ends[e.job] = ends[e.job]! + 1;
        busySlots--;
        h.busy--;
        if (h.phase === 'ready') freeReady++;
        if (h.busy === 0) h.idleSince = now;
        if (slotModel === 'instance-per-job') {
          // Fish terminates the job's instance: AWS scrubs the host.
          h.boundJob = -1;
          startScrub(h);
        }
        break;
    }
  };

  let nextArrival = 0;
  let nextTick = now;
  const lastEnd = trace.reduce((m, j) => Math.max(m, j.start + j.duration), 0);
  let finished = 0;
  let lastProgress = now;
  while (true) {
    const tArr = nextArrival < n ? trace[nextArrival]!.start : Infinity;
    const tEv = events.isEmpty() ? Infinity : events.front()!.t;
    const allDone = nextArrival >= n && finished === n;
    if (allDone) break;
    const tNext = Math.min(tArr, tEv, nextTick);
    if (tNext > lastProgress + STARVATION_LIMIT_SECONDS && nextArrival >= n) {
      throw new Error(
        `policy ${policy.name} left ${queue.length - qHead} job(s) queued with no job started for ${STARVATION_LIMIT_SECONDS / 86400} days: it never gives them a host`,
      );
    }
    now = tNext;
    if (tEv === tNext) {
      const e = events.dequeue()!;
      handle(e);
      if (e.kind === Ev.JobEnd) {
        finished++;
        lastProgress = now;
      }
      dispatch();
    } else if (tArr === tNext) {
      queue.push(nextArrival++);
      dispatch();
      if (qHead < queue.length) policy.onQueued?.(fleet);
    } else {
      policy.onTick(fleet);
      dispatch();
      nextTick = now + policy.tickSeconds;
    }
    sample();
  }
  now = Math.max(now, lastEnd);
  // Hosts still held when the last job ends are billed as if released now, 24 h minimum included.
  const stillAllocated = live.length;
  while (live.length > 0) closeHost(live[live.length - 1]!, true);

  const sortedWaits = Float64Array.from(waits).sort();
  let waitSum = 0;
  for (const w of sortedWaits) waitSum += w;
  const months = book.sorted();
  let instanceHours = 0;
  for (const m of months) {
    m.meanWaitMinutes = m.waitedJobs > 0 ? m.meanWaitMinutes / m.waitedJobs : 0;
    m.costUsd = m.hostHours * config.hourlyPriceUsd;
    instanceHours += m.instanceHours;
  }
  return {
    policy: policy.name,
    slotModel,
    jobs: n,
    startedOnce: starts.every((s) => s === 1),
    finishedOnce: ends.every((s) => s === 1),
    hostHours,
    hostHoursWithScrub,
    billedByMode,
    phaseHours,
    scrubHours,
    instanceHours,
    costUsd: hostHours * config.hourlyPriceUsd,
    peakHosts,
    hostsAllocated,
    hostsStillAllocated: stillAllocated,
    scrubs,
    earlyReleaseAttempts,
    releasedYoungerThan24h: releasedYoung,
    allocationFailures,
    wait: {
      p50: percentile(sortedWaits, 0.5),
      p95: percentile(sortedWaits, 0.95),
      p99: percentile(sortedWaits, 0.99),
      max: sortedWaits.length ? sortedWaits[sortedWaits.length - 1]! : 0,
      mean: n ? waitSum / n : 0,
    },
    months,
    series,
    maxWaitSeconds: sortedWaits.length ? sortedWaits[sortedWaits.length - 1]! : 0,
    wallMs: performance.now() - wall,
  };
}

export { type Event as SimEvent };
