/**
 * This process's tracer (`telemetry.traces`): registered once, exporting over OTLP/HTTP. Used by the
 * worker (src/telemetry/tracing.ts) and by clients, where a job's trace starts at its submit.
 */
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { BatchSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { Resource } from '@opentelemetry/resources';
import { OpenTelemetryWorkflowClientInterceptor } from '@temporalio/interceptors-opentelemetry/lib/client';
import type { LoadedConfig } from '../config/load';

let provider: NodeTracerProvider | undefined;
let exporting: SpanProcessor | undefined;

/**
 * Registers this process's tracer if the config asks for traces (once: the global provider is the
 * process's). Answers the processor spans go out through, or undefined when untraced.
 */
export function ensureProcessTracer(config: LoadedConfig): SpanProcessor | undefined {
  const traces = config.telemetry.traces;
  if (!traces) return undefined;
  if (!provider) {
    exporting = new BatchSpanProcessor(new OTLPTraceExporter({ url: traces.otlpEndpoint }), {
      scheduledDelayMillis: 1000,
    });
    provider = new NodeTracerProvider({
      resource: new Resource({ 'service.name': traces.serviceName }),
      spanProcessors: [exporting],
    });
    // Also the AsyncLocalStorage context manager and the W3C propagator: an activity's span is current
    // through its awaits, and injects as a traceparent.
    provider.register();
  }
  return exporting;
}

/** Sends what is buffered: before a short-lived process (the CLI) exits. */
export async function flushTraces(): Promise<void> {
  await provider?.forceFlush();
}

/** The client side: a job's trace starts where it is submitted. */
export const clientTracingInterceptors = () => ({ workflow: [new OpenTelemetryWorkflowClientInterceptor()] });
