/** The current trace, handed to a command on a host: Tart traces with OpenTelemetry when TRACEPARENT is set. */
import { context, propagation } from '@opentelemetry/api';

/** A W3C traceparent: version, trace id, parent span id, flags. */
const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** `TRACEPARENT=… ` to put before a shell command when this activity runs in a trace; '' otherwise. */
export function traceparentPrefix(): string {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  // Checked, so nothing but hex and dashes reaches the shell.
  const tp = carrier.traceparent;
  return tp && TRACEPARENT.test(tp) ? `TRACEPARENT=${tp} ` : '';
}
