/**
 * What an EC2 error means for a host's life (ec2-mac.md §2.3–2.4): retry the same call
 * later, try the next zone, or stop because no retry can succeed. Pure, so it is tested
 * once and shared by the activities and the reconciler.
 */
export type Ec2ErrorClass = 'retry' | 'next-zone' | 'fatal';

const FATAL = new Set([
  'HostLimitExceeded',
  'UnsupportedHostConfiguration',
  'InvalidHostConfiguration',
  'UnsupportedInstanceTypeOnHost',
  'InvalidParameterValue',
  'InvalidParameterCombination',
  'MissingParameter',
  'IdempotentParameterMismatch',
  'InvalidClientToken',
  'AuthFailure',
  'UnauthorizedOperation',
  'OptInRequired',
  'InvalidAction',
  'UnknownParameter',
  // A DryRun's answer: nothing was done, and sending it again does nothing either.
  'DryRunOperation',
]);

export function classifyEc2Error(code: string): Ec2ErrorClass {
  if (code === 'InsufficientHostCapacity' || code === 'UnavailableHostRequirements') return 'next-zone';
  // A malformed id stays malformed however often it is sent.
  if (FATAL.has(code) || code.startsWith('InvalidAMIID.') || code.startsWith('InvalidAMIName.') || code.endsWith('.Malformed'))
    return 'fatal';
  // Throttling, 5xx, a host still scrubbing or handing off (InsufficientCapacityOnHost), and
  // eventual consistency (a new id not yet visible): the same call succeeds later.
  return 'retry';
}

/**
 * EC2's codes for an id it does not know (ec2-mac.md §2.3: both spellings of the host code appear in AWS's
 * list; ReleaseHosts reports it per host with the `Client.` prefix).
 */
const HOST_NOT_FOUND_CODES = new Set([
  'InvalidHostID.NotFound',
  'InvalidHostId.NotFound',
  'Client.InvalidHostID.NotFound',
]);
const INSTANCE_NOT_FOUND_CODES = new Set(['InvalidInstanceID.NotFound', 'Client.InvalidInstanceID.NotFound']);
export const isHostNotFound = (code: string | undefined): boolean =>
  code !== undefined && HOST_NOT_FOUND_CODES.has(code);
export const isInstanceNotFound = (code: string | undefined): boolean =>
  code !== undefined && INSTANCE_NOT_FOUND_CODES.has(code);

/**
 * When "not found" is final. EC2 is eventually consistent: an id that RunInstances (or AllocateHosts) has just
 * returned can be unknown to the next call for a while, and AWS advises describing again with backoff, from a
 * few seconds up to a few minutes, before concluding anything. So:
 *
 * - a resource this workflow (or this activity attempt) has already seen described is gone at the first
 *   not-found: it existed, and EC2 does not forget an id it has shown except when the resource is gone;
 * - a resource never seen is gone only after NOT_FOUND_LOOKUPS not-founds in a row spread over at least
 *   NOT_FOUND_WINDOW_MS (real time: propagation inside AWS does not follow an emulator's compressed clock).
 *
 * Hosts are always "seen": allocateHost returns only after DescribeHosts answered for the host, and the
 * reconciler adopts hosts it found with DescribeHosts. Instances are seen once waitInstanceReady found them
 * running; until then (a launch, a park right after a launch) the streak rule applies.
 */
export const NOT_FOUND_LOOKUPS = 3;
export const NOT_FOUND_WINDOW_MS = 5 * 60_000;

export interface NotFoundStreak {
  count: number;
  /** When the first not-found of the streak was seen (ms). */
  firstMs?: number;
}

/** Records one not-found in the streak; true when the resource is to be taken as gone for good. */
export function notFoundIsFinal(seen: boolean, streak: NotFoundStreak, nowMs: number): boolean {
  streak.count++;
  streak.firstMs ??= nowMs;
  return seen || (streak.count >= NOT_FOUND_LOOKUPS && nowMs - streak.firstMs >= NOT_FOUND_WINDOW_MS);
}

/** How long to wait before looking again at a resource not found yet (never seen): 10 s doubling to 2 min. */
export const notFoundRecheckMs = (streak: NotFoundStreak): number =>
  Math.min(10_000 * 2 ** Math.max(0, streak.count - 1), 120_000);

/**
 * Failure types of the activities that look a host or an instance up (activities/ec2.ts): not retryable, since
 * no retry brings a host back. `HostNotFound`: EC2 does not know the host id (released outside Marina and dropped
 * from listings, or reclaimed by AWS). `HostReleased`: EC2 lists it released (by someone else: Marina's own
 * release ends its workflow). `InstanceNotFound`: EC2 does not know the instance id (by the not-found rule).
 */
export const HOST_NOT_FOUND = 'HostNotFound';
export const HOST_RELEASED = 'HostReleased';
export const INSTANCE_NOT_FOUND = 'InstanceNotFound';
export const RELEASED_STATES: ReadonlySet<string> = new Set(['released', 'released-permanent-failure']);
