// The activity signatures workflows see; a type-only import keeps Node code out of the workflow bundle.
import type { createActivities } from './index';

export type Activities = ReturnType<typeof createActivities>;
