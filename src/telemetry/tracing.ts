/**
 * Traces (`telemetry.traces`): one trace per job, from its submit to each of its activities, exported over
 * OTLP/HTTP. The client's start span travels in a header, which workflows/trace-propagation.ts hands on to
 * the job's activities, where Temporal's activity interceptor opens their spans; activities pass the
 * context on to Tart as TRACEPARENT (src/telemetry/trace-context.ts).
 */
import {
  OpenTelemetryActivityInboundInterceptor,
  OpenTelemetryActivityOutboundInterceptor,
} from '@temporalio/interceptors-opentelemetry/lib/worker';
import type { WorkerOptions } from '@temporalio/worker';
import type { LoadedConfig } from '../config/load';
import { ensureProcessTracer, flushTraces } from './tracer';

export interface Tracing {
  /** The activity interceptors, under which each activity's span opens. */
  interceptors: NonNullable<WorkerOptions['interceptors']>;
  stop(): Promise<void>;
}

/** The worker's hooks; the tracer itself is registered only when the config asks for traces. */
export function startTracing(config: LoadedConfig): Tracing {
  ensureProcessTracer(config);
  return {
    interceptors: {
      activity: [
        (ctx) => ({
          inbound: new OpenTelemetryActivityInboundInterceptor(ctx),
          outbound: new OpenTelemetryActivityOutboundInterceptor(ctx),
        }),
      ],
    },
    stop: flushTraces,
  };
}
