/** The billing ledger: billed host time per host under each reading of AWS's rules, scrubbing apart (ec2-mac §1.6). */
import { BILLING_MODES, billedSeconds, type BillingMode } from '../../ec2mac/model';
import { scrubbedSoFar } from '../../ec2mac/machine';
import type { Host, HostState } from './resources';

/** What the ledger says about one host: billed time under each reading, scrubbing apart. */
export interface LedgerEntry {
  hostId: string;
  instanceType: string;
  zone: string;
  state: HostState;
  allocatedAt: string;
  releasedAt?: string;
  /** The AllocateHosts ClientToken it was made with: two hosts with one token would be a double allocation. */
  clientToken?: string;
  tags: Record<string, string>;
  allocatedSeconds: number;
  scrubbingSeconds: number;
  billedSeconds: Record<BillingMode, number>;
}

export interface Ledger {
  now: string;
  hosts: LedgerEntry[];
  stillAllocated: string[];
  billedHours: Record<BillingMode, number>;
  scrubbingHours: number;
}

/** Every host ever allocated (forgotten ones included: they were billed until they went), as of `now`. */
export function ledgerOf(all: Iterable<Host>, now: number): Ledger {
  const billedHours = Object.fromEntries(BILLING_MODES.map((m) => [m, 0])) as Record<BillingMode, number>;
  let scrubbingHours = 0;
  const hosts: LedgerEntry[] = [];
  for (const h of all) {
    const end = h.releasedAt ?? now;
    const scrubbing = scrubbedSoFar(h.mac, now);
    const allocated = end - h.allocatedAt;
    const billed = Object.fromEntries(BILLING_MODES.map((m) => [m, billedSeconds(allocated, scrubbing, m)])) as Record<
      BillingMode,
      number
    >;
    for (const m of BILLING_MODES) billedHours[m] += billed[m] / 3600;
    scrubbingHours += scrubbing / 3600;
    hosts.push({
      hostId: h.id,
      instanceType: h.instanceType,
      zone: h.zone.name,
      state: h.state,
      allocatedAt: new Date(h.allocatedAt * 1000).toISOString(),
      ...(h.releasedAt ? { releasedAt: new Date(h.releasedAt * 1000).toISOString() } : {}),
      ...(h.clientToken ? { clientToken: h.clientToken } : {}),
      tags: Object.fromEntries(h.tags),
      allocatedSeconds: allocated,
      scrubbingSeconds: scrubbing,
      billedSeconds: billed,
    });
  }
  return {
    now: new Date(now * 1000).toISOString(),
    hosts,
    stillAllocated: hosts
      .filter((h) => h.state !== 'released' && h.state !== 'released-permanent-failure')
      .map((h) => h.hostId),
    billedHours,
    scrubbingHours,
  };
}
