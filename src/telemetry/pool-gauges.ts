/**
 * What a pool's state says in numbers, for the pool gauges (src/telemetry/metrics.ts): jobs by state,
 * hosts by phase, the oldest lease and queued request, and what the EC2 hosts held now have billed so
 * far. Pure: the worker reads the pool's query and hands it here.
 */
import type { PoolView } from '../policy/pool-view';
import { billedSeconds, HOURLY_PRICE_USD, HOUR, type BillingMode } from '../ec2mac/model';

export interface PoolGauges {
  jobs: { queued: number; leased: number };
  hosts: Record<string, number>;
  oldestLeaseSeconds: number;
  oldestQueuedSeconds: number;
  /** EC2 hosts held now: host-hours billed since each was allocated, and their price. */
  billedHostHours: number;
  billedDollars: number;
}

export interface PoolPricing {
  timeScale: number;
  billing: BillingMode;
  instanceType: string;
}

export function poolGauges(view: PoolView, nowMs: number, aws?: PoolPricing): PoolGauges {
  const hosts: Record<string, number> = {};
  const count = (phase: string) => (hosts[phase] = (hosts[phase] ?? 0) + 1);
  // EC2 hosts are counted from the fleet, which knows their phase; the host list holds them too once ready.
  for (const h of view.hosts) if (!h.dynamic) count(h.cordoned ? `cordoned-${h.cordoned}` : 'serving');
  let billed = 0;
  const ec2Now = (nowMs / 1000) * (aws?.timeScale ?? 1);
  for (const r of Object.values(view.fleet ?? {})) {
    count(r.phase);
    if (aws && r.host && r.phase !== 'released')
      billed += billedSeconds(Math.max(0, ec2Now - r.allocatedAt), r.scrubbingSeconds, aws.billing);
  }
  const oldest = (times: number[]) => (times.length ? Math.max(0, (nowMs - Math.min(...times)) / 1000) : 0);
  const billedHostHours = billed / HOUR;
  return {
    jobs: { queued: view.queued, leased: view.running },
    hosts,
    // The view lists the first leases and requests (the oldest first), enough for the oldest of each.
    oldestLeaseSeconds: oldest(view.leases.map((l) => l.grantedAt)),
    oldestQueuedSeconds: oldest(view.queue.map((q) => q.requestedAt)),
    billedHostHours,
    billedDollars: aws ? billedHostHours * (HOURLY_PRICE_USD[aws.instanceType] ?? 0) : 0,
  };
}
