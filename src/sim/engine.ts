/**
 * Discrete-event simulation of a pool of EC2 Mac hosts in virtual time. Every host is an
 * EC2 Mac machine (src/ec2mac/machine.ts, the one the emulator serves): the engine only
 * schedules its timers, keeps the books and runs jobs; a FleetPolicy owns every decision
 * (allocate, launch, park, release, where a job goes). Time is whole seconds since the
 * epoch, as in the trace.
 */
import {
  MIN_ALLOCATION_SECONDS as MIN_AGE,
  VM_SLOTS_PER_HOST,
  billedSeconds,
  scrubPausesBilling,
} from '../ec2mac/model';
import {
  MAC_STATES,
  allocateMac,
  hasInstance,
  macCommand,
  macTimer,
  releaseCheck,
  type MacCommand,
  type MacState,
} from '../ec2mac/machine';
import { fleetPhaseOfMac } from '../ec2mac/lifecycle';
import type { TraceJob } from './trace';
import { seeded } from '../ec2mac/random';
import { MonthBook, percentile } from './books';
import { EventHeap } from './event-heap';
import type { Fleet, FleetPolicy, SimConfig, SimHost, SimResult, SimSeries } from './types';

export type * from './types';

const enum Ev {
  /** The host's machine timer (job: the timer's sequence number). */
  Mac,
  /** Marina has prepared a freshly booted instance (job: the timer sequence it belongs to). */
  Prepared,
  JobEnd,
  /** A retiring host's Occupied window is over: ReleaseHosts again. */
  Retire,
}

interface Event {
  t: number;
  seq: number;
  kind: Ev;
  host: SimHost;
  job: number;
}

// Module-level copies: exported bindings are getters in CJS, and these sit in hot loops.
const MIN_AGE_SECONDS = MIN_AGE;
/** Jobs queued, none running, nothing started or finished for this long: the policy is stuck, not slow. */
const STARVATION_LIMIT_SECONDS = 30 * 86400;
const YEAR_SECONDS = 365 * 86400;

const perState = (): Record<MacState, number> =>
  Object.fromEntries(MAC_STATES.map((p) => [p, 0])) as Record<MacState, number>;

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
  const events = new EventHeap<Event>();
  let seq = 0;
  const live: SimHost[] = [];
  const phaseCount = { allocating: 0, idle: 0, launching: 0, ready: 0, pending: 0, replacing: 0, released: 0 };
  const macHours = perState();
  const queue: number[] = [];
  let qHead = 0;
  let busySlots = 0;
  let now = n > 0 ? trace[0]!.start : 0;
  let nextId = 1;
  let peakHosts = 0;
  let scrubs = 0;
  let parks = 0;
  let occupiedRefusals = 0;
  let earlyReleaseAttempts = 0;
  let releasedYoung = 0;
  let allocationFailures = 0;
  let hostHours = 0;
  let hostHoursWithScrub = 0;
  let scrubHours = 0;
  let hostsAllocated = 0;
  const zoneUsed = new Map<string, number>();
  const pauses = scrubPausesBilling(config.billing);
  // When each host's current billed (non-scrubbing) stretch began.
  const billedSince = new Map<number, number>();
  // Free slots on ready hosts, kept current so that dispatch skips its scan when there are none.
  let freeReady = 0;

  const schedule = (at: number, kind: Ev, host: SimHost, job = -1): void => {
    const s = seq++;
    events.push(at, s, { t: at, seq: s, kind, host, job });
  };

  // Hosts by phase: policies and one-instance-per-job dispatch look at a few phases of hundreds of hosts.
  const byPhase: Record<SimHost['phase'], SimHost[]> = {
    allocating: [],
    idle: [],
    launching: [],
    ready: [],
    pending: [],
    replacing: [],
    released: [],
  };
  const leavePhase = (h: SimHost): void => {
    const list = byPhase[h.phase];
    const last = list.pop()!;
    if (last !== h) {
      list[h.phaseIndex] = last;
      last.phaseIndex = h.phaseIndex;
    }
  };
  const enterPhase = (h: SimHost, p: SimHost['phase']): void => {
    h.phaseIndex = byPhase[p].length;
    byPhase[p].push(h);
  };

  /** The planner's phase changed: counts, lists, free slots and the phase clock follow. */
  const setPhase = (h: SimHost, p: SimHost['phase']): void => {
    if (h.phase === p) return;
    leavePhase(h);
    enterPhase(h, p);
    if (h.phase === 'ready') freeReady -= h.slots - h.busy;
    if (p === 'ready') freeReady += h.slots - h.busy;
    phaseCount[h.phase]--;
    phaseCount[p]++;
    h.phase = p;
    h.phaseSince = now;
  };

  const bookBilled = (since: number): void => {
    book.spread(since, now, (f, hours) => {
      f.hostHours += hours;
      f.hostHoursWithScrub += hours;
    });
  };
  const bookScrub = (since: number): void => {
    book.spread(since, now, (f, hours) => {
      f.hostHoursWithScrub += hours;
      if (!pauses) f.hostHours += hours;
    });
  };

  /** After the machine left `from` (entered at `fromSince`): books, the planner's view, and what follows. */
  const moved = (h: SimHost, from: MacState, fromSince: number): void => {
    const to = h.mac.state;
    macHours[from] += (now - fromSince) / 3600;
    if (to === 'scrubbing') {
      scrubs++;
      bookBilled(billedSince.get(h.id)!);
    } else if (from === 'scrubbing') {
      bookScrub(fromSince);
      billedSince.set(h.id, now);
    }
    h.pendingSeconds = h.mac.scrubbedSeconds;
    if (h.mac.until !== undefined) schedule(h.mac.until, Ev.Mac, h, ++h.timer);
    // A freshly booted instance serves once Marina has prepared it (nested); a replaced root volume at once.
    const serving = to === 'running' && (from === 'replacing' || slotModel === 'instance-per-job');
    setPhase(h, to === 'running' && !serving ? 'launching' : fleetPhaseOfMac(to));
    if (to === 'scrubbing') h.phaseSince = now; // the planner meters the scrub alone
    if (h.retiring) {
      tryRelease(h);
      return;
    }
    if (to === 'available') {
      h.idleSince = now;
      if (h.launchOnAvailable) {
        h.launchOnAvailable = false;
        fleet.launch(h);
      }
    } else if (to === 'running' && from === 'booting') {
      if (slotModel === 'instance-per-job') {
        const job = h.boundJob;
        startJob(job, now);
        schedule(now + trace[job]!.duration, Ev.JobEnd, h, job);
      } else {
        schedule(now + t.prepareSeconds, Ev.Prepared, h, h.timer);
      }
    } else if (to === 'running') {
      h.idleSince = now;
      h.jobsSinceClean = 0;
    }
  };

  /** A retiring host goes once AWS lets it (when the Occupied window after its terminate ends, scrubbing or not). */
  const tryRelease = (h: SimHost): void => {
    if (hasInstance(h.mac.state)) return; // its stop ends in a machine timer
    if (releaseCheck(h.mac, now, t).ok) command(h, 'release');
    else if (h.mac.terminatedAt !== undefined) schedule(h.mac.terminatedAt + t.occupiedSeconds, Ev.Retire, h);
  };

  const command = (h: SimHost, c: MacCommand): boolean => {
    const from = h.mac.state;
    const since = h.mac.since;
    const v = macCommand(h.mac, c, now, t);
    if (!v.ok) {
      if (v.code === 'Client.InvalidHost.Occupied') occupiedRefusals++;
      return false;
    }
    if (c === 'release') closeHost(h, from, since);
    else moved(h, from, since);
    return true;
  };

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
    inPhase: (p) => byPhase[p],
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
        const mac = allocateMac(now, t);
        const h: SimHost = {
          id: nextId++,
          zone: zone.name,
          allocatedAt: now,
          phase: 'allocating',
          mac,
          slots: slotModel === 'nested' ? VM_SLOTS_PER_HOST : 1,
          busy: 0,
          idleSince: now,
          phaseSince: now,
          pendingSeconds: 0,
          jobsServed: 0,
          jobsSinceClean: 0,
          retiring: false,
          launchOnAvailable: launch,
          timer: 0,
          phaseIndex: 0,
          boundJob: -1,
          index: live.length,
        };
        phaseCount.allocating++;
        enterPhase(h, 'allocating');
        live.push(h);
        billedSince.set(h.id, now);
        hostsAllocated++;
        made++;
        schedule(mac.until!, Ev.Mac, h, h.timer);
      }
      if (live.length > peakHosts) peakHosts = live.length;
      return made;
    },
    launch(h) {
      return h.mac.state === 'available' && command(h, 'run-instance');
    },
    park(h) {
      if (h.busy > 0) return false;
      const s = h.mac.state;
      if (s === 'running' || s === 'booting' || s === 'launching') {
        if (!command(h, 'terminate')) return false;
      } else if (s === 'available') {
        // The scrub trick: an empty instance, terminated as soon as RunInstances answers.
        if (!command(h, 'run-instance') || !command(h, 'terminate')) return false;
      } else return false;
      parks++;
      return true;
    },
    replaceRoot(h) {
      if (h.phase !== 'ready' || h.busy > 0) return false;
      return command(h, 'replace-root');
    },
    release(h) {
      if (h.phase === 'released' || h.phase === 'allocating' || h.retiring) return false;
      if (now - h.allocatedAt < MIN_AGE_SECONDS) {
        earlyReleaseAttempts++;
        return false;
      }
      const s = h.mac.state;
      if (h.busy > 0 || s === 'launching' || s === 'booting' || s === 'replacing') return false;
      if ((s === 'running' && !command(h, 'terminate')) || s === 'released') return false;
      h.retiring = true;
      tryRelease(h);
      return true;
    },
  };

  /** Books a host's life and drops it. `atEnd`: the trace is over; the host is billed as if released now. */
  function closeHost(h: SimHost, from: MacState, fromSince: number, atEnd = false): void {
    if (h.phase === 'ready') freeReady -= h.slots - h.busy;
    leavePhase(h);
    if (from === 'scrubbing') {
      scrubbingNow--;
      bookScrub(fromSince);
      if (atEnd) h.mac.scrubbedSeconds += now - fromSince;
    } else bookBilled(billedSince.get(h.id)!);
    macHours[from] += (now - fromSince) / 3600;
    const life = now - h.allocatedAt;
    const scrubbed = h.mac.scrubbedSeconds;
    if (!atEnd && life < MIN_AGE_SECONDS) releasedYoung++;
    const billed = billedSeconds(life, scrubbed, config.billing);
    const withScrub = billedSeconds(life, scrubbed, 'scrub-billed');
    // The 24 h minimum's top-up is booked to the month the host goes.
    const m = book.at(now);
    m.hostHours += (billed - (pauses ? life - scrubbed : life)) / 3600;
    m.hostHoursWithScrub += (withScrub - life) / 3600;
    hostHours += billed / 3600;
    hostHoursWithScrub += withScrub / 3600;
    scrubHours += scrubbed / 3600;
    phaseCount[h.phase]--;
    h.phase = 'released';
    h.mac.state = 'released';
    h.mac.until = undefined;
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
  let scrubbingNow = 0;
  const sample = (): void => {
    const i = Math.floor((now - t0) / step);
    while (series.hostsLive.length <= i) {
      series.hostsLive.push(0);
      series.hostsBilled.push(0);
      series.busySlots.push(0);
      series.queued.push(0);
    }
    const billed = live.length - scrubbingNow;
    if (live.length > series.hostsLive[i]!) series.hostsLive[i] = live.length;
    if (billed > series.hostsBilled[i]!) series.hostsBilled[i] = billed;
    if (busySlots > series.busySlots[i]!) series.busySlots[i] = busySlots;
    const q = queue.length - qHead;
    if (q > series.queued[i]!) series.queued[i] = q;
  };

  let lastProgress = now;
  const startJob = (job: number, at: number): void => {
    const before = starts[job]!;
    starts[job] = before + 1;
    lastProgress = now;
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
      let pool: readonly SimHost[] = byPhase.idle; // one instance per job: any idle host (read, not copied)
      if (slotModel === 'nested') {
        candidates.length = 0;
        for (const h of byPhase.ready) if (h.busy < h.slots) candidates.push(h);
        pool = candidates;
      }
      if (pool.length === 0) return;
      const h = policy.pickHost(pool, fleet);
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
        command(h, 'run-instance');
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
      case Ev.Mac: {
        if (e.job !== h.timer || h.mac.state === 'released') break; // stale: the machine moved on
        const from = h.mac.state;
        const since = h.mac.since;
        if (!macTimer(h.mac, now, t, random)) break;
        if (from === 'scrubbing') scrubbingNow--;
        if (h.mac.state === 'scrubbing') scrubbingNow++;
        moved(h, from, since);
        break;
      }
      case Ev.Retire:
        if (h.mac.state !== 'released') tryRelease(h);
        break;
      case Ev.Prepared:
        if (e.job !== h.timer || h.mac.state !== 'running') break;
        setPhase(h, 'ready');
        h.idleSince = now;
        h.jobsSinceClean = 0;
        break;
      case Ev.JobEnd:
        ends[e.job] = ends[e.job]! + 1;
        busySlots--;
        lastProgress = now;
        h.busy--;
        if (h.phase === 'ready') freeReady++;
        if (h.busy === 0) h.idleSince = now;
        if (slotModel === 'instance-per-job') {
          // Fish terminates the job's instance: AWS stops it, then scrubs the host.
          h.boundJob = -1;
          command(h, 'terminate');
        }
        break;
    }
  };

  let nextArrival = 0;
  let nextTick = now;
  const lastEnd = trace.reduce((m, j) => Math.max(m, j.start + j.duration), 0);
  let finished = 0;
  while (true) {
    const tArr = nextArrival < n ? trace[nextArrival]!.start : Infinity;
    const tEv = events.peekTime();
    if (nextArrival >= n && finished === n) break;
    const tNext = Math.min(tArr, tEv, nextTick);
    // Stuck, not slow: jobs wait, none runs, and nothing has started or ended for a month.
    if (busySlots === 0 && qHead < queue.length && tNext > lastProgress + STARVATION_LIMIT_SECONDS) {
      throw new Error(
        `policy ${policy.name} left ${queue.length - qHead} job(s) queued with no job running for ${STARVATION_LIMIT_SECONDS / 86400} days: it never gives them a host`,
      );
    }
    now = tNext;
    if (tEv === tNext) {
      const e = events.pop();
      handle(e);
      if (e.kind === Ev.JobEnd) finished++;
      dispatch();
    } else if (tArr === tNext) {
      if (qHead === queue.length) lastProgress = now; // the wait clock starts with the first queued job
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
  while (live.length > 0) {
    const h = live[live.length - 1]!;
    closeHost(h, h.mac.state, h.mac.since, true);
  }

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
  // Every nested job boots a VM after it gets its slot, so each wait is at least the boot.
  const boot = slotModel === 'nested' ? t.vmBootSeconds : 0;
  const span = Math.max(1, lastEnd - (n > 0 ? trace[0]!.start : 0));
  return {
    policy: policy.name,
    slotModel,
    jobs: n,
    startedOnce: starts.every((s) => s === 1),
    finishedOnce: ends.every((s) => s === 1),
    hostHours,
    hostHoursWithScrub,
    phaseHours: macHours,
    scrubHours,
    instanceHours,
    costUsd: hostHours * config.hourlyPriceUsd,
    peakHosts,
    hostsAllocated,
    hostsStillAllocated: stillAllocated,
    scrubs,
    parksPerYear: (parks * YEAR_SECONDS) / span,
    occupiedRefusals,
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
    waitForSlot: {
      p50: Math.max(0, percentile(sortedWaits, 0.5) - boot),
      p95: Math.max(0, percentile(sortedWaits, 0.95) - boot),
    },
    months,
    series,
    maxWaitSeconds: sortedWaits.length ? sortedWaits[sortedWaits.length - 1]! : 0,
    wallMs: performance.now() - wall,
  };
}

export { type Event as SimEvent };
