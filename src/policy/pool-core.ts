/**
 * The pool core: every decision a pool makes, as one pure step function,
 *
 *   step(state, event, env) → { state, commands, reply? }
 *
 * Events are what the pool hears (a lease asked for or given back, a host's report, an
 * operator's control, a tick); commands are what it wants done (tell a job or a host, start a
 * host or a standby). The pool workflow (workflows/pool.ts) is a thin loop: it feeds events in
 * and carries commands out through its outbox; the simulator can step the same function.
 *
 * Rules the core keeps, so a pool can run for months:
 * - controls record an intent and answer at once: a drain or a retire is carried out by later
 *   ticks, never by a handler that waits;
 * - commands to hosts are level-triggered: each stands until the host's own report shows it done,
 *   and a tick sends it again when it is overdue;
 * - state is bounded: the queue has a limit past which requests are refused with the limit named,
 *   and decisions are a short ring (older ones go to the worker log).
 *
 * For speed with thousands of queued jobs the state object is updated in place; the returned
 * state is that same object.
 */
import {
  type Decision,
  type HostSpec,
  type HostState,
  type Labels,
  type Lease,
  type LeaseRequest,
  type PoolState,
  type Resources,
} from '../domain/pool';
import { checkSecurity } from '../domain/security';
import { poolOfStandbyVm } from '../domain/job';
import { pickModifier, pickStandby, placeQueue, whyNeverFits, UNHEALTHY_AFTER_FAILURES } from './placement';
import { prePullKey, prePullsDue } from './prepull';
import { capacityAt } from './schedule';
import { effectiveAws } from './pool-controls';
import { PoolFleet, fleetPhaseOfHost, type FleetPhaseReport } from './pool-fleet';
import type {
  AwsPoolSettings,
  HostReport,
  LeaseRequestMsg,
  PoolControl,
  PoolMessage,
  PoolSettings,
} from '../../workflows/definitions';

/** What a restarted pool reads of an EC2 host workflow (its `hostState` query). */
export interface RecoveredHostView {
  phase: string;
  hostId?: string;
  ageSeconds?: number;
  scrubbingSeconds?: number;
  parkOnLaunch?: boolean;
  endpoint?: { address: string; port: number; knownHostsLine: string };
  retireReason?: string;
}

/** A standby VM no lease holds is reaped only after this long (a lease may be on its way). */
export const REAP_GRACE_MS = 60_000;

/** Decisions kept in the state (and its query); every decision also goes to the worker log. */
export const DECISIONS_KEPT = 50;
/** Requests a pool queues when its config sets no `queueLimit`. */
export const DEFAULT_QUEUE_LIMIT = 10_000;
/** A command to a host not yet shown done in its reports is sent again after this long (workflow ms). */
export const COMMAND_RESEND_MS = 60_000;

export type PoolEvent =
  | { type: 'lease-requested'; request: LeaseRequestMsg }
  | { type: 'lease-released'; jobWorkflowId: string; cachedImage?: string }
  /** Workflows found closed (lease check) or not found by the outbox: their leases and requests end. */
  | { type: 'workflows-closed'; ids: string[] }
  /** A grant the outbox gave up on: the slot goes back (the job asks again, level-triggered). */
  | { type: 'grant-undeliverable'; jobWorkflowId: string; error: string }
  | { type: 'host-report'; report: HostReport }
  | { type: 'host-ready'; spec: HostSpec }
  | { type: 'host-phase'; report: FleetPhaseReport }
  | { type: 'host-gone'; workflowId: string; reason: string }
  | { type: 'host-cordon'; host: string; drain: boolean; reason?: HostState['cordoned'] }
  | { type: 'standby-ready'; workflowId: string; vm: string; ip: string; image: string }
  | { type: 'prepull-done'; host: string; image: string; cacheName?: string }
  | { type: 'settings'; settings: PoolSettings }
  | { type: 'control'; control: PoolControl }
  /** A new run found these leases and waiting requests in the lease takers themselves (after a restart). */
  | {
      type: 'recovered';
      leases: Lease[];
      requests: LeaseRequestMsg[];
      hostWorkflows: string[];
      /** EC2 host workflows, where each stands: the fleet is known before it is planned. */
      ec2Hosts?: Array<{ workflowId: string; view: RecoveredHostView }>;
      standbys?: Array<{ workflowId: string; vm: string; ip: string; image: string }>;
    }
  /** A child workflow the pool asked to start could not be started. */
  | { type: 'start-failed'; workflowId: string }
  | { type: 'tick' };

export type PoolCommand =
  /** A message to a job, standby or host workflow, through the outbox. */
  | { kind: 'send'; message: PoolMessage }
  | {
      kind: 'start';
      workflowType: 'hostWorkflow' | 'staticHostWorkflow' | 'standbyWorkflow' | 'prePullWorkflow';
      workflowId: string;
      input: unknown;
      summary: string;
    }
  /** A decision that fell off the ring: for the worker log. */
  | { kind: 'log'; decision: Decision };

export interface PoolEnv {
  /** Workflow time, ms. */
  now: number;
  settings: PoolSettings;
  /** A fresh unique id (the workflow's deterministic uuid4). */
  newId: () => string;
  /**
   * Plan EC2 fleets with the EC2 Mac machine's whole park cycle (fleet.ts, `ec2Machine`). Pools started
   * before it plan as they did, so their histories replay (the pool workflow's patch `fleet-ec2-machine`).
   */
  ec2Machine?: boolean;
}

export interface StepResult {
  state: PoolState;
  commands: PoolCommand[];
  /** A control's answer. */
  reply?: string;
}

export function newPoolState(name: string): PoolState {
  return { name, hosts: [], leases: [], queue: [] };
}

/**
 * Which jobs wait in a queue, by the queue array itself: a deep queue must not be scanned for every
 * request that arrives. An array replaced (filtered) gets its index built again on first use.
 */
const queueIndex = new WeakMap<readonly LeaseRequest[], Set<string>>();
function queuedIds(queue: readonly LeaseRequest[]): Set<string> {
  let ids = queueIndex.get(queue);
  if (!ids) queueIndex.set(queue, (ids = new Set(queue.map((q) => q.jobWorkflowId))));
  return ids;
}

/** whyNeverFits by the host list it was asked of: thousands of requests share a few shapes. */
const templateHosts = new WeakMap<readonly HostSpec[], HostSpec[]>();
const neverFitsCache = new WeakMap<readonly HostSpec[], Map<string, string | undefined>>();
function neverFits(hosts: readonly HostSpec[], want: { resources: Resources; labels: Labels }): string | undefined {
  let byShape = neverFitsCache.get(hosts);
  if (!byShape) neverFitsCache.set(hosts, (byShape = new Map()));
  const key = JSON.stringify([want.resources, want.labels]);
  if (!byShape.has(key)) byShape.set(key, whyNeverFits(hosts, want));
  return byShape.get(key);
}

export function step(state: PoolState, event: PoolEvent, env: PoolEnv): StepResult {
  const core = new Core(state, env);
  const reply = core.handle(event);
  return { state, commands: core.commands, ...(reply !== undefined ? { reply } : {}) };
}

/** One step's working set: the state, the environment, and the commands emitted so far. */
class Core {
  readonly commands: PoolCommand[] = [];
  private readonly fleet: PoolFleet;

  constructor(
    private readonly state: PoolState,
    private readonly env: PoolEnv,
  ) {
    this.fleet = new PoolFleet(state, env, this.commands, (what) => this.decide(what));
  }

  private get settings(): PoolSettings {
    return this.env.settings;
  }

  decide(what: string): void {
    const d = (this.state.decisions ??= []);
    d.push({ at: new Date(this.env.now).toISOString(), what });
    while (d.length > DECISIONS_KEPT) this.commands.push({ kind: 'log', decision: d.shift()! });
  }

  private send(message: PoolMessage): void {
    this.commands.push({ kind: 'send', message });
  }

  handle(e: PoolEvent): string | undefined {
    switch (e.type) {
      case 'lease-requested':
        this.request(e.request);
        return;
      case 'lease-released': {
        const lease = this.state.leases.find((l) => l.jobWorkflowId === e.jobWorkflowId);
        const host = lease && this.state.hosts.find((h) => h.name === lease.host);
        if (host && e.cachedImage && !host.images?.includes(e.cachedImage))
          host.images = [...(host.images ?? []), e.cachedImage];
        this.release(e.jobWorkflowId);
        return;
      }
      case 'workflows-closed':
        for (const id of e.ids) {
          this.release(id);
          // A host workflow that closed without saying so (terminated, failed): its host no longer serves,
          // and jobs on it run again elsewhere.
          if (this.state.fleet?.[id]) this.hostGone(id, 'its workflow closed without a word');
          const watched = Object.entries(this.state.watchers ?? {}).find(([, w]) => w.workflowId === id);
          if (watched) delete this.state.watchers![watched[0]]; // the next tick starts it again
        }
        return;
      case 'grant-undeliverable': {
        // The slot stays the job's: a delivery that failed may still have landed, and a slot handed out
        // twice would overrun its host. The job asks again (and hears the grant again) or, once it has
        // closed, the lease check gives the slot back.
        const lease = this.state.leases.find((l) => l.jobWorkflowId === e.jobWorkflowId);
        if (!lease) return;
        this.decide(
          `grant to ${e.jobWorkflowId} undeliverable (${e.error}): its slot on ${lease.host} stays held until it asks again or closes`,
        );
        return;
      }
      case 'host-report':
        this.hostReport(e.report);
        return;
      case 'host-ready': {
        const rec = this.state.fleet?.[e.spec.dynamic!.workflowId];
        // A ready report sent again (a delivery retried, resendReport) after the pool asked the host to park,
        // clean or go must not put it back in service.
        if (rec?.commanded && rec.phase === 'ready' && rec.commanded !== 'launch') return;
        const old = this.state.hosts.find((h) => h.name === e.spec.name);
        this.fleet.onReady(this.settings.aws, e.spec);
        if (this.state.retiring?.[e.spec.name]) return; // retired: it serves no more
        this.state.hosts = [
          ...this.state.hosts.filter((h) => h.name !== e.spec.name),
          // The same instance announced again keeps what the pool knows of it (cache, health, cordon).
          old && old.dynamic?.knownHostsLine === e.spec.dynamic!.knownHostsLine
            ? { ...old, ...e.spec }
            : { ...e.spec, consecutiveHealthFailures: 0, ...(old?.cordoned ? { cordoned: old.cordoned } : {}) },
        ];
        return;
      }
      case 'host-phase': {
        this.fleet.onPhase(this.settings.aws, e.report);
        // Not serving any more: jobs still on it run again elsewhere.
        if (e.report.host) this.revokeOn(e.report.host, `host ${e.report.host} stopped serving (${e.report.phase})`);
        return;
      }
      case 'host-gone':
        this.hostGone(e.workflowId, e.reason);
        return;
      case 'host-cordon': {
        const h = this.state.hosts.find((x) => x.name === e.host);
        const why = e.reason ?? 'drain';
        // An operator's cordon outranks the host's own; lifting a cordon lifts only the same kind.
        if (!h || h.cordoned === 'operator' || (!e.drain && h.cordoned !== why)) return;
        h.cordoned = e.drain ? why : undefined;
        this.decide(
          `${e.drain ? 'cordon' : 'uncordon'} host ${e.host}: ${why === 'assessment' ? 'AWS has it under assessment' : 'drained through its host workflow'}`,
        );
        return;
      }
      case 'standby-ready': {
        const lease = this.state.leases.find((l) => l.jobWorkflowId === e.workflowId && l.vm === e.vm);
        if (!lease) return; // stale: the lease is gone
        lease.ip = e.ip;
        (this.state.standbys ??= {})[e.workflowId] = {
          host: lease.host,
          vm: e.vm,
          ip: e.ip,
          image: e.image,
          readySince: this.env.now,
        };
        return;
      }
      case 'prepull-done': {
        const key = prePullKey(e.host, e.image);
        (this.state.prePulls ??= {})[key] = { at: this.env.now, ...(e.cacheName ? { cacheName: e.cacheName } : {}) };
        const h = this.state.hosts.find((x) => x.name === e.host);
        if (h && e.cacheName && !h.images?.includes(e.cacheName)) h.images = [...(h.images ?? []), e.cacheName];
        return;
      }
      case 'settings':
        this.state.hosts = mergeHosts(this.state.hosts, e.settings);
        return;
      case 'control':
        return this.control(e.control);
      case 'recovered':
        this.recovered(e);
        return;
      case 'start-failed':
        if (this.state.fleet?.[e.workflowId]) {
          this.fleet.onStartFailed(e.workflowId);
          this.decide(`host workflow ${e.workflowId} could not start: its host will not come`);
        }
        return;
      case 'tick':
        this.tick();
        return;
    }
  }

  private request(req: LeaseRequestMsg): void {
    const s = this.state;
    // A repeated request (a job asking again, level-triggered) must not queue it twice or hand it a second slot.
    const existing = s.leases.find((l) => l.jobWorkflowId === req.jobWorkflowId);
    if (existing) {
      this.send({ kind: 'granted', to: existing.jobWorkflowId, lease: { ...existing } });
      return;
    }
    const queued = queuedIds(s.queue);
    if (queued.has(req.jobWorkflowId)) return;
    const security = checkSecurity(s.name, this.settings.security, {
      image: req.imageRef,
      volumes: req.volumes,
      client: req.client,
      ...(req.snapshot !== undefined ? { snapshot: req.snapshot, secrets: req.secrets === true } : {}),
    });
    const limit = this.settings.queueLimit ?? DEFAULT_QUEUE_LIMIT;
    const never =
      security.violations.length > 0
        ? security.violations.join('; ')
        : (neverFits(this.candidates(), req) ??
          (s.queue.length >= limit
            ? `pool ${s.name} has ${s.queue.length} jobs queued, its limit (queueLimit: ${limit}): submit again later, or raise pools[].queueLimit`
            : undefined));
    if (never) {
      this.decide(`refuse ${req.jobWorkflowId}: ${never}`);
      this.send({ kind: 'refused', to: req.jobWorkflowId, reason: never });
      return;
    }
    queued.add(req.jobWorkflowId);
    s.queue.push({
      jobWorkflowId: req.jobWorkflowId,
      resources: req.resources,
      labels: req.labels,
      requestedAt: req.requestedAt ?? this.env.now,
      ...(req.client ? { client: req.client } : {}),
      ...(req.image ? { image: req.image } : {}),
      ...(req.priority ? { priority: req.priority } : {}),
      ...(security.volumes.length > 0 ? { volumes: security.volumes } : {}),
      ...(req.vm ? { vm: req.vm } : {}),
    });
  }

  /** What a request could ever run on: the hosts, and for an AWS pool a host it could allocate. */
  private candidates(): readonly HostSpec[] {
    const aws = this.settings.aws;
    if (!aws) return this.state.hosts;
    // One array per (hosts, template) pair, so the whyNeverFits cache holds across requests.
    let withTemplate = templateHosts.get(this.state.hosts);
    if (!withTemplate || withTemplate[withTemplate.length - 1] !== aws.template)
      templateHosts.set(this.state.hosts, (withTemplate = [...this.state.hosts, aws.template]));
    return withTemplate;
  }

  private release(jobWorkflowId: string): void {
    const s = this.state;
    if (s.standbys) delete s.standbys[jobWorkflowId];
    s.leases = s.leases.filter((l) => l.jobWorkflowId !== jobWorkflowId);
    if (queuedIds(s.queue).has(jobWorkflowId)) s.queue = s.queue.filter((q) => q.jobWorkflowId !== jobWorkflowId);
  }

  /** A static host's report: applied to that host by name, so a report never lands on another. */
  private hostReport(r: HostReport): void {
    const s = this.state;
    const w = (s.watchers ??= {})[r.host];
    if (w && w.workflowId === r.workflowId) {
      if (r.seq <= w.lastSeq) return; // older than one already applied
      w.lastSeq = r.seq;
    }
    const h = s.hosts.find((x) => x.name === r.host);
    if (!h) return; // removed from the config, or gone, meanwhile
    const wasHealthy = h.cordoned !== 'health';
    h.consecutiveHealthFailures = r.failures;
    h.lastHealthError = r.error;
    h.images = r.images;
    if (!r.healthy && !h.cordoned && r.failures >= UNHEALTHY_AFTER_FAILURES) h.cordoned = 'health';
    if (r.healthy && h.cordoned === 'health') h.cordoned = undefined;
    if (wasHealthy !== (h.cordoned !== 'health'))
      this.decide(
        h.cordoned === 'health'
          ? `cordon host ${h.name}: ${r.failures} failed health checks (${r.error ?? 'no answer'})`
          : `uncordon host ${h.name}: healthy again`,
      );
    // A standby VM of this pool that no lease holds is an orphan (a lease holds it from before it boots until
    // after it is destroyed). The host reaps job VMs itself; standby VMs only their own pool knows. Each is a
    // suspect first: reaped by a tick once still unheld after a grace, never while a new run recovers.
    const suspects = (s.reapSuspects ??= {});
    const seen = suspects[h.name] ?? {};
    const next: Record<string, number> = {};
    for (const vm of r.vms) if (poolOfStandbyVm(vm) === s.name) next[vm] = seen[vm] ?? this.env.now;
    if (Object.keys(next).length > 0) suspects[h.name] = next;
    else delete suspects[h.name];
  }

  /** Standby VMs reported and still held by no lease after the grace: the host destroys them. */
  private reapOrphans(): void {
    const s = this.state;
    for (const [host, vms] of Object.entries(s.reapSuspects ?? {})) {
      const w = s.watchers?.[host];
      if (!w || !s.hosts.some((h) => h.name === host)) {
        delete s.reapSuspects![host];
        continue;
      }
      const due = Object.entries(vms)
        .filter(
          ([vm, since]) =>
            this.env.now - since >= REAP_GRACE_MS && !s.leases.some((l) => l.host === host && l.vm === vm),
        )
        .map(([vm]) => vm);
      for (const vm of Object.keys(vms)) if (s.leases.some((l) => l.host === host && l.vm === vm)) delete vms[vm];
      if (due.length === 0) continue;
      for (const vm of due) delete vms[vm];
      this.send({ kind: 'reap-vms', to: w.workflowId, vms: due, reason: 'standby VMs no lease holds' });
      this.decide(`reap ${due.join(', ')} on ${host}: standby VMs no lease holds`);
    }
  }

  /** Leases on a host that no longer serves end; their jobs ask again and run elsewhere. */
  private revokeOn(host: string, reason: string): void {
    const s = this.state;
    const on = s.leases.filter((x) => x.host === host);
    if (on.length === 0) return;
    for (const l of on) this.send({ kind: 'revoked', to: l.jobWorkflowId, leaseId: l.leaseId, reason });
    s.leases = s.leases.filter((x) => x.host !== host);
    for (const [id, sb] of Object.entries(s.standbys ?? {})) if (sb.host === host) delete s.standbys![id];
  }

  private hostGone(workflowId: string, reason: string): void {
    const s = this.state;
    const rec = s.fleet?.[workflowId];
    this.fleet.onGone(workflowId);
    const gone = s.hosts.filter((h) => h.dynamic?.workflowId === workflowId).map((h) => h.name);
    if (rec?.host && !gone.includes(rec.host)) gone.push(rec.host);
    // Jobs on a lost host run again: their leases end and they ask for new ones.
    for (const h of gone) this.revokeOn(h, `host ${h} is gone: ${reason}`);
    s.hosts = s.hosts.filter((h) => !gone.includes(h.name));
    for (const h of gone) if (s.drains) delete s.drains[h];
    // A retired host has left `hosts` already: its intent ends with its workflow.
    for (const [h, r] of Object.entries(s.retiring ?? {})) if (r.workflowId === workflowId) delete s.retiring![h];
    this.decide(`host workflow ${workflowId} is gone: ${reason}`);
  }

  private control(c: PoolControl): string {
    const s = this.state;
    const say = (message: string): string => {
      this.decide(`operator: ${message}`);
      return message;
    };
    const host = (name: string) => s.hosts.find((x) => x.name === name);
    const running = (name: string) => s.leases.filter((l) => l.host === name).length;
    switch (c.action) {
      case 'pause':
        s.paused = true;
        return say(`pool ${s.name} paused: nothing new is placed or allocated; running jobs go on`);
      case 'resume':
        s.paused = false;
        return say(`pool ${s.name} resumed`);
      case 'cordon':
      case 'uncordon': {
        const h = host(c.host)!;
        h.cordoned = c.action === 'cordon' ? 'operator' : undefined;
        if (c.action === 'uncordon' && s.drains) delete s.drains[c.host];
        return say(`${c.action} host ${c.host}`);
      }
      case 'drain': {
        host(c.host)!.cordoned = 'drain';
        (s.drains ??= {})[c.host] = this.env.now;
        const n = running(c.host);
        return say(
          n === 0
            ? `drain host ${c.host}: no new work; it runs no job (drained)`
            : `drain host ${c.host}: no new work; waiting for its ${n} running job(s)`,
        );
      }
      case 'retire': {
        const h = host(c.host);
        const rec = Object.values(s.fleet ?? {}).find((r) => r.host === c.host);
        if (h) h.cordoned = 'drain';
        (s.retiring ??= {})[c.host] = { since: this.env.now, workflowId: h?.dynamic?.workflowId ?? rec!.workflowId };
        const n = running(c.host);
        return say(
          `retire host ${c.host}: ${n === 0 ? 'no job runs there' : `draining its ${n} running job(s) first`}; ` +
            'then its workflow terminates the instance and releases the host when AWS allows',
        );
      }
      case 'schedules': {
        if (c.schedules === null) delete s.schedules;
        else s.schedules = c.schedules;
        s.scheduleIndex = -2; // matches no entry: the next look says which applies now
        return say(
          c.schedules === null
            ? `schedules of pool ${s.name}: back to the config's`
            : `schedules of pool ${s.name}: ${c.schedules.length} entr${c.schedules.length === 1 ? 'y' : 'ies'} set by a planner`,
        );
      }
      case 'capacity': {
        const { action: _, ...set } = c;
        s.capacity = { ...s.capacity, ...set };
        const a = effectiveAws(s, this.settings.aws!, this.env.now);
        return say(
          `capacity of pool ${s.name}: minHosts ${a.minHosts}, maxHosts ${a.maxHosts}, headroomSlots ${a.headroomSlots}`,
        );
      }
    }
  }

  private recovered(e: Extract<PoolEvent, { type: 'recovered' }>): void {
    const s = this.state;
    delete s.recovering;
    let leases = 0;
    for (const l of e.leases) {
      if (s.leases.some((x) => x.jobWorkflowId === l.jobWorkflowId)) continue;
      s.leases.push(l);
      s.queue = s.queue.filter((q) => q.jobWorkflowId !== l.jobWorkflowId);
      leases++;
    }
    const before = s.queue.length;
    // Through the same checks as any request (security, fit, the queue limit): the config may have changed.
    for (const r of e.requests) this.request(r);
    const queued = s.queue.length - before;
    // Arrival order survives the restart: each request keeps the time it was first made.
    s.queue.sort((a, b) => a.requestedAt - b.requestedAt);
    for (const sb of e.standbys ?? []) {
      const lease = s.leases.find((l) => l.jobWorkflowId === sb.workflowId);
      if (lease)
        (s.standbys ??= {})[sb.workflowId] = {
          host: lease.host,
          vm: sb.vm,
          ip: sb.ip,
          image: sb.image,
          readySince: this.env.now,
        };
    }
    const aws = this.settings.aws;
    for (const { workflowId, view } of aws ? (e.ec2Hosts ?? []) : []) this.adoptHost(aws!, workflowId, view);
    for (const id of e.hostWorkflows) this.send({ kind: 'resend-report', to: id });
    this.decide(
      `recovered after a restart: ${leases} lease(s) and ${queued} waiting request(s) from the jobs themselves; ` +
        `${e.hostWorkflows.length} host workflow(s) asked to report again`,
    );
  }

  /** An EC2 host workflow a restarted pool found running: into the fleet (and in service if it serves). */
  private adoptHost(aws: AwsPoolSettings, workflowId: string, v: RecoveredHostView): void {
    if (v.retireReason !== undefined || ['retiring', 'releasing', 'released', 'failed', 'vanished'].includes(v.phase)) {
      // Leaving: still counts against maxHosts until it reports gone.
      this.fleet.adopt(aws, workflowId, v, 'pending');
      const rec = this.state.fleet![workflowId];
      if (rec) rec.commanded = 'release';
      return;
    }
    if (v.phase === 'ready' && v.endpoint && v.hostId) {
      this.handle({
        type: 'host-ready',
        spec: {
          name: v.hostId,
          resources: aws.template.resources,
          labels: aws.template.labels,
          dynamic: { workflowId, ...v.endpoint, ageSecondsAtReady: v.ageSeconds ?? 0, readyAtMs: this.env.now },
        },
      });
      return;
    }
    const phase = fleetPhaseOfHost(v.phase, v.parkOnLaunch === true);
    if (phase) this.fleet.adopt(aws, workflowId, v, phase);
  }

  /** Everything level-triggered: place, keep standbys and pre-pulls, watch hosts, carry out drains and retires. */
  private tick(): void {
    const s = this.state;
    if (s.recovering) return; // nothing is placed before the leases held are known
    this.syncWatchers();
    this.carryOutIntents();
    this.reapOrphans();
    this.prunePrePulls();
    if (!s.paused) {
      this.claimStandbys();
      this.place();
    }
    this.syncStandby();
    this.syncPrePulls();
    const aws = this.settings.aws;
    if (aws) {
      this.noteSchedule(aws);
      if (!s.paused) this.fleet.tick(effectiveAws(s, aws, this.env.now));
      this.fleet.resendOverdue(COMMAND_RESEND_MS);
    }
  }

  private place(): void {
    const s = this.state;
    for (const grant of placeQueue(s.hosts, s.leases, s.queue, this.settings.placement)) {
      const r = grant.request;
      const lease: Lease = {
        leaseId: this.env.newId(),
        jobWorkflowId: r.jobWorkflowId,
        host: grant.host,
        resources: r.resources,
        grantedAt: this.env.now,
        ...(r.client ? { client: r.client } : {}),
        ...(r.volumes ? { volumes: r.volumes } : {}),
        ...(r.vm ? { vm: r.vm } : {}),
      };
      const host = s.hosts.find((h) => h.name === grant.host)!;
      const modifier = pickModifier(host, s.leases, lease.resources);
      if (modifier) Object.assign(lease, { modifier: modifier.index, runArgs: modifier.run });
      s.leases.push(lease);
      this.fleet.onGrant(lease.host);
      this.send({ kind: 'granted', to: lease.jobWorkflowId, lease: { ...lease } });
    }
    if (s.leases.length > 0) {
      const granted = new Set(s.leases.map((l) => l.jobWorkflowId));
      s.queue = s.queue.filter((q) => !granted.has(q.jobWorkflowId));
    }
  }

  /** Queued jobs take booted standby VMs first (src/policy/placement.ts says which). */
  private claimStandbys(): void {
    const s = this.state;
    if (!s.standbys || Object.keys(s.standbys).length === 0) return;
    for (const req of [...s.queue]) {
      const standbyId = pickStandby(req, s.standbys, s.leases, s.hosts);
      if (!standbyId) continue;
      const sb = s.standbys[standbyId]!;
      const lease = s.leases.find((l) => l.jobWorkflowId === standbyId)!;
      // The standby's lease becomes the job's: the slot and the VM change hands, never free in between.
      Object.assign(lease, {
        leaseId: this.env.newId(),
        jobWorkflowId: req.jobWorkflowId,
        grantedAt: this.env.now,
        client: req.client,
      });
      if (!req.client) delete lease.client;
      delete s.standbys[standbyId];
      s.queue = s.queue.filter((q) => q !== req);
      this.fleet.onGrant(lease.host);
      this.send({ kind: 'claimed', to: standbyId, by: req.jobWorkflowId });
      this.send({ kind: 'granted', to: req.jobWorkflowId, lease: { ...lease } });
      this.decide(`${req.jobWorkflowId} takes standby VM ${sb.vm} on ${sb.host} (booted, image cached)`);
    }
  }

  /**
   * Every host that serves has a workflow watching it (workflows/static-host.ts): each configured host, and
   * each EC2 host while its instance serves (its own host workflow watches EC2; this one its SSH and VMs).
   * A host that leaves the config, or stops serving, has its watcher told to end.
   */
  private syncWatchers(): void {
    const s = this.state;
    const watchers = (s.watchers ??= {});
    const serving: HostSpec[] = [
      ...this.settings.hosts,
      ...s.hosts.filter((h) => h.dynamic).map(({ name, resources, labels }) => ({ name, resources, labels })),
    ];
    const names = new Set(serving.map((h) => h.name));
    for (const spec of serving) {
      const w = watchers[spec.name];
      const specKey = JSON.stringify([spec.resources, spec.labels, spec.modifiers ?? []]);
      if (w && w.spec === specKey) continue;
      const workflowId = `host/${s.name}/${spec.name}`;
      if (!w) {
        watchers[spec.name] = { workflowId, lastSeq: 0, spec: specKey };
        this.commands.push({
          kind: 'start',
          workflowType: 'staticHostWorkflow',
          workflowId,
          input: { pool: s.name, spec, healthCheckSeconds: this.settings.healthCheckSeconds },
          summary: `Mac ${spec.name} of pool ${s.name}: watches its health, VMs and image cache`,
        });
      } else w.spec = specKey;
    }
    for (const [name, w] of Object.entries(watchers)) {
      if (names.has(name)) continue;
      delete watchers[name];
      this.send({ kind: 'stop-watch', to: w.workflowId, reason: `host ${name} no longer serves pool ${s.name}` });
      this.decide(`stop watching host ${name}: it left the config or stopped serving`);
    }
  }

  /** Drains end when the host's jobs have; a retire goes to the host workflow once it is drained, until it is gone. */
  private carryOutIntents(): void {
    const s = this.state;
    for (const [host, since] of Object.entries(s.drains ?? {})) {
      if (s.leases.some((l) => l.host === host)) continue;
      delete s.drains![host];
      this.decide(`operator: host ${host} drained (${Math.round((this.env.now - since) / 1000)} s)`);
    }
    for (const [host, r] of Object.entries(s.retiring ?? {})) {
      if (s.leases.some((l) => l.host === host)) continue;
      if (r.sentAt !== undefined && this.env.now - r.sentAt < COMMAND_RESEND_MS) continue;
      const first = r.sentAt === undefined;
      r.sentAt = this.env.now;
      const rec = s.fleet?.[r.workflowId];
      if (rec) rec.commanded = 'release';
      s.hosts = s.hosts.filter((x) => x.name !== host);
      this.send({ kind: 'retire-host', to: r.workflowId, reason: 'retired by an operator' });
      this.decide(
        first
          ? `operator: host ${host} retired: its workflow terminates the instance and releases it when AWS allows`
          : `retire host ${host}: sent again (its workflow has not reported gone)`,
      );
    }
  }

  /** Starts the standby workflows the settings ask for, and stops the ones they no longer do. */
  private syncStandby(): void {
    const s = this.state;
    const wanted = (this.settings.standby ?? []).flatMap((sb, i) =>
      Array.from({ length: sb.count }, (_, n) => ({ id: `standby/${s.name}/${i}-${n}`, slot: `${i}-${n}`, spec: sb })),
    );
    const started = (s.standbyWorkflows ??= []);
    for (const w of wanted.filter((x) => !started.includes(x.id))) {
      started.push(w.id);
      this.commands.push({
        kind: 'start',
        workflowType: 'standbyWorkflow',
        workflowId: w.id,
        input: { pool: s.name, slot: w.slot, image: w.spec.image, resources: w.spec.resources, labels: w.spec.labels },
        summary: `Standby VM ${w.slot} of pool ${s.name}: ${w.spec.image}`,
      });
      this.decide(`start standby ${w.id}: keep ${w.spec.count} VM(s) of ${w.spec.image} booted`);
    }
    for (const id of started.filter((x) => !wanted.some((w) => w.id === x))) {
      s.standbyWorkflows = s.standbyWorkflows!.filter((x) => x !== id);
      if (s.standbys) delete s.standbys[id];
      this.send({ kind: 'stop', to: id });
      this.decide(`stop standby ${id}: the pool keeps fewer standby VMs now`);
    }
  }

  /** Records of hosts gone or images no longer pre-pulled go: the state must not grow with every host ever seen. */
  private prunePrePulls(): void {
    const s = this.state;
    if (!s.prePulls) return;
    const hosts = new Set(s.hosts.map((h) => h.name));
    const images = new Set(this.settings.prePull ?? []);
    for (const key of Object.keys(s.prePulls)) {
      const i = key.indexOf('|');
      if (!hosts.has(key.slice(0, i)) || !images.has(key.slice(i + 1))) delete s.prePulls[key];
    }
  }

  /** Starts the pre-pulls due (src/policy/prepull.ts): the pool's images onto idle hosts, one at a time per host. */
  private syncPrePulls(): void {
    const s = this.state;
    const images = this.settings.prePull ?? [];
    if (images.length === 0) return;
    const records = (s.prePulls ??= {});
    for (const p of prePullsDue(s.hosts, s.leases, images, records, this.env.now)) {
      const key = prePullKey(p.host, p.image);
      records[key] = { ...records[key], at: this.env.now, running: true };
      this.commands.push({
        kind: 'start',
        workflowType: 'prePullWorkflow',
        workflowId: `prepull/${s.name}/${p.host}/${p.image}`,
        input: { pool: s.name, host: p.host, image: p.image },
        summary: `Pre-pull ${p.image} onto ${p.host} (pool ${s.name})`,
      });
    }
  }

  private noteSchedule(aws: AwsPoolSettings): void {
    const s = this.state;
    const schedules = s.schedules ?? aws.schedules ?? [];
    const sched = capacityAt(schedules, new Date(this.env.now));
    if ((sched?.index ?? -1) === (s.scheduleIndex ?? -1)) return;
    s.scheduleIndex = sched?.index;
    const entry = sched && schedules[sched.index]!;
    this.decide(
      entry
        ? `capacity schedule ${sched.index} applies (${entry.periods.join(', ')} in ${entry.timezone}): ` +
            (['minHosts', 'maxHosts', 'headroomSlots'] as const)
              .filter((k) => entry[k] !== undefined)
              .map((k) => `${k} ${String(entry[k])}`)
              .join(', ')
        : 'no capacity schedule applies: the configured capacity',
    );
  }
}

/** The configured hosts (their current resources and labels), and the hosts Marina allocated. */
export function mergeHosts(current: HostState[], settings: PoolSettings): HostState[] {
  const configured = settings.hosts.map((spec) => {
    const old = current.find((h) => h.name === spec.name && !h.dynamic);
    return old
      ? {
          ...old,
          resources: spec.resources,
          labels: spec.labels,
          ...(spec.modifiers ? { modifiers: spec.modifiers } : {}),
        }
      : { ...spec, consecutiveHealthFailures: 0 };
  });
  // Hosts Marina allocated are not in the config: they stay until their host workflow says they are gone.
  return [...configured, ...current.filter((h) => h.dynamic)];
}

/** Ids the lease check asks about: lease holders and waiting jobs, and host workflows that should be running. */
export function workflowsToCheck(state: PoolState, now: number): string[] {
  const ids = new Set<string>();
  for (const l of state.leases) ids.add(l.jobWorkflowId);
  for (const q of state.queue) ids.add(q.jobWorkflowId);
  // Host workflows that closed without saying so (terminated, failed) must not count as capacity.
  // (Not those just started: a child being started is not found yet.)
  for (const r of Object.values(state.fleet ?? {}))
    if (r.startedAtMs === undefined || now - r.startedAtMs > 60_000) ids.add(r.workflowId);
  for (const w of Object.values(state.watchers ?? {})) ids.add(w.workflowId);
  return [...ids];
}
