/**
 * Scale: a full pool with a deep queue. H hosts x 2 slots (default 500) are taken by lease
 * probes, Q more jobs (default 5,000) queue behind them, then the holders are released in
 * waves of one pool-full at a time until every job has run. Prints:
 * - the largest payload the pool workflow wrote (continue-as-new input, activity inputs,
 *   signals), and its query result, against Temporal's 256 KB warning;
 * - each continue-as-new: how long from the old run's last task to the new run's first;
 * - nothing lost: every job ran once, no slot handed out twice, no host over its slots.
 *   node --import tsx bench/pool-scale.ts [queued=5000] [hosts=500]
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { Runtime, DefaultLogger } from '@temporalio/worker';
import type { Client } from '@temporalio/client';
import { startDevStack } from '../src/emulator/dev-stack';
import { freePort } from '../src/emulator/processes';
import { loadConfig } from '../src/config/load';
import { createMarinaWorker } from '../src/worker';
import { poolStartOptions } from '../src/config/pool-settings';
import { SA_POOL, poolStateQuery, poolWorkflowId } from '../workflows/definitions';
import type { PoolView } from '../src/policy/pool-view';
import { finishProbeSignal, type leaseProbeWorkflow, type ProbeResult } from '../workflows/probe';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const KB = 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface PayloadStat {
  bytes: number;
  where: string;
}

/** The largest payloads and the continue-as-new gaps over every run of the pool workflow. */
async function inspect(client: Client, workflowId: string) {
  const largest: PayloadStat[] = [];
  const gaps: number[] = [];
  let runs = 0;
  let events = 0;
  const starts = new Map<string, number>(); // runId -> time of its first completed workflow task
  const ends: Array<{ next: string; at: number }> = [];
  for await (const w of client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) {
    runs++;
    const h = await client.workflow.getHandle(w.workflowId, w.runId).fetchHistory();
    events += h.events?.length ?? 0;
    let first: number | undefined;
    for (const e of h.events ?? []) {
      const t = Number(e.eventTime?.seconds ?? 0) * 1000 + Math.floor((e.eventTime?.nanos ?? 0) / 1e6);
      if (first === undefined && e.workflowTaskCompletedEventAttributes) first = t;
      const sized: Array<[string, { payloads?: Array<{ data?: Uint8Array | null }> | null } | null | undefined]> = [
        ['start input', e.workflowExecutionStartedEventAttributes?.input],
        ['continue-as-new input', e.workflowExecutionContinuedAsNewEventAttributes?.input],
        [
          `activity input (${e.activityTaskScheduledEventAttributes?.activityType?.name ?? ''})`,
          e.activityTaskScheduledEventAttributes?.input,
        ],
        ['activity result', e.activityTaskCompletedEventAttributes?.result],
        [
          `signal (${e.workflowExecutionSignaledEventAttributes?.signalName ?? ''})`,
          e.workflowExecutionSignaledEventAttributes?.input,
        ],
      ];
      for (const [where, p] of sized) {
        for (const pl of p?.payloads ?? []) largest.push({ bytes: pl.data?.length ?? 0, where });
      }
      const can = e.workflowExecutionContinuedAsNewEventAttributes;
      if (can?.newExecutionRunId) ends.push({ next: can.newExecutionRunId, at: t });
    }
    if (first !== undefined) starts.set(w.runId, first);
  }
  for (const end of ends) {
    const s = starts.get(end.next);
    if (s !== undefined) gaps.push(s - end.at);
  }
  largest.sort((a, b) => b.bytes - a.bytes);
  return { largest: largest.slice(0, 3), gaps, runs, events };
}

async function main() {
  const queued = Number(process.argv[2] ?? 5000);
  const hostCount = Number(process.argv[3] ?? 500);
  const slots = hostCount * 2;
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  const stateDir = mkdtempSync(join(tmpdir(), 'marina-bench-scale-'));
  const stack = await startDevStack({ stateDir, hosts: 1, headless: true, inMemory: true });
  // Hosts whose SSH port is closed: placement never touches a host; their watchers check hourly.
  const closedPort = await freePort();
  const raw = parse(readFileSync(stack.configPath, 'utf8')) as { pools: Array<Record<string, unknown>> };
  raw.pools.push({
    ...raw.pools[0]!,
    name: 'scale',
    hostResources: { vm: 2 },
    healthCheckSeconds: 3600,
    leaseCheckSeconds: 60,
    hosts: Array.from({ length: hostCount }, (_, i) => ({
      name: `scale-${i + 1}`,
      address: '127.0.0.1',
      ssh: { port: closedPort },
    })),
  });
  const configPath = join(stateDir, 'bench.yaml');
  writeFileSync(configPath, stringify(raw));
  const config = loadConfig(configPath);
  const w = await createMarinaWorker(config);
  const running = w.worker.run();
  const handle = w.client.workflow.getHandle(poolWorkflowId('scale'));
  // A query waits for the pool's current workflow task; under a burst on 2 cores one can time out: ask again.
  let queryTimeouts = 0;
  const pool = {
    async query(q: typeof poolStateQuery): Promise<PoolView> {
      for (;;) {
        try {
          return await handle.query(q);
        } catch {
          queryTimeouts++;
        }
      }
    },
  };
  const start = (id: string, i: number) =>
    w.client.workflow.start<typeof leaseProbeWorkflow>('leaseProbeWorkflow', {
      workflowId: id,
      taskQueue: config.temporal.taskQueue,
      args: [{ pool: 'scale', client: `ci-${i % 4}` }],
      typedSearchAttributes: [{ key: SA_POOL, value: 'scale' }],
    });
  const inBatches = async <T>(items: T[], n: number, fn: (x: T, i: number) => Promise<unknown>) => {
    for (let i = 0; i < items.length; i += n) await Promise.all(items.slice(i, i + n).map((x, j) => fn(x, i + j)));
  };
  try {
    // A pool that has run a while: recovered (nothing to learn) and its host workflows up, before the load.
    for (;;) {
      const s = await pool.query(poolStateQuery);
      const { count } = await w.client.workflow.count(
        `MarinaPool = 'scale' AND WorkflowType = 'staticHostWorkflow' AND ExecutionStatus = 'Running'`,
      );
      if (!s.recovering && count >= hostCount) break;
      await sleep(500);
    }
    const run = Date.now().toString(36);
    const ids = Array.from({ length: slots + queued }, (_, i) => `scale-${run}-${i}`);
    const t0 = Date.now();
    await inBatches(ids, 500, (id, i) => start(id, i));
    let maxQuery = 0;
    for (;;) {
      const s = await pool.query(poolStateQuery);
      maxQuery = Math.max(maxQuery, JSON.stringify(s).length);
      if (s.running + s.queued >= ids.length && s.running >= slots) break;
      if (Date.now() - t0 > 20 * 60_000) throw new Error(`stuck: ${s.running} running, ${s.queued} queued`);
      await sleep(500);
    }
    console.log(
      `${ids.length} jobs submitted: ${slots} running on ${hostCount} hosts x 2, ${queued} queued, in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
    // The pool workflow is lost (terminated) with the pool full and the queue deep: it comes back when a job
    // talks to it, and learns every lease and request from the jobs themselves before placing anything.
    const lost = (await handle.describe()).runId;
    const r0 = Date.now();
    await handle.terminate('bench: the pool workflow is lost');
    await w.client.workflow.start('poolWorkflow', {
      ...poolStartOptions(
        config,
        config.pools.find((p) => p.name === 'scale')!,
        'bench: the pool started again',
      ),
      workflowIdConflictPolicy: 'USE_EXISTING',
    });
    for (;;) {
      const s = await pool.query(poolStateQuery);
      if ((await handle.describe()).runId !== lost && !s.recovering) {
        console.log(
          `pool terminated and started again: recovered ${s.running} leases and ${s.queued} queued requests from the jobs in ${((Date.now() - r0) / 1000).toFixed(1)} s`,
        );
        break;
      }
      await sleep(500);
    }
    // Waves: release everyone running; the next pool-full is placed; repeat. One look a second, so the
    // benchmark's own queries (each a task on the pool workflow) stay out of the way.
    const done = new Set<string>();
    let wave = 0;
    const w0 = Date.now();
    while (done.size < ids.length) {
      const s = await pool.query(poolStateQuery);
      maxQuery = Math.max(maxQuery, JSON.stringify(s).length);
      const holding = s.leases.map((l) => l.jobWorkflowId).filter((id) => !done.has(id) && id.startsWith('scale-'));
      if (holding.length > 0) {
        await inBatches(holding, 200, (id) => w.client.workflow.getHandle(id).signal(finishProbeSignal));
        for (const id of holding) done.add(id);
        wave++;
        if (wave % 5 === 0 || done.size === ids.length)
          console.log(`wave ${wave}: ${done.size}/${ids.length} released, ${((Date.now() - w0) / 1000).toFixed(0)} s`);
      }
      await sleep(1000);
    }
    const results = (await Promise.all(ids.map((id) => w.client.workflow.getHandle(id).result()))) as ProbeResult[];
    const total = (Date.now() - t0) / 1000;
    // No host over its slots: sweep every host's hold intervals.
    let over = 0;
    const byHost = new Map<string, Array<[number, number]>>();
    for (const r of results) {
      const l = byHost.get(r.host) ?? [];
      l.push([r.receivedAt, 1], [r.heldUntil, -1]);
      byHost.set(r.host, l);
    }
    for (const edges of byHost.values()) {
      let n = 0;
      for (const [, d] of edges.sort((a, b) => a[0] - b[0] || a[1] - b[1])) if ((n += d) > 2) over++;
    }
    const stats = await inspect(w.client, poolWorkflowId('scale'));
    console.log(`state queries that timed out (asked again): ${queryTimeouts}`);
    console.log(
      `all ${results.length} jobs ran in ${total.toFixed(0)} s; distinct leases ${new Set(results.map((r) => r.leaseId)).size}; host-over-slots moments ${over}`,
    );
    console.log(
      `largest pool payloads: ${stats.largest.map((p) => `${(p.bytes / KB).toFixed(1)} KB (${p.where})`).join(', ')}; largest state query ${(maxQuery / KB).toFixed(1)} KB (Temporal warns at 256 KB)`,
    );
    const g = stats.gaps.sort((a, b) => a - b);
    console.log(
      `continue-as-new: ${stats.runs - 1} times over ${stats.events} pool events; gap old run -> new run's first task: ` +
        (g.length ? `median ${g[Math.floor(g.length / 2)]} ms, max ${g[g.length - 1]} ms` : 'none'),
    );
  } finally {
    w.worker.shutdown();
    await running.catch(() => undefined);
    await w.close();
    await stack.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
