/**
 * Workflow interceptors (bundled with every build, src/worker.ts): a job's trace goes from its submit to
 * each of its activities. The client's start span travels in the `_tracer-data` header (Temporal's
 * OpenTelemetry convention); this hands that header on to every activity the job schedules, where the
 * activity interceptor opens its span under it.
 *
 * It makes no span of its own. Temporal's workflow interceptors do, with the workflow's seeded random
 * numbers, which shifts every uuid4 drawn after them: the child ids of a running pool would change, and
 * its history would no longer replay. Passing a header draws nothing, so a workflow replays the same,
 * traced or not. Only jobs carry it: a pool lives for months, and one trace per pool would never end.
 */
import { workflowInfo, type Payload, type WorkflowInterceptorsFactory } from '@temporalio/workflow';

const TRACE_HEADER = '_tracer-data';
const TRACED_TYPES = new Set(['jobWorkflow']);

export const interceptors: WorkflowInterceptorsFactory = () => {
  let trace: Payload | undefined;
  return {
    inbound: [
      {
        async execute(input, next) {
          if (TRACED_TYPES.has(workflowInfo().workflowType)) trace = input.headers[TRACE_HEADER];
          return next(input);
        },
      },
    ],
    outbound: [
      {
        async scheduleActivity(input, next) {
          return next(trace ? { ...input, headers: { ...input.headers, [TRACE_HEADER]: trace } } : input);
        },
        async scheduleLocalActivity(input, next) {
          return next(trace ? { ...input, headers: { ...input.headers, [TRACE_HEADER]: trace } } : input);
        },
      },
    ],
  };
};
