/** When things happened to a workflow, read from its history (the server's clock, shared here with the bench's). */
import type { Client } from '@temporalio/client';

interface Timestamp {
  seconds?: { toString(): string } | number | null;
  nanos?: number | null;
}

const ms = (t: Timestamp | null | undefined): number =>
  t ? Number(String(t.seconds ?? 0)) * 1000 + (t.nanos ?? 0) / 1e6 : NaN;

export async function eventTimes(client: Client, workflowId: string) {
  const events = (await client.workflow.getHandle(workflowId).fetchHistory()).events ?? [];
  const scheduled = new Map<string, string>();
  for (const e of events)
    if (e.activityTaskScheduledEventAttributes)
      scheduled.set(String(e.eventId), e.activityTaskScheduledEventAttributes.activityType?.name ?? '');
  return {
    /** The last completion of an activity of this type. */
    activityDone(type: string): number {
      const done = events.filter(
        (e) =>
          e.activityTaskCompletedEventAttributes &&
          scheduled.get(String(e.activityTaskCompletedEventAttributes.scheduledEventId)) === type,
      );
      return ms(done.at(-1)?.eventTime);
    },
    /** The first signal of this name the workflow received. */
    signal(name: string): number {
      return ms(events.find((e) => e.workflowExecutionSignaledEventAttributes?.signalName === name)?.eventTime);
    },
    /** The last signal the workflow sent (a job's last is its lease's release). */
    signalSent(): number {
      return ms(events.filter((e) => e.signalExternalWorkflowExecutionInitiatedEventAttributes).at(-1)?.eventTime);
    },
  };
}
