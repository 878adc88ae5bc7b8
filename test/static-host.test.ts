/**
 * Static (on-prem) host workflows on the real stack: each watches its emulated host, reports to
 * its pool only on change, reaps its own orphans, and costs no history while nothing changes.
 *
 * No pool workflow of this file's runs: the old pool health-checks and reaps by itself and would do
 * this file's work for it. Where a pool must take reports, a stand-in `pool/<name>` is a workflow of
 * a type no worker polls: it accepts signals, which its history then shows.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Socket } from 'node:net';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Client, WorkflowHandle } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import type { LoadedConfig } from '../src/config/load';
import { hostSpecs } from '../src/config/load';
import { jobWorkflowId } from '../src/domain/job';
import {
  hostReportQuery,
  poolWorkflowId,
  reapVmsSignal,
  resendReportSignal,
  stopWatchSignal,
  type HostReport,
  type StaticHostInput,
} from '../workflows/definitions';
import { staticHostStartOptions, type staticHostWorkflow } from '../workflows/static-host';
import { connectClient } from '../src/client/jobs';
import { eventually, fileConfig, recordHistory, spawnWorker, stack, startWorker, uniqueId } from './helpers';

const POOL = 'watch';
let config: LoadedConfig;
let client: Client;
let stop: () => Promise<void>;
const started: WorkflowHandle[] = [];
/** Host workflows whose histories the last test replays. */
const hosts: WorkflowHandle[] = [];

beforeAll(async () => {
  config = fileConfig(POOL);
  client = await connectClient(config);
  // A worker starts (or signals) its configured pools: a stand-in holds the pool's id meanwhile.
  const holder = await standIn(poolWorkflowId(POOL));
  stop = (await startWorker(config)).stop;
  await holder.terminate('static host tests: no pool runs at first');
});

afterAll(async () => {
  for (const h of started) await h.terminate('test over').catch(() => undefined);
  await stop?.();
  await client?.connection.close();
});

function startHost(name: string, extra: Partial<StaticHostInput> = {}) {
  const spec = hostSpecs(config.pools.find((p) => p.name === POOL)!).find((h) => h.name === name)!;
  const input: StaticHostInput = { pool: POOL, spec, healthCheckSeconds: 1, ...extra };
  return client.workflow
    .start<typeof staticHostWorkflow>('staticHostWorkflow', {
      ...staticHostStartOptions(input),
      taskQueue: config.temporal.taskQueue,
    })
    .then((h) => {
      started.push(h);
      hosts.push(h);
      return h;
    });
}

/** A running workflow of a type no worker polls: a pool that only takes signals, or a job that never ends. */
async function standIn(workflowId: string): Promise<WorkflowHandle> {
  const h = await client.workflow.start('standIn', { workflowId, taskQueue: uniqueId('nobody-polls') });
  started.push(h);
  return h;
}

/** The hostReport signals a (stand-in) pool received, in order. */
async function reportsTo(pool: WorkflowHandle): Promise<HostReport[]> {
  const history = await pool.fetchHistory();
  return (history.events ?? []).flatMap((e) => {
    const a = e.workflowExecutionSignaledEventAttributes;
    if (a?.signalName !== 'hostReport') return [];
    return [JSON.parse(Buffer.from(a.input!.payloads![0]!.data!).toString()) as HostReport];
  });
}

const eventName = (t: unknown) =>
  (temporal.api.enums.v1.EventType[Number(t)] ?? String(t)).replace(/^EVENT_TYPE_/, '').toLowerCase();
const historyLength = async (h: WorkflowHandle) => (await h.fetchHistory()).events?.length ?? 0;
const detailsOf = async (h: WorkflowHandle) =>
  (await h.query<{ currentDetails?: string }>('__temporal_workflow_metadata')).currentDetails ?? '';
const vmsDir = (host: string) => join(stack().stateDir, 'hosts', host, 'tart', 'vms');
/** A stopped VM as the emulated tart lists it: a directory with its config. */
function makeVm(host: string, vm: string): string {
  const dir = join(vmsDir(host), vm);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.env'), 'disk=1\ncpu=1\nmemory=1024\n');
  return dir;
}

let pool: WorkflowHandle;

describe('static host workflow', () => {
  it('keeps its first report pending while its pool is not running, and delivers it once the pool is back', async () => {
    const host = await startHost('mac-1');
    const pendingView = await eventually('a pending first report', async () => {
      const v = await host.query(hostReportQuery);
      return v.report && v.report.seq > 0 && !v.delivered && v.deliveryError ? v : undefined;
    });
    expect(pendingView.report).toMatchObject({ host: 'mac-1', healthy: true, failures: 0, seq: 1 });
    expect(pendingView.deliveryError).toMatch(/^pool\/watch did not take report #1: /);
    expect(await detailsOf(host)).toMatch(/^\*\*healthy\*\* · host mac-1 \(pool watch\) · report #1 \*\*pending\*\*/);

    // Waiting costs timers that back off, not a loop: a few events a try, fewer tries as time goes by.
    await new Promise((r) => setTimeout(r, 6_000));
    const whileWaiting = await historyLength(host);
    expect(whileWaiting).toBeLessThan(60);

    pool = await standIn(poolWorkflowId(POOL));
    // A new pool run asks its hosts for their reports.
    await host.signal(resendReportSignal);
    await eventually('report delivered', async () => (await host.query(hostReportQuery)).delivered);
    const got = await reportsTo(pool);
    expect(got).toHaveLength(1);
    expect(got[0]).toMatchObject({ host: 'mac-1', workflowId: 'host/watch/mac-1', healthy: true, seq: 1 });

    const d = await host.describe();
    expect(d.typedSearchAttributes.getAll().map((p) => [p.key.name, p.value])).toEqual(
      expect.arrayContaining([
        ['MarinaPool', POOL],
        ['MarinaHost', 'mac-1'],
        ['MarinaHostState', 'healthy'],
      ]),
    );
    expect(await detailsOf(host)).toMatch(/^\*\*healthy\*\* · host mac-1 \(pool watch\) · report #1 delivered/);
    await host.signal(stopWatchSignal, { reason: 'test over' });
    await host.result();
    await recordHistory('static-host-pending-report', host);
  });

  it('reports a host that accepts TCP but never answers SSH unhealthy after 3 failed checks, and its worker lives on', async () => {
    // A "host" that accepts TCP and never sends the SSH banner.
    const sockets: Socket[] = [];
    const mute = createServer((s) => {
      sockets.push(s);
      s.on('error', () => undefined);
    });
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
    const port = (mute.address() as { port: number }).port;
    // Its own pool and task queue, served by a worker in its own process: an ssh2 error nobody listens
    // for kills the process that meets it (it did, before activities/ssh/connection.ts heard them all);
    // if that comes back, this test fails, not the whole file.
    const hungConfig = fileConfig(`${POOL}-hung`, (raw) => {
      raw.pools[0].hosts = [
        { name: 'mac-hung', address: '127.0.0.1', ssh: { port }, labels: { os: 'macos', arch: 'arm64' } },
      ];
    });
    const hungPool = await standIn(poolWorkflowId(`${POOL}-hung`));
    const worker = spawnWorker(hungConfig);
    let died: string | undefined;
    const death = new Promise<never>((_, reject) =>
      worker.on('exit', (code, signal) => {
        died = `exit code ${code}, signal ${signal}`;
        reject(new Error(`the worker process died (${died}) while checking a mute host: see its stderr above`));
      }),
    );
    death.catch(() => undefined);
    try {
      const spec = hostSpecs(hungConfig.pools[0]!)[0]!;
      const input: StaticHostInput = { pool: `${POOL}-hung`, spec, healthCheckSeconds: 1, checkTimeoutMs: 1_000 };
      const t0 = Date.now();
      const host = await client.workflow.start<typeof staticHostWorkflow>('staticHostWorkflow', {
        ...staticHostStartOptions(input),
        taskQueue: hungConfig.temporal.taskQueue,
      });
      started.push(host);
      const view = await Promise.race([
        death,
        eventually(
          'the mute host reported unhealthy',
          async () => {
            const v = await host.query(hostReportQuery);
            return v.report?.seq === 1 && v.delivered ? v : undefined;
          },
          45_000,
        ),
      ]);
      const seconds = (Date.now() - t0) / 1000;
      expect(view.report).toMatchObject({ host: 'mac-hung', healthy: false, failures: 3 });
      expect(view.report!.error).toMatch(/did not answer a check within 1000 ms|handshake/);
      expect(sockets.length).toBeGreaterThanOrEqual(3);
      expect(await reportsTo(hungPool)).toEqual([expect.objectContaining({ healthy: false, failures: 3, seq: 1 })]);
      expect(await detailsOf(host)).toMatch(/^\*\*unhealthy\*\* · host mac-hung \(pool watch-hung\) · 3 failed checks/);
      const d = await host.describe();
      expect(d.typedSearchAttributes.getAll().map((p) => [p.key.name, p.value])).toContainEqual([
        'MarinaHostState',
        'unhealthy',
      ]);

      // Failing on (the error text may change) is not news; the worker goes on checking.
      await new Promise((r) => setTimeout(r, 4_000));
      expect((await host.query(hostReportQuery)).report!.seq).toBe(1);
      expect(await reportsTo(hungPool)).toHaveLength(1);
      expect(died).toBeUndefined();
      console.log(`mute host: unhealthy reported after ${seconds.toFixed(1)} s; ${sockets.length} connections`);
      await host.signal(stopWatchSignal, { reason: 'test over' });
      await host.result();
    } finally {
      worker.removeAllListeners('exit');
      worker.kill('SIGTERM');
      for (const s of sockets) s.destroy();
      mute.close();
    }
  });

  it('reaps a job VM whose job never existed or has closed, never a running job VM or another pool’s standby VM', async () => {
    pool ??= await standIn(poolWorkflowId(POOL));
    const orphanId = uniqueId('orphan');
    const runningId = uniqueId('running');
    const orphan = makeVm('mac-3', `marina-${orphanId}`);
    const running = makeVm('mac-3', `marina-${runningId}`);
    const mine = makeVm('mac-3', 'marina-standby-watch-0-0-1');
    const theirs = makeVm('mac-3', 'marina-standby-otherpool-0-0-1');
    const job = await standIn(jobWorkflowId(runningId));
    try {
      const host = await startHost('mac-3');
      await eventually('orphan reaped', async () => !existsSync(orphan), 30_000);
      const view = await eventually('the report without the orphan', async () => {
        const v = await host.query(hostReportQuery);
        return v.report && !v.report.vms.includes(`marina-${orphanId}`) && v.delivered ? v : undefined;
      });
      expect(view.report!.vms).toEqual(
        expect.arrayContaining([`marina-${runningId}`, 'marina-standby-watch-0-0-1', 'marina-standby-otherpool-0-0-1']),
      );
      expect(view.reaped).toContainEqual(
        expect.objectContaining({
          vm: `marina-${orphanId}`,
          why: expect.stringMatching(/has closed or never existed/),
        }),
      );
      expect(existsSync(running) && existsSync(mine) && existsSync(theirs)).toBe(true);

      // The pool says no lease holds its standby VM; a standby VM of another pool or a job VM it may not reap.
      await host.signal(reapVmsSignal, {
        vms: ['marina-standby-watch-0-0-1', 'marina-standby-otherpool-0-0-1', `marina-${runningId}`],
        reason: 'no lease holds it',
      });
      await eventually('own standby VM reaped', async () => !existsSync(mine), 30_000);
      const after = await host.query(hostReportQuery);
      expect(after.reaped.filter((r) => r.error?.startsWith('refused')).map((r) => r.vm)).toEqual([
        'marina-standby-otherpool-0-0-1',
        `marina-${runningId}`,
      ]);
      await new Promise((r) => setTimeout(r, 2_000));
      expect(existsSync(running) && existsSync(theirs)).toBe(true);

      // The job ends without cleaning up (terminated): its VM is an orphan now.
      await job.terminate('a job that dies without cleanup');
      await eventually('terminated job VM reaped', async () => !existsSync(running), 40_000);
      await host.signal(stopWatchSignal, { reason: 'test over' });
      await host.result();
      await recordHistory('static-host-reaps', host);
    } finally {
      for (const d of [orphan, running, mine, theirs]) rmSync(d, { recursive: true, force: true });
    }
  });

  it('costs no history while nothing changes (checks every 200 ms), reports a change, and ends on stopWatch', async () => {
    pool ??= await standIn(poolWorkflowId(POOL));
    const host = await startHost('mac-2', { healthCheckSeconds: 0.2 });
    await eventually('first report delivered', async () => (await host.query(hostReportQuery)).delivered);
    const before = await historyLength(host);
    const idleMs = 20_000;
    await new Promise((r) => setTimeout(r, idleMs));
    const after = await historyLength(host);
    expect(after).toBe(before);
    // The checks went on meanwhile: the watch's heartbeat says so.
    const d = await host.describe();
    const hb = d.raw.pendingActivities?.[0]?.heartbeatDetails?.payloads?.[0]?.data;
    const progress = JSON.parse(Buffer.from(hb!).toString()) as {
      checks: number;
      verdict: string;
      lastCheckMs: number;
    };
    expect(progress).toMatchObject({ verdict: 'healthy' });
    expect(progress.checks).toBeGreaterThan(0);
    const checkMs = progress.lastCheckMs;

    // A new image on the host is news, and the view counts the checks of the idle stretch.
    const image = makeVm('mac-2', `marina-img-${uniqueId('idle')}`);
    try {
      const view = await eventually('new image reported', async () => {
        const v = await host.query(hostReportQuery);
        return v.report?.images.includes(image.split('/').pop()!) && v.delivered ? v : undefined;
      });
      const perReport = (await historyLength(host)) - after;
      expect(view.checks).toBeGreaterThanOrEqual(5);
      expect(view.lastChange?.why).toMatch(/^images \+marina-img-idle-/);
      console.log(
        `idle: ${before} events after the first report, ${after} after ${idleMs / 1000} s of checks every 200 ms ` +
          `(${view.checks} checks, one took ${checkMs} ms); one reported change cost ${perReport} events`,
      );
    } finally {
      rmSync(image, { recursive: true, force: true });
    }

    const last = (await host.query(hostReportQuery)).report!;
    await host.signal(stopWatchSignal, { reason: 'the host left the config' });
    const result = await host.result();
    expect(result.stopped).toBe('the host left the config');
    expect(result.last).toMatchObject({ host: 'mac-2', healthy: true });
    expect(result.last!.seq).toBeGreaterThanOrEqual(last.seq);
    expect(await detailsOf(host)).toMatch(/^\*\*healthy\*\* · host mac-2 \(pool watch\)/);
    expect((await host.describe()).status.name).toBe('COMPLETED');
    await recordHistory('static-host-idle-change-stop', host);
  });

  it('continues as new after watchMaxMs of nothing new, carrying its report without sending it again', async () => {
    pool ??= await standIn(poolWorkflowId(POOL));
    const host = await startHost('mac-1', { watchMaxMs: 3_000 });
    const firstRun = (await host.describe()).runId;
    await eventually('first report delivered', async () => (await host.query(hostReportQuery)).delivered);
    const mine = async () => (await reportsTo(pool)).filter((r) => r.workflowId === 'host/watch/mac-1');
    const before = (await mine()).length;
    const later = await eventually(
      'a later run',
      async () => {
        const d = await host.describe();
        return d.runId !== firstRun &&
          (await client.workflow.getHandle(host.workflowId, firstRun).describe()).status.name === 'CONTINUED_AS_NEW'
          ? d
          : undefined;
      },
      30_000,
    );
    const first = client.workflow.getHandle(host.workflowId, firstRun);
    await recordHistory('static-host-continued-as-new', first);
    const firstEvents = (await first.fetchHistory()).events ?? [];
    // The second run has nothing new to say all along.
    const idleRun = client.workflow.getHandle(host.workflowId, later.runId);
    await eventually(
      'the second run continued as new too',
      async () => (await idleRun.describe()).status.name === 'CONTINUED_AS_NEW',
      30_000,
    );
    const latest = client.workflow.getHandle(host.workflowId);
    const idleEvents = (await idleRun.fetchHistory()).events ?? [];
    expect(idleEvents.some((e) => e.upsertWorkflowSearchAttributesEventAttributes)).toBe(false);
    expect(idleEvents.some((e) => e.signalExternalWorkflowExecutionInitiatedEventAttributes)).toBe(false);
    expect((await mine()).length).toBe(before); // the pool heard the report once, not once per run
    const view = await latest.query(hostReportQuery);
    expect(view).toMatchObject({ delivered: true, report: { host: 'mac-1', healthy: true, seq: 1 } });
    expect((await latest.describe()).typedSearchAttributes.getAll().map((p) => [p.key.name, p.value])).toEqual(
      expect.arrayContaining([
        ['MarinaPool', POOL],
        ['MarinaHost', 'mac-1'],
        ['MarinaHostState', 'healthy'],
      ]),
    );
    console.log(
      `continue-as-new (watchMaxMs 3 s): the first run (with its report) ${firstEvents.length} events, ` +
        `an idle run ${idleEvents.length}: ${idleEvents.map((e) => eventName(e.eventType)).join(', ')}`,
    );
    await latest.signal(stopWatchSignal, { reason: 'test over' });
    await latest.result();
  });

  it('replays every host workflow history of this file deterministically', async () => {
    let runs = 0;
    for (const h of hosts) {
      for await (const w of client.workflow.list({ query: `WorkflowId = '${h.workflowId}'` })) {
        if (w.status.name === 'RUNNING') continue;
        const history = await client.workflow.getHandle(w.workflowId, w.runId).fetchHistory();
        await Worker.runReplayHistory({ workflowBundle: { codePath: stack().bundlePath } }, history, w.workflowId);
        runs++;
      }
    }
    expect(runs).toBeGreaterThanOrEqual(hosts.length);
  });
});
