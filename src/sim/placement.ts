/**
 * The pool's placement (src/policy/placement.ts, placeQueue), asked about simulated hosts. The
 * simulator's hosts differ only in their load (same resources, no labels, no image cache), and
 * placeQueue's choice among such hosts depends only on load and list order, so the first host
 * of each load stands for the rest: the answer is the same and the call stays cheap enough for
 * a year of jobs (test/sim-placement.test.ts checks both claims against the pool core).
 */
import { VM_SLOTS_PER_HOST } from '../ec2mac/model';
import type { HostState, Lease, LeaseRequest } from '../domain/pool';
import { placeQueue, type PlacementOptions } from '../policy/placement';
import type { SimHost } from './types';

/** How the simulator's hosts look to the pool: what an EC2 pool's template offers. */
export const SIM_HOST_RESOURCES = { vm: VM_SLOTS_PER_HOST };
const LABELS = {};
const JOB: LeaseRequest = { jobWorkflowId: 'job', resources: { vm: 1 }, labels: LABELS, requestedAt: 0 };

export const simHostName = (h: { id: number }): string => `h-${h.id}`;

const views = new WeakMap<SimHost, { host: HostState; leases: Lease[] }>();
function viewOf(h: SimHost): { host: HostState; leases: Lease[] } {
  let v = views.get(h);
  if (!v) {
    const name = simHostName(h);
    const host: HostState = { name, resources: SIM_HOST_RESOURCES, labels: LABELS, consecutiveHealthFailures: 0 };
    const leases = Array.from({ length: h.slots }, (_, i) => ({
      leaseId: `${name}/${i}`,
      jobWorkflowId: `${name}/${i}`,
      host: name,
      resources: { vm: 1 },
      grantedAt: 0,
    }));
    views.set(h, (v = { host, leases }));
  }
  return v;
}

/** The host placeQueue gives one job among these candidates (hosts with a free slot, never empty). */
export function placeOnPool(candidates: readonly SimHost[], opts: PlacementOptions = {}): SimHost {
  const byLoad: SimHost[] = [];
  for (const h of candidates) if (byLoad[h.busy] === undefined) byLoad[h.busy] = h;
  const hosts: HostState[] = [];
  const leases: Lease[] = [];
  const sim = new Map<string, SimHost>();
  for (const h of byLoad) {
    if (!h) continue;
    const v = viewOf(h);
    hosts.push(v.host);
    for (let i = 0; i < h.busy; i++) leases.push(v.leases[i]!);
    sim.set(v.host.name, h);
  }
  const [grant] = placeQueue(hosts, leases, [JOB], opts);
  return sim.get(grant!.host)!;
}
