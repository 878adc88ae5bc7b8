/**
 * The EC2 side of the pool core (pool-core.ts): which host workflows a pool runs, in which
 * phase, and what the fleet policy (fleet.ts, the one the simulator prices) tells it to do each
 * tick: allocate, launch a parked host, park, clean by root-volume replacement, or release.
 * Pure: it updates the pool state and emits commands; the pool workflow carries them out.
 */
import { DEFAULT_TIMINGS } from '../ec2mac/model';
import { fleetPhaseOfWorkflow } from '../ec2mac/lifecycle';
import { DemandHistory } from './forecast';
import { DEFAULT_FLEET_POLICY, type FleetHostView } from './fleet';
import { fleetStep } from './fleet-step';
import type { FleetPhase, FleetRecord, HostSpec, PoolState } from '../domain/pool';
import type { AwsPoolSettings } from '../../workflows/definitions';
import type { PoolCommand, PoolEnv } from './pool-core';

/** What a host workflow reports of a phase other than ready. */
export interface FleetPhaseReport {
  workflowId: string;
  host?: string;
  phase: FleetPhase;
  ageSeconds: number;
  scrubbingSeconds: number;
}

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

  constructor(
    private readonly state: PoolState,
    private readonly env: PoolEnv,
    private readonly commands: PoolCommand[],
    readonly decide: (what: string) => void,
  ) {
    state.fleet ??= {};
    state.idleSince ??= {};
    this.history = new DemandHistory(state.demand);
  }

  /** EC2 seconds on the pool's clock: workflow time scaled like the EC2 endpoint's clock. */
  private now(aws: AwsPoolSettings): number {
    return (this.env.now / 1000) * aws.timeScale;
  }

  get records(): FleetRecord[] {
    return Object.values(this.state.fleet!);
  }

  /** A host workflow reports a phase other than ready. */
  onPhase(aws: AwsPoolSettings | undefined, r: FleetPhaseReport): void {
    const now = aws ? this.now(aws) : 0;
    const rec = this.record(r.workflowId, now - r.ageSeconds);
    rec.host = r.host ?? rec.host;
    rec.allocatedAt = now - r.ageSeconds;
    rec.scrubbingSeconds = r.scrubbingSeconds;
    if (rec.phase !== r.phase) rec.phaseSince = now;
    rec.phase = r.phase;
    if (rec.commanded !== 'release') delete rec.commanded;
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
    // A ready report sent again (to a restarted pool, or on resendReport) is not a fresh instance.
    const fresh = rec.phase !== 'ready' || !this.state.hosts.some((h) => h.name === spec.name);
    rec.phase = 'ready';
    if (fresh) {
      rec.phaseSince = now;
      rec.jobsSinceClean = 0;
      this.state.idleSince![spec.name] = this.env.now;
    }
    if (rec.commanded !== 'release') delete rec.commanded;
  }

  /** A host workflow a restarted pool found running (not ready): known before the fleet is planned. */
  adopt(
    aws: AwsPoolSettings,
    workflowId: string,
    v: { hostId?: string; ageSeconds?: number; scrubbingSeconds?: number },
    phase: FleetPhase,
  ): void {
    this.onPhase(aws, {
      workflowId,
      ...(v.hostId ? { host: v.hostId } : {}),
      phase,
      ageSeconds: v.ageSeconds ?? 0,
      scrubbingSeconds: v.scrubbingSeconds ?? 0,
    });
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

    for (const h of state.hosts) {
      if (!h.dynamic) continue;
      if (state.leases.some((l) => l.host === h.name)) delete state.idleSince![h.name];
      else state.idleSince![h.name] ??= this.env.now;
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
      ec2Machine: this.env.ec2Machine === true,
    };
    const plan = fleetStep(this.history, {
      now,
      busySlots,
      queued,
      hosts: views,
      maxHosts: aws.maxHosts - unseen,
      timings: DEFAULT_TIMINGS,
      billing: aws.billing,
      config,
    });
    this.state.demand = this.history.toState();
    for (const why of plan.reasons) this.decide(why);

    for (let i = 0; i < plan.allocate; i++) this.allocate(aws, now, queued, busySlots);
    for (const h of plan.launch) this.command(h.record, 'launch', 'the forecast wants its slots');
    for (const h of plan.park) this.command(h.record, 'park', 'not wanted within a scrub and a launch');
    for (const h of plan.replaceRoot) this.command(h.record, 'replace-root', 'its instance must be cleaned');
    for (const h of plan.release) {
      const reason = plan.reasons.find((r) => r.startsWith(`release host ${h.id}`)) ?? 'released by the fleet policy';
      this.command(h.record, 'release', reason);
    }
  }

  /**
   * Commands are level-triggered: one stands until the host's report shows it carried out (a phase
   * report clears it, hostGone ends a release). One not shown done after `afterMs` is sent again;
   * host workflows take a repeated command as the same one.
   */
  resendOverdue(afterMs: number): void {
    for (const rec of this.records) {
      if (!rec.commanded || rec.commandedAt === undefined || this.env.now - rec.commandedAt < afterMs) continue;
      this.decide(
        `${rec.commanded} ${rec.host ?? rec.workflowId}: sent again (not reported done after ${Math.round(afterMs / 1000)} s)`,
      );
      this.command(rec, rec.commanded, rec.commandReason ?? 'sent again');
    }
  }

  private allocate(aws: AwsPoolSettings, now: number, queued: number, busy: number): void {
    const workflowId = `host/${this.state.name}/${this.env.newId().slice(0, 8)}`;
    const rec = this.record(workflowId, now);
    rec.startedAtMs = this.env.now;
    this.commands.push({
      kind: 'start',
      workflowType: 'hostWorkflow',
      workflowId,
      input: { pool: this.state.name, timeScale: aws.timeScale, pollSeconds: aws.pollSeconds, announce: aws.template },
      summary: `EC2 Mac host of pool ${this.state.name}: allocated for ${queued} queued slot(s), ${busy} busy`,
    });
  }

  /** A start the workflow could not carry out: the host will never come. */
  onStartFailed(workflowId: string): void {
    delete this.state.fleet![workflowId];
  }

  private command(rec: FleetRecord, action: NonNullable<FleetRecord['commanded']>, reason: string): void {
    rec.commanded = action;
    rec.commandedAt = this.env.now;
    rec.commandReason = reason;
    if (action !== 'launch') this.unschedule(rec);
    this.commands.push({
      kind: 'send',
      message:
        action === 'release'
          ? { kind: 'retire-host', to: rec.workflowId, reason }
          : { kind: 'host-command', to: rec.workflowId, action, reason },
    });
  }

  /** No new work goes to this host. The policy only moves hosts without leases. */
  private unschedule(rec: FleetRecord): void {
    if (rec.host) this.state.hosts = this.state.hosts.filter((h) => h.name !== rec.host || !h.dynamic);
  }
}

/** How the fleet policy sees an EC2 host workflow's phase (workflows/host.ts reports it with this mapping). */
export const fleetPhaseOfHost = fleetPhaseOfWorkflow;
