/**
 * Marina's capacity policy for EC2 Mac pools: how many hosts to allocate, which idle ones
 * to start, park or release. Pure: the simulator steps it in virtual time and the pool
 * workflow runs it on its timer, so what the simulator prices is what production does.
 *
 * The economics it plays to (../shared/reference/ec2-mac.md):
 * - a host costs at least 24 h from allocation, so allocating for a short peak is dear
 *   and a host once allocated is cheap to keep while it is young;
 * - AWS does not bill a host while it scrubs (`pending`, 1–2 h), so an idle host that
 *   will not be wanted within a scrub plus a relaunch is parked by terminating its
 *   instance: billing pauses, the host stays ours, and no new 24 h minimum is paid later;
 * - an old host is released only when the fleet is larger than last week's peak needed:
 *   a later reallocation would cost another 24 h.
 * Demand is forecast from the recent past only (forecast.ts).
 */
import {
  MIN_ALLOCATION_SECONDS,
  launchToServeSeconds,
  scrubPausesBilling,
  type BillingMode,
  type MacTimings,
} from '../ec2mac/model';
import type { FleetPhase } from '../domain/pool';
import { KEEP_WARM_SECONDS, retireAction, type HostAction, type RetireInput } from './retire';

export type FleetHostPhase = FleetPhase;

/** What the policy needs to know of a host. */
export interface FleetHostView {
  readonly id: number | string;
  readonly phase: FleetHostPhase;
  readonly busy: number;
  readonly slots: number;
  readonly allocatedAt: number;
  /** Since when it has had no job (busy = 0). */
  readonly idleSince: number;
  /** A launching host whose instance is only started to be terminated (being parked). */
  readonly parkOnReady?: boolean;
  /** Seconds spent scrubbing before the current phase. */
  readonly pendingSeconds: number;
  readonly phaseSince: number;
  /** Jobs its current instance has served since it started clean (launch or root-volume replacement). */
  readonly jobsSinceClean?: number;
  /** The pool's health checks gave up on its instance: it must be cleaned before it serves again. */
  readonly unhealthy?: boolean;
}

/** Seconds this host has been billed for so far (scrubbing excluded where the mode pauses the bill). */
export function meteredSeconds(h: FleetHostView, now: number, billing: BillingMode): number {
  const pending = h.pendingSeconds + (h.phase === 'pending' ? now - h.phaseSince : 0);
  return now - h.allocatedAt - (billing === 'scrub-billed' ? 0 : pending);
}

/**
 * Whether releasing this host now saves anything. Under `minimum-of-metered` the bill is
 * max(24 h, metered), so a host metered under 24 h has hours left that are already paid:
 * keeping it (parked) costs nothing until they run out.
 */
export function paidUp(h: FleetHostView, now: number, billing: BillingMode): boolean {
  if (now - h.allocatedAt < MIN_AGE) return false; // AWS refuses anyway
  return billing !== 'minimum-of-metered' || meteredSeconds(h, now, billing) >= MIN_AGE;
}

/**
 * Whether parking this host saves anything now. Under `minimum-of-metered` hours under the 24 h
 * minimum are paid whatever the host does, so parking a host metered under 24 h only adds a stop,
 * a settling and a relaunch (all billed) to its life.
 */
export function parkSaves(h: FleetHostView, now: number, billing: BillingMode, machine = true): boolean {
  return !machine || billing !== 'minimum-of-metered' || meteredSeconds(h, now, billing) >= MIN_AGE;
}

// A module-level copy: exported bindings are getters under CJS, and this sits in the tick loop.
const MIN_AGE = MIN_ALLOCATION_SECONDS;

export interface FleetPolicyConfig {
  slotsPerHost: number;
  /** Spare slots kept ready above the forecast, for the unforeseen: a floor and a share of the forecast. */
  headroomSlots: number;
  headroomFraction: number;
  /** How long a host with a running instance must sit idle before it is parked or released. */
  idleGraceSeconds: number;
  /** Park idle hosts by scrubbing (pays only where scrubbing is unbilled). */
  park: boolean;
  /** Never fewer hosts than this, whatever the forecast. */
  minHosts: number;
  /** Clean an instance after this many jobs (0: never); a failed health check always does. */
  refreshAfterJobs: number;
  /** Clean a host that is wanted soon by replacing its root volume (15 min, billed) instead of a 1–2 h scrub. */
  rootVolumeReplacement: boolean;
  /** How yesterday's and last week's demand combine into the forecast. */
  combine: 'max' | 'mean';
  /** Which scrub length a parked host is assumed to take: the documented worst or the midpoint. */
  scrubAssumption: 'max' | 'mid';
  /** Where parking pays, hosts are kept (parked) up to the peak of this many past days; beyond it they go. */
  peakLookbackDays?: number;
  /**
   * Plan with the EC2 Mac machine's whole park cycle (src/ec2mac/machine.ts): a parked host is away for the
   * stop, the scrub and the settling, and those stops and relaunches are billed, so parking pays only under
   * `minimum-then-pause`. False: the plan of pools started before (their histories must replay).
   */
  ec2Machine?: boolean;
}

export const DEFAULT_FLEET_POLICY: FleetPolicyConfig = {
  slotsPerHost: 2,
  headroomSlots: 1,
  headroomFraction: 0.05,
  idleGraceSeconds: KEEP_WARM_SECONDS,
  park: true,
  minHosts: 0,
  refreshAfterJobs: 0,
  rootVolumeReplacement: true,
  combine: 'max',
  scrubAssumption: 'max',
};

export interface FleetForecast {
  /** Slots wanted within the time a launch takes to serve. */
  soon: number;
  /** Slots wanted within a scrub plus a launch: what a parked host would miss. */
  parkWindow: number;
  /** The peak of the last 7 days: the fleet a week of demand justified. */
  week: number;
}

export interface FleetInput<H extends FleetHostView> {
  now: number;
  busySlots: number;
  queued: number;
  hosts: readonly H[];
  forecast: FleetForecast;
  maxHosts: number;
  timings: MacTimings;
  billing: BillingMode;
  config: FleetPolicyConfig;
}

export interface FleetPlan<H extends FleetHostView> {
  allocate: number;
  launch: H[];
  park: H[];
  /** Clean these by root-volume replacement (their instance restarts on a fresh disk, no scrub). */
  replaceRoot: H[];
  release: H[];
  /** One line per decision, for the decision trace. */
  reasons: string[];
}

/** The horizons the forecast is asked for, in seconds. */
export function forecastHorizons(
  t: MacTimings,
  scrub: FleetPolicyConfig['scrubAssumption'] = 'max',
  machine = true,
): { soon: number; parkWindow: number } {
  const launch = t.allocationSeconds + launchToServeSeconds(t);
  const [lo, hi] = t.scrubSeconds;
  // A parked host serves again only after its instance stops, the scrub, the settling and a launch.
  const away = (machine ? t.stoppingSeconds + t.settleSeconds : 0) + (scrub === 'max' ? hi : (lo + hi) / 2);
  return { soon: launch, parkWindow: away + launch };
}

function serving(p: FleetHostPhase): boolean {
  return p === 'ready' || p === 'replacing' || p === 'allocating';
}

function withHeadroom(slots: number, c: FleetPolicyConfig): number {
  return slots + Math.max(c.headroomSlots, Math.ceil(slots * c.headroomFraction));
}

/** Scale-down state shared by the steps of one plan. */
interface Shrink<H extends FleetHostView> {
  input: FleetInput<H>;
  plan: FleetPlan<H>;
  park: boolean;
  cheapAllocation: boolean;
  live: number;
  weekHosts: number;
  keepHosts: number;
  later: number;
}

// A parked host costs almost nothing, so one is kept while last week's peak needed it; a
// host that cannot be parked is released once its 24 h are paid: a new allocation when
// demand returns bills its own 24 h from then, which skips the idle gap.
function releasable<H extends FleetHostView>(s: Shrink<H>, h: H): boolean {
  return (!s.park || s.cheapAllocation || s.live > s.weekHosts) && paidUp(h, s.input.now, s.input.billing);
}

/** Asks the retire policy what to do with a surplus or dirty host, and applies it to the plan. Returns the action. */
function retire<H extends FleetHostView>(
  s: Shrink<H>,
  h: H,
  reason: RetireInput['reason'],
  wanted: boolean,
  // Built only for a decision: the simulator asks about every quiet host every virtual minute.
  whyOf: () => string,
): HostAction {
  const { plan, input } = s;
  const d = retireAction({
    reason,
    busy: h.busy,
    releasable: releasable(s, h),
    parkPays: s.park && parkSaves(h, input.now, input.billing, input.config.ec2Machine !== false),
    wanted,
    rootVolumeReplacement: input.config.rootVolumeReplacement,
  });
  switch (d.action) {
    case 'release':
      plan.release.push(h);
      s.live--;
      plan.reasons.push(
        s.park && !s.cheapAllocation
          ? `release host ${h.id}: ${whyOf()}; ${d.why} (${s.live + 1} hosts > ${s.weekHosts} that last week's peak of ${input.forecast.week} slots needed)`
          : `release host ${h.id}: ${whyOf()}; ${d.why}`,
      );
      break;
    case 'park':
      plan.park.push(h);
      plan.reasons.push(
        `park host ${h.id}: ${whyOf()}; ${d.why}` +
          (wanted ? '' : ` (${s.later} slots within the scrub + launch window need ${s.keepHosts} hosts)`),
      );
      break;
    case 'replace-root':
      plan.replaceRoot.push(h);
      plan.reasons.push(`replace the root volume of host ${h.id}: ${whyOf()}; ${d.why}`);
      break;
    case 'keep':
      break;
  }
  return d.action;
}

export function planFleet<H extends FleetHostView>(input: FleetInput<H>): FleetPlan<H> {
  const { now, config: c, hosts } = input;
  const plan: FleetPlan<H> = { allocate: 0, launch: [], park: [], replaceRoot: [], release: [], reasons: [] };
  const need = input.busySlots + input.queued;
  const soon = withHeadroom(Math.max(need, input.forecast.soon), c);
  const later = withHeadroom(Math.max(need, input.forecast.parkWindow), c);
  // Measured (README, "Parking"): under `minimum-of-metered` hours below the 24 h minimum are paid anyway, and
  // past it a parked host's stop, settling and relaunch (billed) and the hosts kept parked for last week's peak
  // cost more than releasing paid-up hosts. Parking pays only under `minimum-then-pause`.
  const park =
    c.park && scrubPausesBilling(input.billing) && (c.ec2Machine === false || input.billing === 'minimum-then-pause');
  // Under `minimum-then-pause` the 24 h minimum is met by hours spent parked, so a fresh
  // host costs only the hours it serves: allocate on demand instead of keeping parked
  // hosts in reserve for the scrub + launch window.
  const cheapAllocation = park && input.billing === 'minimum-then-pause';
  const keepHosts = Math.max(c.minHosts, Math.ceil((cheapAllocation ? soon : later) / c.slotsPerHost));
  const weekHosts = Math.max(
    c.minHosts,
    Math.ceil(withHeadroom(Math.max(input.forecast.week, need), c) / c.slotsPerHost),
  );

  let servingSlots = 0;
  let active = 0;
  const idle: H[] = [];
  const quietReady: H[] = [];
  const pending: H[] = [];
  const dirty: H[] = [];
  for (const h of hosts) {
    if (h.phase === 'launching' && !h.parkOnReady) {
      servingSlots += h.slots;
      active++;
    } else if (serving(h.phase)) {
      servingSlots += h.slots;
      active++;
      if (h.phase === 'ready' && h.busy === 0) {
        if (isDirty(h, c)) dirty.push(h);
        else if (now - h.idleSince >= c.idleGraceSeconds) quietReady.push(h);
      }
    } else if (h.phase === 'idle') {
      idle.push(h);
    } else if (h.phase === 'pending') {
      pending.push(h);
    }
  }

  const s: Shrink<H> = { input, plan, park, cheapAllocation, live: hosts.length, weekHosts, keepHosts, later };
  // Dirty hosts first: cleaned at once (no job waits on a host that must not serve), by a
  // root-volume replacement if the fleet wants them back soon, else by a scrub or a release.
  dirty.sort((a, b) => b.allocatedAt - a.allocatedAt);
  for (const h of dirty) {
    const wanted = active <= keepHosts;
    const action = retire(s, h, 'dirty', wanted, () => dirtyWhy(h, c));
    if (action === 'park' || action === 'release') {
      active--;
      servingSlots -= h.slots;
    }
  }

  // Never fewer hosts than the minimum (a planner's or a schedule's): allocate the missing ones.
  const missing = Math.min(c.minHosts - hosts.length, input.maxHosts - hosts.length);
  if (missing > 0) {
    plan.allocate = missing;
    plan.reasons.push(`allocate ${missing}: the pool keeps at least ${c.minHosts} host(s) (minHosts)`);
    servingSlots += missing * c.slotsPerHost;
    active += missing;
  }

  // Scale up: start idle hosts first (no new 24 h minimum), then allocate.
  let deficit = soon - servingSlots;
  if (deficit > 0) {
    // Youngest first: their 24 h is already paid for longer.
    idle.sort((a, b) => b.allocatedAt - a.allocatedAt);
    for (const h of idle) {
      if (deficit <= 0) break;
      plan.launch.push(h);
      plan.reasons.push(
        `launch host ${h.id}: ${soon} slots wanted soon (busy ${input.busySlots}, queued ${input.queued}, forecast ${input.forecast.soon}), ${servingSlots} serving or coming`,
      );
      servingSlots += h.slots;
      deficit -= h.slots;
    }
    // A new host costs at least 24 h, a forecast miss or a spare slot only minutes of
    // waiting: allocate for jobs that want a slot now, and leave forecast and headroom to
    // idle hosts, which are already paid for.
    const shortNow = Math.min(deficit, need - (soon - deficit));
    if (shortNow > 0) {
      const room = input.maxHosts - hosts.length - plan.allocate;
      const more = Math.max(0, Math.min(room, Math.ceil(shortNow / c.slotsPerHost)));
      plan.allocate += more;
      if (more > 0) {
        plan.reasons.push(
          `allocate ${more}: ${soon} slots wanted within ${Math.round(forecastHorizons(input.timings).soon / 60)} min ` +
            `(busy ${input.busySlots}, queued ${input.queued}, forecast ${input.forecast.soon}), ${servingSlots} serving or coming`,
        );
      }
    }
    return plan;
  }

  // Scale down: hosts beyond what the park window needs, oldest first.
  if (active > keepHosts && quietReady.length > 0) {
    quietReady.sort((a, b) => a.allocatedAt - b.allocatedAt);
    for (const h of quietReady) {
      if (active <= keepHosts) break;
      if (retire(s, h, 'surplus', false, () => `idle ${Math.round((now - h.idleSince) / 60)} min`) !== 'keep') active--;
    }
  }
  // Idle hosts without an instance are billed and serve nobody: keep those the park
  // window needs as a reserve (a launch away), park or release the rest.
  for (const h of idle) {
    if (active < keepHosts) active++;
    else retire(s, h, 'surplus', false, () => 'available without an instance');
  }
  // Scrubbing hosts are free, but old ones the week does not justify go for good.
  for (const h of pending) {
    // Under `minimum-then-pause` a scrub costs nothing even past 24 h: let it end, and decide when the host is back.
    if (cheapAllocation && c.ec2Machine !== false) continue;
    if (!releasable(s, h)) continue;
    plan.release.push(h);
    s.live--;
    plan.reasons.push(
      park && !cheapAllocation
        ? `release host ${h.id} (scrubbing): its 24 h are paid and ${s.live + 1} hosts > ${weekHosts} that last week's peak needed`
        : `release host ${h.id} (scrubbing): its 24 h are paid and it is not wanted soon`,
    );
  }
  return plan;
}

function isDirty(h: FleetHostView, c: FleetPolicyConfig): boolean {
  return h.unhealthy === true || (c.refreshAfterJobs > 0 && (h.jobsSinceClean ?? 0) >= c.refreshAfterJobs);
}

function dirtyWhy(h: FleetHostView, c: FleetPolicyConfig): string {
  return h.unhealthy
    ? 'its instance failed health checks'
    : `${h.jobsSinceClean} jobs since it was clean (refreshAfterJobs ${c.refreshAfterJobs})`;
}
