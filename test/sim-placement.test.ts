/**
 * One placement: the simulator's Marina places a job where the pool core would, because both ask
 * placeQueue (src/policy/placement.ts). Random pools of 2-slot hosts with random loads; the pool core
 * steps a tick with one queued job, the simulator picks among the same hosts, in the same order.
 */
import { describe, expect, it } from 'vitest';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import { newPoolState, step, type PoolCommand } from '../src/policy/pool-core';
import type { PoolSettings } from '../workflows/definitions';
import { allocateMac } from '../src/ec2mac/machine';
import { DEFAULT_TIMINGS } from '../src/ec2mac/model';
import { placeOnPool, simHostName, SIM_HOST_RESOURCES } from '../src/sim/placement';
import { marinaPolicy } from '../src/sim/policies';
import type { SimHost } from '../src/sim/types';

function simHost(id: number, busy: number): SimHost {
  return {
    id,
    zone: 'a',
    allocatedAt: 0,
    phase: 'ready',
    mac: allocateMac(0, DEFAULT_TIMINGS),
    slots: 2,
    busy,
    idleSince: 0,
    phaseSince: 0,
    pendingSeconds: 0,
    jobsServed: 0,
    jobsSinceClean: 0,
    retiring: false,
    launchOnAvailable: false,
    timer: 0,
    phaseIndex: 0,
    boundJob: -1,
    index: id,
  };
}

/** Where the pool core grants one queued job, on hosts named as the simulator names them. */
function poolPlaces(hosts: SimHost[]): string {
  const settings: PoolSettings = {
    hosts: hosts.map((h) => ({ name: simHostName(h), resources: SIM_HOST_RESOURCES, labels: {} })),
    healthCheckSeconds: 30,
    leaseCheckSeconds: 15,
  };
  const state = newPoolState('p');
  let n = 0;
  const env = { now: 1_000_000, settings, newId: () => `id-${++n}` };
  step(state, { type: 'settings', settings }, env);
  for (const h of hosts)
    for (let i = 0; i < h.busy; i++)
      state.leases.push({
        leaseId: `l${h.id}-${i}`,
        jobWorkflowId: `job/${h.id}-${i}`,
        host: simHostName(h),
        resources: { vm: 1 },
        grantedAt: 0,
      });
  step(
    state,
    { type: 'lease-requested', request: { jobWorkflowId: 'job/new', resources: { vm: 1 }, labels: {} } },
    env,
  );
  const cmds: PoolCommand[] = step(state, { type: 'tick' }, env).commands;
  const grant = cmds.flatMap((c) => (c.kind === 'send' && c.message.kind === 'granted' ? [c.message.lease.host] : []));
  expect(grant).toHaveLength(1);
  return grant[0]!;
}

describe('placement: the simulator and the pool', () => {
  it('put a job on the same host, for 300 random pools', () => {
    const rng = xoroshiro128plus(15);
    for (let round = 0; round < 300; round++) {
      const k = uniformInt(rng, 1, 8);
      const hosts = Array.from({ length: k }, (_, i) => simHost(i + 1, uniformInt(rng, 0, 2)));
      const candidates = hosts.filter((h) => h.busy < h.slots);
      if (candidates.length === 0) continue;
      const sim = placeOnPool(candidates);
      expect(simHostName(sim), `round ${round}: loads ${hosts.map((h) => h.busy).join(',')}`).toBe(poolPlaces(hosts));
    }
  });

  it("is the simulator's Marina placement", () => {
    const hosts = [simHost(1, 1), simHost(2, 0), simHost(3, 1)];
    const pick = marinaPolicy().pickHost(hosts, undefined as never);
    expect(simHostName(pick)).toBe(poolPlaces(hosts));
  });
});
