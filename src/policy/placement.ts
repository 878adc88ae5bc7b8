/**
 * Where a job runs. Pure: the pool workflow calls it on every change, and the
 * simulator steps the same function.
 */
import {
  fits,
  freeResources,
  labelsMatch,
  type HostSpec,
  type HostState,
  type Lease,
  type LeaseRequest,
  type Resources,
  type Labels,
} from '../domain/pool';

export interface Grant {
  request: LeaseRequest;
  host: string;
}

/**
 * Why no host in the pool could ever run this job, or undefined if some host could
 * (cordons and current load do not count: those pass).
 */
export function whyNeverFits(
  hosts: readonly HostSpec[],
  want: { resources: Resources; labels: Labels },
): string | undefined {
  if (hosts.length === 0) return 'the pool has no hosts';
  const labelled = hosts.filter((h) => labelsMatch(want.labels, h.labels));
  if (labelled.length === 0) {
    return `no host has labels ${JSON.stringify(want.labels)} (hosts offer: ${hosts
      .map((h) => `${h.name} ${JSON.stringify(h.labels)}`)
      .join(', ')})`;
  }
  if (!labelled.some((h) => fits(want.resources, h.resources))) {
    return `no host offers resources ${JSON.stringify(want.resources)} (largest: ${labelled
      .map((h) => `${h.name} ${JSON.stringify(h.resources)}`)
      .join(', ')})`;
  }
  return undefined;
}

/**
 * Places queued requests in arrival order. A request that cannot fit now waits and
 * later requests may go around it (backfill), so a big job does not idle the pool;
 * among fitting hosts the least loaded one wins, which spreads VMs across Macs.
 */
export function placeQueue(
  hosts: readonly HostState[],
  leases: readonly Lease[],
  queue: readonly LeaseRequest[],
): Grant[] {
  const planned: Lease[] = [...leases];
  const grants: Grant[] = [];
  for (const request of queue) {
    const host = pickHost(hosts, planned, request);
    if (!host) continue;
    grants.push({ request, host: host.name });
    planned.push({
      leaseId: `planned-${request.jobWorkflowId}`,
      jobWorkflowId: request.jobWorkflowId,
      host: host.name,
      resources: request.resources,
      grantedAt: 0,
    });
  }
  return grants;
}

function pickHost(hosts: readonly HostState[], leases: readonly Lease[], request: LeaseRequest): HostState | undefined {
  let best: HostState | undefined;
  let bestLoad = Infinity;
  for (const host of hosts) {
    if (host.cordoned) continue;
    if (!labelsMatch(request.labels, host.labels)) continue;
    const free = freeResources(host, leases);
    if (!fits(request.resources, free)) continue;
    const load = leases.filter((l) => l.host === host.name).length;
    if (load < bestLoad) {
      best = host;
      bestLoad = load;
    }
  }
  return best;
}

/** Consecutive failed health checks after which a host is cordoned. */
export const UNHEALTHY_AFTER_FAILURES = 3;

export function healthAfterCheck(host: HostState, ok: boolean, error?: string): HostState {
  if (ok) {
    return {
      ...host,
      consecutiveHealthFailures: 0,
      lastHealthError: undefined,
      cordoned: host.cordoned === 'health' ? undefined : host.cordoned,
    };
  }
  const failures = host.consecutiveHealthFailures + 1;
  return {
    ...host,
    consecutiveHealthFailures: failures,
    lastHealthError: error,
    cordoned: host.cordoned ?? (failures >= UNHEALTHY_AFTER_FAILURES ? 'health' : undefined),
  };
}
