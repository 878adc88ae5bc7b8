/**
 * Scheduler throughput: N jobs submitted at once onto a pool of H hosts x 2 VM slots.
 * Each job is a lease probe (workflows/probe.ts): it asks for its slot through the job
 * workflow's own LeaseClient and holds it, so what is measured is the pool's placement
 * path (signals in, placement policy, grants out), not VMs.
 * Prints time to place all, placements/s, p50/p95 submit-to-lease, pool history events per job.
 *   node --import tsx bench/placement.ts [jobs=1000] [hosts=500]
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
import { poolStateQuery, poolWorkflowId } from '../workflows/definitions';
import { finishProbeSignal, type bareWorkflow, type leaseProbeWorkflow, type ProbeResult } from '../workflows/probe';

import { pct } from './stats';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** History events of every run of the workflow (continue-as-new starts new runs). */
async function historyEvents(client: Client, workflowId: string): Promise<{ events: number; runs: number }> {
  let events = 0;
  let runs = 0;
  for await (const w of client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) {
    runs++;
    events += (await client.workflow.getHandle(w.workflowId, w.runId).describe()).historyLength;
  }
  return { events, runs };
}

async function main() {
  const jobs = Number(process.argv[2] ?? 1000);
  const hostCount = Number(process.argv[3] ?? 500);
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  const stateDir = mkdtempSync(join(tmpdir(), 'marina-bench-placement-'));
  const stack = await startDevStack({ stateDir, hosts: 1, headless: true, inMemory: process.env.BENCH_DB !== 'file' });
  // The benchmark pool's hosts are config entries whose SSH port is closed: placement never
  // touches a host, and each host workflow's first check fails at once (one failure does not cordon).
  const closedPort = await freePort();
  const raw = parse(readFileSync(stack.configPath, 'utf8')) as {
    pools: Array<Record<string, unknown> & { name: string }>;
  };
  const local = raw.pools[0]!;
  raw.pools.push({
    ...local,
    name: 'bench',
    hostResources: { vm: 2 },
    healthCheckSeconds: 3600,
    leaseCheckSeconds: 3600,
    hosts: Array.from({ length: hostCount }, (_, i) => ({
      name: `bench-${i + 1}`,
      address: '127.0.0.1',
      ssh: { port: closedPort },
    })),
  });
  const configPath = join(stateDir, 'bench.yaml');
  writeFileSync(configPath, stringify(raw));
  const config = loadConfig(configPath);

  const w = await createMarinaWorker(config);
  const running = w.worker.run();
  const pool = w.client.workflow.getHandle(poolWorkflowId('bench'));
  try {
    // Wait until every host's workflow runs (each checks its host once, fails, and waits an hour), so
    // their start does not overlap the burst.
    for (;;) {
      const { count } = await w.client.workflow.count(
        `MarinaPool = 'bench' AND WorkflowType = 'staticHostWorkflow' AND ExecutionStatus = 'Running'`,
      );
      if (count >= hostCount) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    await new Promise((r) => setTimeout(r, 5000));
    // The floor, on the same server and worker: N bare workflows started at once, each completing
    // in its first task. No design that makes each job a workflow can place jobs faster than this.
    const floorRun = `floor-${Date.now().toString(36)}`;
    const f0 = Date.now();
    const bare = await Promise.all(
      Array.from({ length: jobs }, (_, i) =>
        w.client.workflow.start<typeof bareWorkflow>('bareWorkflow', {
          workflowId: `${floorRun}-${i}`,
          taskQueue: config.temporal.taskQueue,
        }),
      ),
    );
    const fStarted = Date.now();
    const fDone = Math.max(...(await Promise.all(bare.map((h) => h.result()))));
    const floor = { submit: fStarted - f0, complete: fDone - f0 };

    const before = await historyEvents(w.client, poolWorkflowId('bench'));
    const run = Date.now().toString(36);
    const submitted = new Map<string, number>();
    const t0 = Date.now();
    const ids = Array.from({ length: jobs }, (_, i) => `bench-${run}-${i}`);
    // Submitted at once: every start call in flight together, as a burst of CI systems would.
    await Promise.all(
      ids.map(async (id, i) => {
        submitted.set(id, Date.now());
        await w.client.workflow.start<typeof leaseProbeWorkflow>('leaseProbeWorkflow', {
          workflowId: id,
          taskQueue: config.temporal.taskQueue,
          args: [{ pool: 'bench', client: `ci-${i % 4}` }],
        });
      }),
    );
    const tSubmitted = Date.now();
    // All placed when the pool holds N leases (the query lists only the first ones: count `running`).
    for (;;) {
      const s = await pool.query(poolStateQuery);
      if (s.running >= jobs) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const placed = await historyEvents(w.client, poolWorkflowId('bench'));
    await Promise.all(ids.map((id) => w.client.workflow.getHandle(id).signal(finishProbeSignal)));
    const results = await Promise.all(
      ids.map((id) => w.client.workflow.getHandle(id).result() as Promise<ProbeResult>),
    );
    // Every lease back before counting the release signals.
    for (;;) {
      const s = await pool.query(poolStateQuery);
      if (s.running === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const after = await historyEvents(w.client, poolWorkflowId('bench'));

    const latency = results.map((r, i) => r.receivedAt - submitted.get(ids[i]!)!);
    // The pool's grant time of the last lease, from the probes themselves.
    const placedAt = Math.max(...results.map((r) => r.grantedAt));
    const hosts = new Set(results.map((r) => r.host));
    const perHost = new Map<string, number>();
    for (const r of results) perHost.set(r.host, (perHost.get(r.host) ?? 0) + 1);
    const firstGrant = Math.min(...results.map((r) => r.grantedAt));
    const lastHeard = Math.max(...results.map((r) => r.receivedAt));
    console.log(`jobs ${jobs} submitted at once onto ${hostCount} hosts x 2 slots (pool "bench", 4 clients)`);
    console.log(
      `floor (same server): ${jobs} bare workflows started in ${(floor.submit / 1000).toFixed(2)} s, all completed ${(floor.complete / 1000).toFixed(2)} s after the first start`,
    );
    console.log(`submit all (client start calls):      ${((tSubmitted - t0) / 1000).toFixed(2)} s`);
    console.log(`time to place all (first submit -> last grant): ${((placedAt - t0) / 1000).toFixed(2)} s`);
    console.log(`time until every job heard of its lease:        ${((lastHeard - t0) / 1000).toFixed(2)} s`);
    console.log(
      `ratio to the floor: placed ${((placedAt - t0) / floor.complete).toFixed(2)}x, heard ${((lastHeard - t0) / floor.complete).toFixed(2)}x`,
    );
    console.log(
      `placements/s: ${(jobs / ((placedAt - t0) / 1000)).toFixed(0)} (end to end); ${(jobs / Math.max(0.001, (placedAt - firstGrant) / 1000)).toFixed(0)} (first grant -> last grant)`,
    );
    console.log(
      `submit -> lease heard: p50 ${pct(latency, 50)} ms  p95 ${pct(latency, 95)} ms  max ${Math.max(...latency)} ms`,
    );
    console.log(
      `pool history events per job: ${((placed.events - before.events) / jobs).toFixed(2)} to place, ${((after.events - before.events) / jobs).toFixed(2)} request to release; runs (continue-as-new): ${before.runs} -> ${after.runs}`,
    );
    const types = new Map<string, number>();
    for await (const w0 of w.client.workflow.list({ query: `WorkflowId = '${poolWorkflowId('bench')}'` })) {
      const h = await w.client.workflow.getHandle(w0.workflowId, w0.runId).fetchHistory();
      for (const e of h.events ?? []) {
        const t = String(e.eventType);
        types.set(t, (types.get(t) ?? 0) + 1);
      }
    }
    console.log(`pool history by event type: ${[...types].map(([t, n]) => `${t} ${n}`).join(', ')}`);
    console.log(
      `hosts used ${hosts.size}; most leases on one host ${Math.max(...perHost.values())}; slot handed out twice: ${results.length - new Set(results.map((r) => r.leaseId)).size}`,
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
