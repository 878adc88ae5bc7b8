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
]);

export function classifyEc2Error(code: string): Ec2ErrorClass {
  if (code === 'InsufficientHostCapacity' || code === 'UnavailableHostRequirements') return 'next-zone';
  if (FATAL.has(code) || code.startsWith('InvalidAMIID.') || code.startsWith('InvalidAMIName.')) return 'fatal';
  // Throttling, 5xx, a host still scrubbing or handing off (InsufficientCapacityOnHost), and
  // eventual consistency (a new id not yet visible): the same call succeeds later.
  return 'retry';
}
