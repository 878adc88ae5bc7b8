/** All activities, bound to one worker's context. */
import type { ActivityContext } from './context';
import { imageActivities } from './images';
import { vmActivities } from './vm';
import { runActivities } from './run';
import { snapshotActivities } from './snapshot';
import { healthActivities } from './health';
import { watchActivities } from './watch';
import { ec2Activities } from './ec2';
import { reconcileActivities } from './reconcile';
import { messageActivities } from './messages';
import { poolKeeperActivities } from './pool-keeper';
import { githubActivities } from './github';

export function createActivities(ctx: ActivityContext) {
  return {
    ...imageActivities(ctx),
    ...vmActivities(ctx),
    ...runActivities(ctx),
    ...snapshotActivities(ctx),
    ...healthActivities(ctx),
    ...watchActivities(ctx),
    ...ec2Activities(ctx),
    ...reconcileActivities(ctx),
    ...messageActivities(ctx),
    ...poolKeeperActivities(ctx),
    ...githubActivities(ctx),
  };
}
