/**
 * A worker's metrics endpoint (`telemetry.metrics.prometheus`): serves Marina's metrics and keeps the
 * pool gauges fresh by reading each configured pool's state. Every worker reads every pool, so the pool
 * gauges are the same on each: aggregate them with max by (pool), not sum (deploy/grafana-marina.json).
 */
import type { Client } from '@temporalio/client';
import type { LoadedConfig } from '../config/load';
import { poolStateQuery, poolWorkflowId } from '../../workflows/definitions';
import { poolGauges } from './pool-gauges';
import { setPoolGauges, startMetricsServer } from './metrics';

export async function startWorkerMetrics(config: LoadedConfig, client: Client): Promise<{ stop(): Promise<void> }> {
  const bind = config.telemetry.metrics?.prometheus;
  if (!bind) return { stop: async () => undefined };
  const server = await startMetricsServer(bind, config.telemetry.traces?.serviceName);
  let reading: Promise<void> | undefined;
  const read = async () => {
    for (const p of config.pools) {
      try {
        const view = await client.workflow.getHandle(poolWorkflowId(p.name)).query(poolStateQuery);
        const aws = p.aws
          ? { timeScale: p.aws.timeScale, billing: p.aws.billing, instanceType: p.aws.instanceType }
          : undefined;
        setPoolGauges(p.name, poolGauges(view, Date.now(), aws));
      } catch {
        // Not running, or no worker answers: no figure is better than a stale one.
        setPoolGauges(p.name, undefined);
      }
    }
  };
  const tick = () => {
    reading ??= read().finally(() => (reading = undefined));
  };
  tick();
  const timer = setInterval(tick, (config.telemetry.metrics?.poolPollSeconds ?? 15) * 1000);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await reading;
      await server.stop();
    },
  };
}
