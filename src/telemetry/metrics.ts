/**
 * Marina's own metrics, through OpenTelemetry and served for Prometheus (`telemetry.metrics.prometheus`).
 * Activities record what they see (image pulls, SSH and EC2 errors); the worker reads each pool's state
 * for the pool gauges. Job outcomes and stage times are recorded by the job workflow itself through the
 * SDK's replay-aware meter, so they come out of the Temporal endpoint (README "Operating Marina").
 *
 * Until a provider is installed every record is a no-op, so activities record unconditionally.
 */
import { metrics, type Attributes, type Counter, type Histogram } from '@opentelemetry/api';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { Resource } from '@opentelemetry/resources';
import type { PoolGauges } from './pool-gauges';

interface Instruments {
  pullBytes: Counter;
  pullSeconds: Histogram;
  sshErrors: Counter;
  ec2Errors: Counter;
}

let instruments: Instruments | undefined;
/** The latest gauges of each pool this worker reads; a pool that stopped answering is dropped. */
const pools = new Map<string, PoolGauges>();

function get(): Instruments {
  if (instruments) return instruments;
  const meter = metrics.getMeter('marina');
  instruments = {
    pullBytes: meter.createCounter('marina_image_pull_bytes', {
      description: 'Bytes fetched from the image store by pulls (cache hits fetch none)',
    }),
    pullSeconds: meter.createHistogram('marina_image_pull_seconds', {
      description: 'Time of each image pull that fetched bytes',
      advice: { explicitBucketBoundaries: [1, 5, 15, 30, 60, 120, 300, 600, 1200, 2400] },
    }),
    sshErrors: meter.createCounter('marina_ssh_errors', { description: 'SSH failures, by kind' }),
    ec2Errors: meter.createCounter('marina_ec2_errors', { description: 'EC2 API errors, by operation and code' }),
  };
  const gauge = (name: string, description: string, read: (g: PoolGauges) => Array<[Attributes, number]>) =>
    meter.createObservableGauge(name, { description }).addCallback((r) => {
      for (const [pool, g] of pools) for (const [attrs, v] of read(g)) r.observe(v, { pool, ...attrs });
    });
  gauge('marina_jobs', 'Jobs waiting for a slot (queued) and slots held (leased), by pool', (g) => [
    [{ state: 'queued' }, g.jobs.queued],
    [{ state: 'leased' }, g.jobs.leased],
  ]);
  gauge('marina_hosts', 'Hosts by phase (on-prem: serving or cordoned-<reason>; EC2: the fleet phase)', (g) =>
    Object.entries(g.hosts).map(([phase, n]) => [{ phase }, n]),
  );
  gauge('marina_oldest_lease_seconds', 'Age of the oldest lease held', (g) => [[{}, g.oldestLeaseSeconds]]);
  gauge('marina_oldest_queued_seconds', 'How long the oldest queued request has waited', (g) => [
    [{}, g.oldestQueuedSeconds],
  ]);
  gauge('marina_billed_host_hours', 'EC2 hosts held now: host-hours billed since allocation', (g) => [
    [{}, g.billedHostHours],
  ]);
  gauge('marina_billed_dollars', 'EC2 hosts held now: dollars billed since allocation, at list price', (g) => [
    [{}, g.billedDollars],
  ]);
  return instruments;
}

export function recordImagePull(bytes: number, seconds: number, attrs: { pool: string; host: string }): void {
  get().pullBytes.add(bytes, attrs);
  if (bytes > 0) get().pullSeconds.record(seconds, attrs);
}

export function recordSshError(kind: string): void {
  get().sshErrors.add(1, { kind });
}

export function recordEc2Error(operation: string, code: string): void {
  get().ec2Errors.add(1, { operation, code });
}

export function setPoolGauges(pool: string, g: PoolGauges | undefined): void {
  if (g) pools.set(pool, g);
  else pools.delete(pool);
}

/** Serves Marina's metrics at http://<bind>/metrics until the returned stop is called. */
export async function startMetricsServer(bind: string, serviceName = 'marina'): Promise<{ stop(): Promise<void> }> {
  const i = bind.lastIndexOf(':');
  const exporter = new PrometheusExporter({
    host: bind.slice(0, i),
    port: Number(bind.slice(i + 1)),
    preventServerStart: true,
  });
  await exporter.startServer();
  const provider = new MeterProvider({ readers: [exporter], resource: new Resource({ 'service.name': serviceName }) });
  metrics.setGlobalMeterProvider(provider);
  instruments = undefined; // made again, on the real provider
  get();
  return {
    async stop() {
      await provider.shutdown();
      metrics.disable();
      instruments = undefined;
    },
  };
}
