/**
 * The EC2 Mac dedicated host as one state machine: state × event × time → state. The
 * emulator serves it, the simulator steps it, and the host workflow names its phases after
 * it (lifecycle.ts), so the three cannot drift apart. Sources: ../shared/reference/ec2-mac.md §0.
 *
 *   allocating ─► available ─run─► launching ─► booting ─► running ⇄ replacing
 *        ▲            │                  └────────┴──terminate──┴─► stopping (billed, occupied)
 *        │            └─ release (≥ 24 h)                                 ▼
 *   settling ◄──────────────────────────────────────────────── scrubbing (`pending`, unbilled)
 *   (listed `available`, launches still fail) ─► available
 *
 * A record is updated in place: the simulator steps hundreds of thousands of them and must
 * not allocate per event. Every timed state has exactly one way out, so a host holds one
 * timer (`until`); a caller that schedules events checks `until` to drop stale ones.
 */
import { MIN_ALLOCATION_SECONDS, scrubDuration, type MacTimings } from './model';

export const MAC_STATES = [
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
] as const;
export type MacState = (typeof MAC_STATES)[number];

export interface MacHost {
  state: MacState;
  readonly allocatedAt: number;
  /** When the current state began. */
  since: number;
  /** When the current timed state ends (undefined: it waits for a command). */
  until: number | undefined;
  /** Scrubbing seconds before the current state: AWS does not meter them. */
  scrubbedSeconds: number;
  /** The last TerminateInstances: ReleaseHosts answers Occupied for a while after it. */
  terminatedAt: number | undefined;
}

export type MacCommand = 'run-instance' | 'terminate' | 'replace-root' | 'release';

export type MacVerdict =
  | { ok: true }
  | {
      ok: false;
      code:
        | 'Client.HostMinAllocationPeriodUnexpired'
        | 'Client.InvalidHost.Occupied'
        | 'InsufficientCapacityOnHost'
        | 'IncorrectState';
      message: string;
    };

const OK: MacVerdict = { ok: true };

/** A live instance occupies the host: ReleaseHosts refuses and RunInstances finds no capacity. */
export function hasInstance(s: MacState): boolean {
  return s === 'launching' || s === 'booting' || s === 'running' || s === 'replacing' || s === 'stopping';
}

/** What DescribeHosts says: AWS shows only the scrub as `pending`; a settling host is listed `available`. */
export function awsHostState(s: MacState): 'available' | 'pending' | 'released' {
  if (s === 'released') return 'released';
  return s === 'scrubbing' || s === 'allocating' ? 'pending' : 'available';
}

export function allocateMac(now: number, t: MacTimings): MacHost {
  const h: MacHost = {
    state: 'allocating',
    allocatedAt: now,
    since: now,
    until: now + t.allocationSeconds,
    scrubbedSeconds: 0,
    terminatedAt: undefined,
  };
  return h;
}

/** Scrubbing seconds so far, the current scrub included. */
export function scrubbedSoFar(h: MacHost, now: number): number {
  return h.scrubbedSeconds + (h.state === 'scrubbing' ? now - h.since : 0);
}

function enter(h: MacHost, s: MacState, now: number, seconds?: number): void {
  if (h.state === 'scrubbing') h.scrubbedSeconds += now - h.since;
  h.state = s;
  h.since = now;
  h.until = seconds === undefined ? undefined : now + seconds;
}

/**
 * The timed transition due at `now` (the caller's event for `h.until`). Returns false if
 * none is due. `draw` is a uniform draw in [0, 1) for the scrub's length.
 */
export function macTimer(h: MacHost, now: number, t: MacTimings, draw: () => number): boolean {
  if (h.until === undefined || h.until > now) return false;
  const at = h.until;
  switch (h.state) {
    case 'allocating':
    case 'settling':
      enter(h, 'available', at);
      break;
    case 'launching':
      enter(h, 'booting', at, t.sshReadySeconds);
      break;
    case 'booting':
    case 'replacing':
      enter(h, 'running', at);
      break;
    case 'stopping':
      enter(h, 'scrubbing', at, scrubDuration(t, draw()));
      break;
    case 'scrubbing':
      enter(h, 'settling', at, t.settleSeconds);
      break;
    default:
      h.until = undefined;
      return false;
  }
  return true;
}

/** Applies every timed transition due by `now` (a zero-length state passes at once). */
export function macSettle(h: MacHost, now: number, t: MacTimings, draw: () => number): void {
  while (macTimer(h, now, t, draw));
}

/** A command from a caller (RunInstances, TerminateInstances, CreateReplaceRootVolumeTask, ReleaseHosts). */
export function macCommand(h: MacHost, c: MacCommand, now: number, t: MacTimings, hostId = 'h-?'): MacVerdict {
  switch (c) {
    case 'run-instance':
      if (h.state !== 'available') {
        return {
          ok: false,
          code: 'InsufficientCapacityOnHost',
          message: `There is no available capacity on host ${hostId} (${h.state === 'settling' ? 'it has just finished scrubbing' : h.state}).`,
        };
      }
      enter(h, 'launching', now, t.instanceRunningSeconds);
      return OK;
    case 'terminate':
      if (!hasInstance(h.state) || h.state === 'stopping') return refuse(h, c);
      h.terminatedAt = now;
      enter(h, 'stopping', now, t.stoppingSeconds);
      return OK;
    case 'replace-root':
      // AWS takes the task once the instance is `running`, SSH up or not.
      if (h.state !== 'running' && h.state !== 'booting') return refuse(h, c);
      enter(h, 'replacing', now, t.rootVolumeReplacementSeconds);
      return OK;
    case 'release': {
      const v = releaseCheck(h, now, t, hostId);
      if (v.ok) enter(h, 'released', now);
      return v;
    }
  }
}

function refuse(h: MacHost, c: MacCommand): MacVerdict {
  return { ok: false, code: 'IncorrectState', message: `cannot ${c} a host that is ${h.state}` };
}

/**
 * ReleaseHosts' verdict. Too young: refused until 24 h after allocation. Occupied: while an
 * instance lives, and for `occupiedSeconds` after a terminate whatever the host does meanwhile
 * (macOSWorld: "approximately 20 minutes" after TerminateInstances). Past that window a scrubbing
 * host is released (Aquarium Fish releases `pending` hosts), so both field reports hold.
 */
export function releaseCheck(h: MacHost, now: number, t: MacTimings, hostId = 'h-?', instanceType = 'mac'): MacVerdict {
  const releasableAt = h.allocatedAt + MIN_ALLOCATION_SECONDS;
  if (now < releasableAt) {
    return {
      ok: false,
      code: 'Client.HostMinAllocationPeriodUnexpired',
      message:
        `Unable to release Dedicated Host ${hostId}. ${instanceType} hosts must be allocated to your AWS ` +
        `account for at least 24 hour(s). You can release this host any time after ${new Date(releasableAt * 1000).toISOString()}.`,
    };
  }
  const recent = h.terminatedAt !== undefined && now - h.terminatedAt < t.occupiedSeconds;
  if (hasInstance(h.state) || recent || h.state === 'allocating') {
    return {
      ok: false,
      code: 'Client.InvalidHost.Occupied',
      message: `Dedicated host '${hostId}' cannot be released as it is occupied.`,
    };
  }
  if (h.state === 'released') return refuse(h, 'release');
  return OK;
}

/** The host is gone whatever its state (released behind the caller's back, or the books close). */
export function macForget(h: MacHost, now: number): void {
  if (h.state !== 'released') enter(h, 'released', now);
}

/** ReleaseHosts' verdict for a host known only by its age and whether an instance lives on it. */
export function releaseVerdict(
  host: { id: string; instanceType: string; allocatedAt: number; hasLiveInstance: boolean },
  now: number,
): MacVerdict {
  const h: MacHost = {
    state: host.hasLiveInstance ? 'running' : 'available',
    allocatedAt: host.allocatedAt,
    since: host.allocatedAt,
    until: undefined,
    scrubbedSeconds: 0,
    terminatedAt: undefined,
  };
  return releaseCheck(h, now, { occupiedSeconds: 0 } as MacTimings, host.id, host.instanceType);
}
