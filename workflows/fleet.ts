/**
 * The EC2 side of a pool: which host workflows it runs, in which phase, and what the fleet
 * policy (src/policy/fleet.ts, the one the simulator prices) tells it to do each tick:
 * allocate, launch a parked host, park, clean by root-volume replacement, or release.
 * Runs inside the pool workflow; deterministic.
 */
import { getExternalWorkflowHandle, startChild, ParentClosePolicy, uuid4 } from '@temporalio/workflow';
import { DAY, DEFAULT_TIMINGS } from '../src/ec2mac/model';
import { DemandHistory } from '../src/policy/forecast';
import { DEFAULT_FLEET_POLICY, forecastHorizons, planFleet, type FleetHostView } from '../src/policy/fleet';
import type { FleetPhase, FleetRecord, HostSpec, PoolState } from '../src/domain/pool';
import { hostCommandSignal, hostWorkflow, retireHostSignal } from './host';
import type { AwsPoolSettings } from './definitions';

/** Decisions kept in the pool's state (and its query): enough to explain the last hours. */
const DECISIONS_KEPT = 200;

const COMMANDED_PHASE: Record<Exclude<FleetRecord['commanded'], undefined | 'release'>, FleetPhase> = {
  launch: 'launching',
  park: 'pending',
  'replace-root': 'replacing',
};

interface View extends FleetHostView {
  readonly record: FleetRecord;
}

export class PoolFleet {
  private readonly history: DemandHistory;

  constructor(private readonly state: PoolState) {
    state.fleet ??= {};
    state.idleSince ??= {};
    state.decisions ??= [];
    this.history = new DemandHistory(state.demand);
  }

  /** EC2 seconds on the pool's clock: workflow time scaled like the EC2 endpoint's clock. */
  private now(aws: AwsPoolSettings): number {
    return (Date.now() / 1000) * aws.timeScale;
  }

  /** Writes the demand memory into the state, for continue-as-new. */
  persist(): void {
    this.state.demand = this.history.toState();
  }

  get records(): FleetRecord[] {
    return Object.values(this.state.fleet!);
  }

  decide(what: string): void {
    const d = this.state.decisions!;
    d.push({ at: new Date(Date.now()).toISOString(), what });
    if (d.length > DECISIONS_KEPT) d.splice(0, d.length - DECISIONS_KEPT);
  }

  /** A host workflow reports a phase other than ready. */
  onPhase(
    aws: AwsPoolSettings | undefined,
    r: { workflowId: string; host?: string; phase: FleetPhase; ageSeconds: number; scrubbingSeconds: number },
  ): void {
    const now = aws ? this.now(aws) : 0;
    const rec = this.record(r.workflowId, now - r.ageSeconds);
    rec.host = r.host ?? rec.host;
    rec.allocatedAt = now - r.ageSeconds;
    rec.scrubbingSeconds = r.scrubbingSeconds;
    if (rec.phase !== r.phase) rec.phaseSince = now;
    rec.phase = r.phase;
    if (rec.commanded !== 'release') rec.commanded = undefined;
    // Not serving any more: no new work goes there.
    if (r.host) this.state.hosts = this.state.hosts.filter((h) => h.name !== r.host || !h.dynamic);
  }

  /** A host workflow announces its host ready (launched, or cleaned): it serves from now on. */
  onReady(aws: AwsPoolSettings | undefined, spec: HostSpec): void {
    const d = spec.dynamic!;
    const now = aws ? this.now(aws) : 0;
    const rec = this.record(d.workflowId, now - d.ageSecondsAtReady);
    rec.host = spec.name;
    rec.allocatedAt = now - d.ageSecondsAtReady;
    rec.phase = 'ready';
    rec.phaseSince = now;
    rec.jobsSinceClean = 0;
    if (rec.commanded !== 'release') rec.commanded = undefined;
    this.state.idleSince![spec.name] = Date.now();
  }

  onGone(workflowId: string): void {
    const rec = this.state.fleet![workflowId];
    delete this.state.fleet![workflowId];
    if (rec?.host) delete this.state.idleSince![rec.host];
  }

  onGrant(host: string): void {
    const rec = this.records.find((r) => r.host === host);
    if (rec) rec.jobsSinceClean++;
  }

  private record(workflowId: string, allocatedAt: number): FleetRecord {
    // A host the pool did not start (or lost track of across a reset) is adopted on its first report.
    return (this.state.fleet![workflowId] ??= {
      workflowId,
      phase: 'allocating',
      allocatedAt,
      phaseSince: allocatedAt,
      scrubbingSeconds: 0,
      jobsSinceClean: 0,
    });
  }

  /** One round of the fleet policy: read demand and hosts, act on the plan, record why. */
  tick(aws: AwsPoolSettings): void {
    const state = this.state;
    const now = this.now(aws);
    const slots = aws.template.resources.vm ?? 1;
    const vm = (r: { resources: Record<string, number> }): number => r.resources.vm ?? 1;
    const dynamicHosts = new Set(this.records.map((r) => r.host).filter((h): h is string => h !== undefined));
    const busySlots = state.leases.filter((l) => dynamicHosts.has(l.host)).reduce((n, l) => n + vm(l), 0);
    const queued = state.queue.reduce((n, q) => n + vm(q), 0);
    this.history.record(now, busySlots + queued);

    for (const h of state.hosts) {
      if (!h.dynamic) continue;
      if (state.leases.some((l) => l.host === h.name)) delete state.idleSince![h.name];
      else state.idleSince![h.name] ??= Date.now();
    }

    const views: View[] = [];
    let unseen = 0;
    for (const rec of this.records) {
      if (rec.commanded === 'release') {
        unseen++;
        continue;
      }
      const host = rec.host ? state.hosts.find((h) => h.name === rec.host) : undefined;
      // A drained, operator-cordoned or assessed host serves nobody and is not the policy's to move.
      if (host?.cordoned && host.cordoned !== 'health') {
        unseen++;
        continue;
      }
      // A command sent counts as done: the policy must not ask twice before the host reports.
      const phase: FleetPhase = rec.commanded ? COMMANDED_PHASE[rec.commanded] : rec.phase;
      const idleMs = rec.host !== undefined ? state.idleSince![rec.host] : undefined;
      views.push({
        id: rec.host ?? rec.workflowId,
        record: rec,
        phase,
        busy: rec.host ? state.leases.filter((l) => l.host === rec.host).reduce((n, l) => n + vm(l), 0) : 0,
        slots,
        allocatedAt: rec.allocatedAt,
        idleSince: idleMs !== undefined ? (idleMs / 1000) * aws.timeScale : now,
        pendingSeconds: rec.scrubbingSeconds,
        phaseSince: rec.phaseSince,
        jobsSinceClean: rec.jobsSinceClean,
        unhealthy: host?.cordoned === 'health',
      });
    }

    const config = {
      ...DEFAULT_FLEET_POLICY,
      slotsPerHost: slots,
      idleGraceSeconds: aws.keepWarmSeconds,
      park: aws.park,
      minHosts: aws.minHosts,
      headroomSlots: aws.headroomSlots,
      refreshAfterJobs: aws.refreshAfterJobs,
      rootVolumeReplacement: aws.rootVolumeReplacement,
    };
    const horizons = forecastHorizons(DEFAULT_TIMINGS, config.scrubAssumption);
    const need = busySlots + queued;
    const plan = planFleet({
      now,
      busySlots,
      queued,
      hosts: views,
      forecast: {
        soon: this.history.forecast(now, horizons.soon, config.combine),
        parkWindow: this.history.forecast(now, horizons.parkWindow, config.combine),
        week: Math.max(this.history.peak(now - 7 * DAY, now + 1), need),
      },
      maxHosts: aws.maxHosts - unseen,
      timings: DEFAULT_TIMINGS,
      billing: aws.billing,
      config,
    });
    for (const why of plan.reasons) this.decide(why);

    for (let i = 0; i < plan.allocate; i++) this.allocate(aws, now, queued, busySlots);
    for (const h of plan.launch) this.command(h.record, 'launch', 'the forecast wants its slots');
    for (const h of plan.park) this.command(h.record, 'park', 'not wanted within a scrub and a launch');
    for (const h of plan.replaceRoot) this.command(h.record, 'replace-root', 'its instance must be cleaned');
    for (const h of plan.release) {
      h.record.commanded = 'release';
      this.unschedule(h.record);
      const reason = plan.reasons.find((r) => r.startsWith(`release host ${h.id}`)) ?? 'released by the fleet policy';
      void getExternalWorkflowHandle(h.record.workflowId)
        .signal(retireHostSignal, { reason })
        .catch(() => undefined);
    }
  }

  private allocate(aws: AwsPoolSettings, now: number, queued: number, busy: number): void {
    const workflowId = `host/${this.state.name}/${uuid4().slice(0, 8)}`;
    const rec = this.record(workflowId, now);
    rec.startedAtMs = Date.now();
    void startChild(hostWorkflow, {
      workflowId,
      parentClosePolicy: ParentClosePolicy.ABANDON,
      args: [{ pool: this.state.name, timeScale: aws.timeScale, pollSeconds: aws.pollSeconds, announce: aws.template }],
      staticSummary: `EC2 Mac host of pool ${this.state.name}: allocated for ${queued} queued slot(s), ${busy} busy`,
    }).catch(() => {
      if (this.state.fleet![workflowId] === rec) delete this.state.fleet![workflowId];
    });
  }

  private command(rec: FleetRecord, action: 'launch' | 'park' | 'replace-root', reason: string): void {
    rec.commanded = action;
    if (action !== 'launch') this.unschedule(rec);
    void getExternalWorkflowHandle(rec.workflowId)
      .signal(hostCommandSignal, { action, reason })
      .catch(() => undefined);
  }

  /** No new work goes to this host. The policy only moves hosts without leases. */
  private unschedule(rec: FleetRecord): void {
    if (rec.host) this.state.hosts = this.state.hosts.filter((h) => h.name !== rec.host || !h.dynamic);
  }
}
