/**
 * Issue #21, metrics and traces, against real peers: a real Prometheus (Debian's) scrapes a worker process
 * and the test reads the figures back through Prometheus's HTTP API; an OTLP/HTTP receiver on loopback
 * collects the spans, and the job's trace must run from its submit (the CLI) to its cleanup, and on to the
 * emulated host's Tart as TRACEPARENT.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LoadedConfig } from '../src/config/load';
import { freePort } from '../src/emulator/processes';
import { SEED_IMAGE } from '../src/emulator/seed-image';
import { jobWorkflowId } from '../src/domain/job';
import { eventually, fileConfig, freshImage, runCli, spawnWorker, stack, uniqueId } from './helpers';

const POOL = 'telemetry';
const DEAD_POOL = 'telemetry-dead';
let config: LoadedConfig;
let worker: ChildProcess;
let prometheus: ChildProcess;
let promUrl: string;
let otlp: Server;
const spans: OtlpSpan[] = [];

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  service: string;
  attributes?: { key: string; value: { stringValue?: string } }[];
}

/** Collects OTLP/HTTP JSON trace exports (what @opentelemetry/exporter-trace-otlp-http sends). */
function otlpReceiver(): Server {
  return createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      if (req.url === '/v1/traces' && req.headers['content-type']?.includes('json')) {
        const msg = JSON.parse(body) as {
          resourceSpans: {
            resource: { attributes: { key: string; value: { stringValue?: string } }[] };
            scopeSpans: { spans: Omit<OtlpSpan, 'service'>[] }[];
          }[];
        };
        for (const rs of msg.resourceSpans) {
          const service = rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue ?? '';
          for (const ss of rs.scopeSpans) for (const s of ss.spans) spans.push({ ...s, service });
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      } else res.writeHead(415).end();
    });
  });
}

async function promQuery(query: string): Promise<Array<{ metric: Record<string, string>; value: number }>> {
  const r = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(query)}`);
  const body = (await r.json()) as {
    status: string;
    data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> };
  };
  expect(body.status).toBe('success');
  return body.data.result.map((x) => ({ metric: x.metric, value: Number(x.value[1]) }));
}

/** One series' value once Prometheus has it (and it passes `ok`). */
const promValue = async (query: string, ok: (v: number) => boolean = () => true) =>
  (
    await eventually(
      `Prometheus to answer ${query}`,
      async () => {
        const [first] = await promQuery(query);
        // Boxed: 0 is an answer too.
        return first && ok(first.value) ? { value: first.value } : undefined;
      },
      60_000,
    )
  ).value;

beforeAll(async () => {
  const [marinaPort, temporalPort, otlpPort, promPort, deadPort] = await Promise.all(
    Array.from({ length: 5 }, () => freePort()),
  );
  otlp = otlpReceiver();
  await new Promise<void>((r) => otlp.listen(otlpPort, '127.0.0.1', r));
  config = fileConfig(POOL, (raw) => {
    raw.telemetry = {
      metrics: {
        prometheus: `127.0.0.1:${marinaPort}`,
        temporalPrometheus: `127.0.0.1:${temporalPort}`,
        poolPollSeconds: 1,
      },
      traces: { otlpEndpoint: `http://127.0.0.1:${otlpPort}/v1/traces`, serviceName: 'marina-test' },
    };
    // A pool whose only host is down: its health checks are the SSH errors the metrics must count.
    raw.pools.push({
      ...raw.pools[0],
      name: DEAD_POOL,
      hosts: [{ name: 'mac-dead', address: '127.0.0.1', ssh: { port: deadPort }, labels: { os: 'macos' } }],
    });
  });
  worker = spawnWorker(config);

  const dir = mkdtempSync(join(tmpdir(), 'marina-prometheus-'));
  writeFileSync(
    join(dir, 'prometheus.yml'),
    [
      'global: { scrape_interval: 1s, evaluation_interval: 1s }',
      'scrape_configs:',
      `  - job_name: marina`,
      `    static_configs: [{ targets: ['127.0.0.1:${marinaPort}'] }]`,
      `  - job_name: temporal-sdk`,
      `    static_configs: [{ targets: ['127.0.0.1:${temporalPort}'] }]`,
      '',
    ].join('\n'),
  );
  prometheus = spawn(
    'prometheus',
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
    ],
    { stdio: 'ignore' },
  );
  promUrl = `http://127.0.0.1:${promPort}`;
  await eventually(
    'Prometheus ready',
    async () => (await fetch(`${promUrl}/-/ready`).catch(() => undefined))?.ok,
    60_000,
  );
});

afterAll(async () => {
  for (const p of [worker, prometheus]) {
    if (p && p.exitCode === null) {
      p.kill('SIGTERM');
      await new Promise((r) => p.once('exit', r));
    }
  }
  await new Promise((r) => otlp?.close(r));
});

describe('telemetry', () => {
  it('a real Prometheus scrapes the worker: job outcomes and stage times, pool gauges, image pulls, SSH errors, and the SDK’s own metrics', async () => {
    // Both scrape targets up: the worker serves both endpoints.
    await eventually(
      'both targets up',
      async () => (await promQuery('up')).filter((s) => s.value === 1).length === 2,
      60_000,
    );
    const image = await freshImage(config, uniqueId('telemetry-img').toLowerCase(), 8);
    const ok = await runCli(config, ['run', '--pool', POOL, '--image', image, '--script', 'echo fine']);
    expect(ok.code).toBe(0);
    const failed = await runCli(config, ['run', '--pool', POOL, '--image', SEED_IMAGE, '--script', 'exit 3']);
    expect(failed.code).toBe(3);

    // Recorded by the job workflows (once each, not on replay), served on the SDK's endpoint.
    expect(await promValue(`sum(marina_jobs_finished_total{pool="${POOL}",state="succeeded"})`, (v) => v >= 1)).toBe(1);
    expect(await promValue(`sum(marina_jobs_finished_total{pool="${POOL}",state="failed"})`, (v) => v >= 1)).toBe(1);
    expect(await promValue(`sum(marina_job_stage_seconds_count{pool="${POOL}",stage="queue"})`, (v) => v >= 2)).toBe(2);
    // The pull of the fresh image fetched bytes from the store.
    expect(await promValue(`sum(marina_image_pull_bytes_total{pool="${POOL}"})`, (v) => v > 0)).toBeGreaterThan(0);
    // The pool gauges: every host of the pool serving, none queued once the jobs are done.
    const hosts = config.pools.find((p) => p.name === POOL)!.hosts.length;
    expect(await promValue(`marina_hosts{pool="${POOL}",phase="serving"}`, (v) => v === hosts)).toBe(hosts);
    expect(await promValue(`marina_jobs{pool="${POOL}",state="queued"}`)).toBe(0);
    // The dead host: its failed health checks counted as SSH errors, and the host shown cordoned.
    expect(await promValue(`sum(marina_ssh_errors_total{kind="refused"})`, (v) => v > 0)).toBeGreaterThan(0);
    expect(await promValue(`marina_hosts{pool="${DEAD_POOL}",phase="cordoned-health"}`, (v) => v === 1)).toBe(1);
    // The shipped dashboard's every query is valid PromQL on this Prometheus, and the job panels show data.
    const dashboard = JSON.parse(readFileSync('deploy/grafana/marina-dashboard.json', 'utf8')) as {
      panels: { title: string; targets: { expr: string }[] }[];
    };
    for (const panel of dashboard.panels)
      for (const t of panel.targets) {
        const series = await promQuery(t.expr.replaceAll('$pool', '.*'));
        if (/Jobs|Hosts by phase|Queue wait/.test(panel.title)) expect(series.length, panel.title).toBeGreaterThan(0);
      }
    // Temporal's own: the worker's workflow tasks.
    expect(
      await promValue('sum({__name__=~"temporal_workflow_task_execution_latency(_seconds)?_count"})', (v) => v > 0),
    ).toBeGreaterThan(0);
  });

  it('traces a job from its submit to its cleanup, and hands the trace to Tart on the host', async () => {
    const id = uniqueId('traced');
    const r = await runCli(config, [
      'run',
      '--pool',
      POOL,
      '--image',
      SEED_IMAGE,
      '--id',
      id,
      '--script',
      'echo traced',
    ]);
    expect(r.code).toBe(0);
    // The submit's span, from the CLI process.
    const start = await eventually(
      'the CLI start span',
      async () =>
        spans.find(
          (s) =>
            s.name === 'StartWorkflow:jobWorkflow' &&
            s.attributes?.some((a) => a.key === 'temporalWorkflowId' && a.value.stringValue === jobWorkflowId(id)),
        ),
      30_000,
    );
    const inTrace = (name: string) => spans.find((s) => s.traceId === start.traceId && s.name === name);
    // Every activity of the job, from the worker process, under the submit's span: the same trace.
    const cleanup = await eventually(
      'the cleanup span in the same trace',
      async () => inTrace('RunActivity:destroyVm'),
      30_000,
    );
    // Every job first tries a boot from its host's cache (bootCachedVm), hit or miss.
    for (const name of ['RunActivity:resolveImage', 'RunActivity:bootCachedVm', 'RunActivity:runScript'])
      expect(inTrace(name), name).toMatchObject({ parentSpanId: start.spanId, service: 'marina-test' });
    expect(cleanup.parentSpanId).toBe(start.spanId);
    // Tart on the job's host was called inside the trace (the stand-in notes the TRACEPARENT it was given).
    const logs = config.pools
      .find((p) => p.name === POOL)!
      .hosts.map((h) => h.name)
      .map((h) => join(stack().stateDir, 'hosts', h, 'tart', 'traceparents.log'))
      .filter((f) => existsSync(f))
      .map((f) => readFileSync(f, 'utf8'));
    expect(logs.join('')).toMatch(new RegExp(`^00-${start.traceId}-[0-9a-f]{16}-01 (clone|run|ip|stop|delete)`, 'm'));
  });
});
