/**
 * What a static host's watch tells its pool, and when. The watch checks its host often; the pool
 * hears of it only when the answer changes, so an idle fleet writes (almost) no history.
 */
import { isJobVm, poolOfStandbyVm } from '../domain/job';
import { UNHEALTHY_AFTER_FAILURES } from './placement';
import type { HostReport } from '../../workflows/definitions';

/** What the pool hears of a host: the contract's shape (a type only; policy runs no workflow code). */
export type { HostReport };

/** One look at a host: did it answer, and what VMs does its hypervisor list. */
export interface HostCheck {
  ok: boolean;
  error?: string;
  /** Image-cache VMs (`marina-img-…`). */
  images: string[];
  /** Job and standby VMs (`marina-…`, not images). */
  vms: string[];
}

export interface WatchStep {
  /** The host as the watch now sees it; `seq` moves only when `due`. */
  report: HostReport;
  /** The pool must hear this report. */
  due: boolean;
  /** Why it is due, for logs and details: e.g. `unhealthy after 3 failed checks`, `vms +marina-42`. */
  why?: string;
}

/** The view before the first check: nothing known, nothing sent (seq 0). */
export function initialReport(host: string, workflowId: string): HostReport {
  return { host, workflowId, healthy: false, failures: 0, images: [], vms: [], seq: 0 };
}

/**
 * Folds one check into the view. Health flips to unhealthy only after UNHEALTHY_AFTER_FAILURES
 * failures in a row (one lost packet must not cordon a host) and back on the first success;
 * images and VMs are compared as sets. A failed check says nothing about the VMs, so it keeps
 * the last known sets. A new error text on a host already known to fail is not news.
 */
export function afterCheck(prev: HostReport, check: HostCheck): WatchStep {
  const failures = check.ok ? 0 : prev.failures + 1;
  const healthy = check.ok ? true : failures >= UNHEALTHY_AFTER_FAILURES ? false : prev.healthy;
  const images = check.ok ? sortedSet(check.images) : prev.images;
  const vms = check.ok ? sortedSet(check.vms) : prev.vms;
  const reasons: string[] = [];
  if (prev.seq === 0) {
    // Nothing sent yet: the first verdict is news, but not before it is one (a success, or enough failures).
    if (check.ok || failures >= UNHEALTHY_AFTER_FAILURES)
      reasons.push(healthy ? 'first report: healthy' : `first report: unhealthy after ${failures} failed checks`);
  } else {
    if (healthy !== prev.healthy) reasons.push(healthy ? 'healthy again' : `unhealthy after ${failures} failed checks`);
    const img = setDiff(prev.images, images);
    if (img) reasons.push(`images ${img}`);
    const vm = setDiff(prev.vms, vms);
    if (vm) reasons.push(`vms ${vm}`);
  }
  const due = reasons.length > 0;
  const report: HostReport = {
    host: prev.host,
    workflowId: prev.workflowId,
    healthy,
    failures,
    ...(check.ok ? {} : { error: check.error ?? 'check failed' }),
    images,
    vms,
    seq: due ? prev.seq + 1 : prev.seq,
  };
  return due ? { report, due, why: reasons.join('; ') } : { report, due };
}

/** Splits a hypervisor's VM list into what a report carries; VMs Marina did not make are not its business. */
export function classifyVms(names: string[]): { images: string[]; vms: string[] } {
  return {
    images: names.filter((n) => n.startsWith('marina-img-')),
    vms: names.filter(isJobVm),
  };
}

/**
 * The VMs a host may reap by itself once their job workflow has closed: job VMs. Standby VMs
 * are never among them: only their own pool knows whether a lease holds one (reapVms).
 */
export function jobVmsOf(vms: string[]): string[] {
  return vms.filter((vm) => isJobVm(vm) && poolOfStandbyVm(vm) === undefined);
}

function sortedSet(xs: string[]): string[] {
  return [...new Set(xs)].sort();
}

/** `+added -removed`, or undefined when the sets are equal. */
function setDiff(before: string[], after: string[]): string | undefined {
  const b = new Set(before);
  const a = new Set(after);
  const added = [...a].filter((x) => !b.has(x));
  const removed = [...b].filter((x) => !a.has(x));
  if (added.length + removed.length === 0) return undefined;
  return [...added.map((x) => `+${x}`), ...removed.map((x) => `-${x}`)].join(' ');
}
