/**
 * The Temporal SDK's side of telemetry, set once per process through `Runtime.install`: its own metrics
 * (task latencies, slots, polls, sticky cache) and the metrics workflows record (workflows/job-metrics.ts),
 * served for Prometheus at `telemetry.metrics.temporalPrometheus`.
 */
import { DefaultLogger, Runtime, type LogLevel } from '@temporalio/worker';
import type { LoadedConfig } from '../config/load';

export function installRuntime(config: LoadedConfig | undefined, level: LogLevel): void {
  const bind = config?.telemetry.metrics?.temporalPrometheus;
  Runtime.install({
    logger: new DefaultLogger(level),
    // Signals are ours, not the SDK's: a second one must be able to end the process at once.
    shutdownSignals: [],
    ...(bind
      ? {
          telemetryOptions: {
            metrics: {
              prometheus: { bindAddress: bind, useSecondsForDurations: true, countersTotalSuffix: true },
              // Marina's workflow metrics keep their own marina_ names; the SDK's get temporal_.
              metricPrefix: 'temporal_',
            },
          },
        }
      : {}),
  });
}
