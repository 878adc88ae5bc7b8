/**
 * Where a job runs. Pure: the pool workflow calls it on every change, and the
 * simulator steps the same function.
 */
import {
  RESOURCE_EPSILON,
  fits,
  labelsMatch,
  type HostSpec,
  type HostState,
  type Lease,
  type LeaseRequest,
  type Resources,
  type Labels,
  type StandbyVm,
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

export interface PlacementOptions {
  /** Fair-share weight per client (default 1): a client with weight 2 may hold twice the slots of one with 1. */
  clientWeights?: Record<string, number>;
  /**
   * Cache affinity: a host already holding the job's image wins over the least-loaded host
   * while it runs at most this many more jobs than that host (OCluster's cache hints, capped
   * so one warm host is not piled on).
   */
  affinitySlack?: number;
}

export const DEFAULT_AFFINITY_SLACK = 1;
const DEFAULT_CLIENT = '(none)';

/**
 * Places queued requests. Clients take turns by fair share: the next grant goes to the
 * client holding the fewest slots for its weight (OCluster's rate per client), so one CI
 * system cannot starve the others. Within a client, higher priority first, then arrival
 * order; a request that cannot fit now waits and later ones may go around it (backfill),
 * so a big job does not idle the pool. Among fitting hosts the least loaded wins (spreading
 * VMs across Macs), unless a host holding the image is within the affinity slack.
 */
export function placeQueue(
  hosts: readonly HostState[],
  leases: readonly Lease[],
  queue: readonly LeaseRequest[],
  opts: PlacementOptions = {},
): Grant[] {
  const slack = opts.affinitySlack ?? DEFAULT_AFFINITY_SLACK;
  // Per-host use and load, and per-client share, kept current as grants are planned.
  const books: Books = { used: new Map(), load: new Map(), share: new Map() };
  for (const l of leases) take(books, l.host, l.resources, l.client ?? DEFAULT_CLIENT);

  const byClient = new Map<string, LeaseRequest[]>();
  for (const q of queue) {
    const c = q.client ?? DEFAULT_CLIENT;
    let list = byClient.get(c);
    if (!list) byClient.set(c, (list = []));
    list.push(q);
  }
  for (const list of byClient.values()) list.sort((a, b) => (b.priority ?? 0) - (a.priority ?? 0));

  const grants: Grant[] = [];
  const open = new Set(byClient.keys());
  // Grants only take capacity: a shape (resources and labels) that fitted no host fits none later in this
  // call. With a full pool and a deep queue this turns requests x hosts into shapes x hosts.
  const noFit = new Set<string>();
  while (open.size > 0) {
    let client = '';
    let best = Infinity;
    for (const c of open) {
      const s = (books.share.get(c) ?? 0) / weight(opts, c);
      if (s < best || (s === best && byClient.get(c)![0]!.requestedAt < byClient.get(client)![0]!.requestedAt)) {
        best = s;
        client = c;
      }
    }
    const list = byClient.get(client)!;
    let placed = false;
    for (let i = 0; i < list.length; i++) {
      const request = list[i]!;
      const shape = shapeOf(request);
      if (noFit.has(shape)) continue;
      const host = pickHost(hosts, books, request, slack);
      if (!host) {
        noFit.add(shape);
        continue;
      }
      grants.push({ request, host: host.name });
      take(books, host.name, request.resources, client);
      list.splice(i, 1);
      placed = true;
      break;
    }
    if (!placed || list.length === 0) open.delete(client);
  }
  return grants;
}

// Module-level helpers, not closures: the pool calls placeQueue on every change and the simulator for
// every job of a year, so a call must allocate little.
interface Books {
  used: Map<string, Resources>;
  load: Map<string, number>;
  share: Map<string, number>;
}

function weight(opts: PlacementOptions, client: string): number {
  return Math.max(1e-9, opts.clientWeights?.[client] ?? 1);
}

function take(b: Books, host: string, resources: Resources, client: string): void {
  let u = b.used.get(host);
  if (!u) b.used.set(host, (u = {}));
  for (const k in resources) u[k] = (u[k] ?? 0) + resources[k]!;
  b.load.set(host, (b.load.get(host) ?? 0) + 1);
  b.share.set(client, (b.share.get(client) ?? 0) + (resources.vm ?? 1));
}

/** A request's shape, once per request object: thousands of queued requests share a few. */
const shapes = new WeakMap<LeaseRequest, string>();
function shapeOf(r: LeaseRequest): string {
  let s = shapes.get(r);
  if (s === undefined) shapes.set(r, (s = JSON.stringify([r.resources, r.labels])));
  return s;
}

const NOTHING_USED: Resources = {};

/** fits(want, what the host has left): a resource the host does not offer counts as 0. */
function fitsLeft(want: Resources, has: Resources, used: Resources): boolean {
  for (const k in want) {
    const left = k in has ? has[k]! - (used[k] ?? 0) : 0;
    if (!(want[k]! <= left + RESOURCE_EPSILON)) return false;
  }
  return true;
}

function pickHost(hosts: readonly HostState[], b: Books, request: LeaseRequest, slack: number): HostState | undefined {
  let best: HostState | undefined;
  let bestLoad = Infinity;
  let warm: HostState | undefined;
  let warmLoad = Infinity;
  for (const host of hosts) {
    if (host.cordoned) continue;
    if (!labelsMatch(request.labels, host.labels)) continue;
    if (!fitsLeft(request.resources, host.resources, b.used.get(host.name) ?? NOTHING_USED)) continue;
    const n = b.load.get(host.name) ?? 0;
    if (n < bestLoad) {
      best = host;
      bestLoad = n;
    }
    if (request.image && host.images?.includes(request.image) && n < warmLoad) {
      warm = host;
      warmLoad = n;
    }
  }
  return warm && warmLoad <= bestLoad + slack ? warm : best;
}

/**
 * The host's first resource modifier that matches the request and no other lease holds, or
 * undefined (the job then runs unmodified). A modifier matches a request that asks for every
 * resource it lists, no more than it lists (Cirrus's semantics).
 */
export function pickModifier(
  host: HostSpec,
  leases: readonly Lease[],
  resources: Resources,
): { index: number; run: string[] } | undefined {
  const held = new Set(leases.filter((l) => l.host === host.name).map((l) => l.modifier));
  const index = (host.modifiers ?? []).findIndex(
    (m, i) =>
      !held.has(i) &&
      Object.entries(m.match).every(([k, v]) => resources[k] !== undefined && resources[k]! <= v + 1e-9),
  );
  return index < 0 ? undefined : { index, run: host.modifiers![index]!.run };
}

/**
 * The booted standby VM (its standby workflow's id) a queued job can take, or undefined: the
 * same image digest, resources within the standby's lease, its host's labels, the host not
 * cordoned, and no volumes (a VM's shared directories are fixed when it boots). Oldest first.
 */
export function pickStandby(
  request: LeaseRequest,
  standbys: Readonly<Record<string, StandbyVm>>,
  leases: readonly Lease[],
  hosts: readonly HostState[],
): string | undefined {
  if (!request.image || request.vm || request.volumes?.length) return undefined;
  const candidates = Object.entries(standbys)
    .filter(([id, s]) => {
      const lease = leases.find((l) => l.jobWorkflowId === id);
      const host = hosts.find((h) => h.name === s.host);
      return (
        s.image === request.image &&
        lease !== undefined &&
        host !== undefined &&
        !host.cordoned &&
        labelsMatch(request.labels, host.labels) &&
        fits(request.resources, lease.resources)
      );
    })
    .sort((a, b) => a[1].readySince - b[1].readySince);
  return candidates[0]?.[0];
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
