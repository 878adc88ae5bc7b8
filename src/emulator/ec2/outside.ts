/**
 * What AWS (or someone else on the account) does to a host behind the caller's back, for fault injection through
 * the admin API: a health change, or a release outside the caller.
 */
import { macForget } from '../../ec2mac/machine';
import type { Ec2MacCloud } from './cloud';
import { isHeld, type Host } from './resources';
import { Ec2Error } from './wire';

export type HostHealth = 'under-assessment' | 'permanent-failure' | 'available';
export type VanishedHost = { hostId: string; instanceId?: string; listed: boolean };

/** A host by id as AWS sees it (a new one too, whatever EC2's consistency shows callers). */
function adminHost(cloud: Ec2MacCloud, id: string): Host {
  cloud.settle();
  const h = cloud.hosts.get(id);
  if (!h) throw new Ec2Error('InvalidHostID.NotFound', `The host ID '${id}' does not exist`);
  return h;
}

/** AWS moves a host into a side state (its instance keeps running, as AWS warns). */
export function setHostHealth(cloud: Ec2MacCloud, id: string, state: HostHealth): void {
  const h = adminHost(cloud, id);
  if (!isHeld(h)) throw new Ec2Error('InvalidHostState', `Host ${id} is released.`);
  h.state = state;
}

/**
 * The host is released behind the caller's back, as when someone runs `aws ec2 release-hosts` (after
 * terminating its instance) or AWS reclaims it. Its instance is terminated at once and the host is `released`.
 * Unless `keepListed`, both then drop out of every listing, as released hosts and terminated instances do after
 * a while on AWS: DescribeHosts answers `InvalidHostID.NotFound`, DescribeInstances `InvalidInstanceID.NotFound`,
 * ReleaseHosts `Client.InvalidHostID.NotFound`. The ledger keeps the host (it was billed until now).
 */
export function vanishHost(cloud: Ec2MacCloud, id: string, keepListed: boolean): VanishedHost {
  const h = adminHost(cloud, id);
  const now = cloud.clock.now();
  const instanceId = h.instanceId;
  const i = instanceId ? cloud.instances.get(instanceId) : undefined;
  if (i && i.state !== 'terminated') {
    i.state = 'terminated';
    i.terminatedAt = now;
    i.until = i.sshAt = undefined;
  }
  h.instanceId = undefined;
  if (isHeld(h)) {
    macForget(h.mac, now);
    h.state = h.state === 'permanent-failure' ? 'released-permanent-failure' : 'released';
    h.releasedAt = now;
  }
  if (!keepListed) {
    cloud.hosts.delete(id);
    cloud.forgotten.set(id, h);
    for (const x of [...cloud.instances.values()]) if (x.hostId === id) cloud.instances.delete(x.id);
  }
  return { hostId: id, ...(instanceId ? { instanceId } : {}), listed: keepListed };
}
