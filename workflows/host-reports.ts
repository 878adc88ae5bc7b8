/**
 * What an EC2 host workflow tells its pool, kept level-triggered: the host holds its latest report of each
 * kind, and a loop in the workflow (workflows/host.ts) delivers it until the pool has taken it. Pure and
 * deterministic: the state lives in the host's `life` (its query, and across continue-as-new).
 *
 * - `status`: serving (hostReady, with the host's spec) or not (hostPhase, the phase the fleet policy sees).
 *   One slot for both: a newer status replaces an older one of either kind, so a stale phase can never
 *   arrive after the ready that followed it.
 * - `cordon`: the host's own drain or assessment cordon (hostDrain).
 * - `gone`: the last word (hostGone). Once set, nothing else is sent.
 *
 * Reports go out in the order they were made (`seq`), each slot keeping only its latest. A failed delivery
 * means the pool's run was not there (terminated, failed, or not started again yet: during a continue-as-new
 * the server routes signals to the new run): a pool that comes back starts without the host's reports, so
 * every current report is sent again, status first.
 */
import type { CordonReason, HostSpec } from '../src/domain/pool';
import type { FleetHostPhase } from '../src/policy/fleet';

export interface PhaseReport {
  workflowId: string;
  host?: string;
  phase: FleetHostPhase;
  ageSeconds: number;
  scrubbingSeconds: number;
}
export interface DrainReport {
  host: string;
  drain: boolean;
  reason?: CordonReason;
}
export interface GoneReport {
  workflowId: string;
  host?: string;
  reason: string;
}
export type StatusReport = { kind: 'ready'; spec: HostSpec } | { kind: 'phase'; report: PhaseReport };

export interface ReportSlot<T> {
  msg: T;
  seq: number;
  delivered: boolean;
}

export interface HostReports {
  status?: ReportSlot<StatusReport>;
  cordon?: ReportSlot<DrainReport>;
  gone?: ReportSlot<GoneReport>;
  seq: number;
  /** Deliveries that failed since the last one that went through. */
  failures: number;
  lastError?: string;
  /** Workflow time (ISO) of the first failure of the current run of failures. */
  failingSince?: string;
}

export type ReportKind = 'status' | 'cordon' | 'gone';
export type PendingReport =
  | { kind: 'status'; slot: ReportSlot<StatusReport> }
  | { kind: 'cordon'; slot: ReportSlot<DrainReport> }
  | { kind: 'gone'; slot: ReportSlot<GoneReport> };

export const emptyReports = (): HostReports => ({ seq: 0, failures: 0 });

/** Makes `msg` the latest report of its kind, to be delivered after every report made before it. */
export function setReport(r: HostReports, kind: 'status', msg: StatusReport): void;
export function setReport(r: HostReports, kind: 'cordon', msg: DrainReport): void;
export function setReport(r: HostReports, kind: 'gone', msg: GoneReport): void;
export function setReport(r: HostReports, kind: ReportKind, msg: StatusReport | DrainReport | GoneReport): void {
  (r as unknown as Record<ReportKind, ReportSlot<unknown>>)[kind] = { msg, seq: ++r.seq, delivered: false };
}

/** The next report to deliver: the gone report once there is one, else the oldest undelivered. */
export function nextReport(r: HostReports): PendingReport | undefined {
  if (r.gone) return r.gone.delivered ? undefined : { kind: 'gone', slot: r.gone };
  const pending: PendingReport[] = [];
  if (r.status && !r.status.delivered) pending.push({ kind: 'status', slot: r.status });
  if (r.cordon && !r.cordon.delivered) pending.push({ kind: 'cordon', slot: r.cordon });
  return pending.sort((a, b) => a.slot.seq - b.slot.seq)[0];
}

/** The pool took `p` (unless a newer report replaced it meanwhile, which then still goes out). */
export function markDelivered(r: HostReports, p: PendingReport): void {
  const slot = r[p.kind];
  if (slot && slot.seq === p.slot.seq) slot.delivered = true;
  r.failures = 0;
  delete r.lastError;
  delete r.failingSince;
}

/** Every current report goes out again, in their order (status before cordon): a new pool run knows none of them. */
export function redeliverAll(r: HostReports): void {
  // Status first: the pool ignores a cordon for a host it has not heard is ready.
  for (const s of [r.status, r.cordon, r.gone]) {
    if (!s) continue;
    s.seq = ++r.seq;
    s.delivered = false;
  }
}

export function noteFailure(r: HostReports, error: string, nowIso: string): void {
  r.failures++;
  r.lastError = error;
  r.failingSince ??= nowIso;
}
