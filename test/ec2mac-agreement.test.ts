/**
 * One EC2 Mac machine, two clients: the emulator (as the SDK reaches it) and the simulator step
 * src/ec2mac/machine.ts. A scripted host life driven through each must show the same state
 * sequence, minute by minute: allocation, launch, park (stop, scrub, settle), relaunch, root-volume
 * replacement, a release refused while the instance stops, and one accepted once Occupied ends.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_TIMINGS, type MacTimings } from '../src/ec2mac/model';
import type { MacState } from '../src/ec2mac/machine';
import { DEFAULT_EMULATOR_TIMINGS, EmulatorClock, Ec2MacCloud, SEEDED_IMAGES } from '../src/emulator/ec2/cloud';
import { simulate, type Fleet, type FleetPolicy, type SimHost } from '../src/sim/engine';

const MIN = 60;
const HOUR = 3600;
const T0 = Date.parse('2026-03-02T00:00:00Z') / 1000;
const timings: MacTimings = { ...DEFAULT_TIMINGS, allocationSeconds: MIN, scrubSeconds: [HOUR, HOUR] };
const END = 26 * HOUR;

type Action = 'allocate' | 'launch' | 'terminate' | 'replace-root' | 'release';
/** Minute → action; each is also a moment where the two must agree on the verdict. */
const SCRIPT: Record<number, Action> = {
  0: 'allocate',
  10: 'launch',
  30: 'terminate', // a park: stopping 15 min, scrubbing 1 h, settling 5 min
  70: 'launch', // refused: still scrubbing
  180: 'launch',
  240: 'replace-root',
  300: 'terminate',
  1440: 'launch',
  1470: 'terminate',
  // Refused: the instance is stopping (Occupied). A retire asks again until AWS lets it go (the host
  // workflow every poll, the simulator's release itself): the host goes once Occupied ends, mid-scrub.
  1471: 'release',
};

type Trail = { minute: number; state: MacState | 'gone'; verdict?: boolean }[];

function emulatorTrail(): Trail {
  const clock = new EmulatorClock(0, T0);
  const cloud = new Ec2MacCloud(
    {
      region: 'us-east-1',
      zones: [{ name: 'us-east-1a', id: 'use1-az6', capacity: 5 }],
      quotaPerFamily: 5,
      timings: { ...DEFAULT_EMULATOR_TIMINGS, ...timings },
      seed: 1,
    },
    clock,
  );
  const trail: Trail = [];
  let host = '';
  let instance = '';
  let launches = 0;
  let retiring = false;
  for (let minute = 0; minute * MIN <= END; minute++) {
    const action = SCRIPT[minute];
    let verdict: boolean | undefined;
    const attempt = (f: () => void): boolean => {
      try {
        f();
        return true;
      } catch {
        return false;
      }
    };
    if (action === 'allocate') {
      host = cloud.allocateHosts({
        instanceType: 'mac2-m2.metal',
        zone: 'us-east-1a',
        quantity: 1,
        tags: new Map(),
      })[0]!;
      verdict = true;
    } else if (action === 'launch') {
      verdict = attempt(() => {
        instance = cloud.runInstance({
          imageId: SEEDED_IMAGES[0]!.id,
          hostId: host,
          tenancy: 'host',
          instanceType: 'mac2-m2.metal',
          clientToken: `l${++launches}`,
          tags: new Map(),
        }).id;
      });
    } else if (action === 'terminate') {
      verdict = attempt(() => cloud.endInstances([instance], 'terminate'));
    } else if (action === 'replace-root') {
      verdict = attempt(() =>
        cloud.replaceRootVolume({ instanceId: instance, deleteReplaced: true, clientToken: 'r1' }),
      );
    } else if (action === 'release') {
      verdict = cloud.releaseHosts([host]).successful.length === 1;
      retiring = !verdict;
    } else if (retiring && cloud.releaseHosts([host]).successful.length === 1) retiring = false;
    cloud.settle();
    const h = cloud.hosts.get(host);
    trail.push({ minute, state: h ? h.mac.state : 'gone', ...(verdict !== undefined ? { verdict } : {}) });
    clock.advance(MIN);
  }
  return trail;
}

function simulatorTrail(): Trail {
  const trail: Trail = [];
  let host: SimHost | undefined;
  const act = (fleet: Fleet, action: Action): boolean => {
    switch (action) {
      case 'allocate':
        fleet.allocate(1, false);
        host = fleet.hosts[fleet.hosts.length - 1];
        return true;
      case 'launch':
        return fleet.launch(host!);
      case 'terminate':
        return fleet.park(host!);
      case 'replace-root':
        return fleet.replaceRoot(host!);
      case 'release':
        return fleet.release(host!) && host!.mac.state === 'released';
    }
  };
  const script: FleetPolicy = {
    name: 'script',
    slotModel: 'nested',
    tickSeconds: MIN,
    onTick(fleet) {
      const minute = Math.round((fleet.now - T0) / MIN);
      if (minute * MIN > END) return;
      const action = SCRIPT[minute];
      const verdict = action ? act(fleet, action) : undefined;
      trail.push({ minute, state: host ? host.mac.state : 'gone', ...(verdict !== undefined ? { verdict } : {}) });
    },
    pickHost: (c) => c[0]!,
  };
  // One job at the end keeps the clock running; the script leaves it to a host of its own.
  const last = { start: T0 + END, duration: MIN, jobName: 'end', stageName: 's' };
  simulate(
    [{ ...last, start: T0, duration: 1 }, last],
    { ...script, onQueued: (f) => void f.allocate(1, true) },
    {
      timings: { ...timings, prepareSeconds: 0 },
      billing: 'minimum-of-metered',
      maxHosts: 5,
      zones: [{ name: 'a', hosts: 5 }],
      hourlyPriceUsd: 1,
      seed: 1,
    },
  );
  return trail.filter((x) => x.minute * MIN <= END);
}

describe('the EC2 Mac machine, as the emulator serves it and the simulator steps it', () => {
  it('goes through the same states, minute by minute, with the same verdicts', () => {
    const emu = emulatorTrail();
    const sim = simulatorTrail();
    const changes = (t: Trail) => t.filter((x, i) => i === 0 || x.state !== t[i - 1]!.state || x.verdict !== undefined);
    expect(changes(sim)).toEqual(changes(emu));
    // The life it scripts: every state of the machine is visited, both refusals happen.
    expect(new Set(emu.map((x) => x.state))).toEqual(
      new Set([
        'allocating',
        'available',
        'launching',
        'booting',
        'running',
        'replacing',
        'stopping',
        'scrubbing',
        'settling',
        'released',
      ]),
    );
    expect(emu.filter((x) => x.verdict === false).map((x) => x.minute)).toEqual([70, 1471]);
    // Released when the Occupied window after the terminate ends (20 min), 5 min into the scrub: not when the
    // scrub begins (15 min).
    expect(emu.find((x) => x.state === 'released')?.minute).toBe(1470 + 20);
  });
});
