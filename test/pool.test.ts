/** The on-prem pool workflow: health-check cordoning on the real stack, and replay determinism. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Worker } from '@temporalio/worker';
import { startJob } from '../src/client/jobs';
import type { LoadedConfig } from '../src/config/load';
import { SEED_IMAGE } from '../src/emulator/seed-image';
import {
  applySettingsUpdate,
  controlPoolUpdate,
  jobStatusQuery,
  poolSettingsQuery,
  syncHostsSignal,
  poolStateQuery,
  poolWorkflowId,
  type PoolControl,
} from '../workflows/definitions';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);
import {
  ensureImageResults,
  eventually,
  fileConfig,
  freshImage,
  readJobLog,
  recordHistory,
  stack,
  startWorker,
  uniqueId,
} from './helpers';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { loadConfig } from '../src/config/load';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jobWorkflowId } from '../src/domain/job';
import type { Client } from '@temporalio/client';
import { freePort } from '../src/emulator/processes';
import { finishProbeSignal, type leaseProbeWorkflow } from '../workflows/probe';
import { ensurePools } from '../src/worker';
import { applyPoolSettings } from '../src/client/pool-settings';
import { poolSettings } from '../src/config/pool-settings';

const SECURE = 'secure';
const BURST = 'burst';
const WARM = 'warm';
const REVIVE = 'revive';
const TINY = 'tiny';
const SHARED = '/tmp/marina-shared';
let config: LoadedConfig;
let client: Client;
let stop: () => Promise<void>;

beforeAll(async () => {
  const deadPort = await freePort(); // nothing listens here: the host is down
  config = fileConfig('health', (raw) => {
    const [first, second, third] = raw.pools[0].hosts;
    raw.pools[0].hosts = [
      first,
      { name: 'mac-dead', address: '127.0.0.1', ssh: { port: deadPort }, labels: { os: 'macos', arch: 'arm64' } },
    ];
    // A second pool with a security policy, on the other two emulated hosts; a label steers a job to mac-3.
    raw.pools.push({
      ...raw.pools[0],
      name: SECURE,
      hosts: [
        { ...second, labels: { ...second.labels, slot: 'a' } },
        {
          ...third,
          labels: { ...third.labels, slot: 'b' },
          // One device on mac-3, handed to the VM of a job that takes the gpu.
          resources: { vm: 2, gpu: 1 },
          resourceModifiers: [{ match: { gpu: 1 }, run: ['--disk=/dev/disk4'] }],
        },
      ],
      security: {
        allowedImages: ['macos-*'],
        allowedVolumes: [{ path: `${SHARED}/**`, readOnly: true }],
      },
    });
    // A pool that continues as new every 150 history events: probes (lease takers that touch no host)
    // cross several runs.
    raw.pools.push({
      ...raw.pools[0],
      name: BURST,
      hosts: [second, third].map((h) => ({ ...h, resources: { vm: 3 } })),
      historyEventsPerRun: 150,
    });
    // A pool on mac-2 whose standby VMs the test turns on and off.
    raw.pools.push({ ...raw.pools[0], name: WARM, hosts: [second] });
    // A pool whose workflow a test terminates, on mac-1 (2 slots).
    raw.pools.push({ ...raw.pools[0], name: REVIVE, hosts: [first] });
    // One slot and room for two in the queue: back-pressure.
    raw.pools.push({ ...raw.pools[0], name: TINY, hosts: [{ ...third, resources: { vm: 1 } }], queueLimit: 2 });
  });
  const w = await startWorker(config);
  client = w.w.client;
  stop = w.stop;
});

afterAll(async () => {
  await stop?.();
});

describe('pool', () => {
  it('cordons a host that fails its health check repeatedly and places jobs elsewhere', async () => {
    const pool = client.workflow.getHandle(poolWorkflowId('health'));
    const state = await eventually(
      'dead host cordoned',
      async () => {
        const s = await pool.query(poolStateQuery);
        return s.hosts.find((h) => h.name === 'mac-dead')?.cordoned === 'health' ? s : undefined;
      },
      60_000,
    );
    const dead = state.hosts.find((h) => h.name === 'mac-dead')!;
    expect(dead.consecutiveHealthFailures).toBeGreaterThanOrEqual(3);
    expect(dead.lastHealthError).toMatch(/ssh to host health\/mac-dead/);
    expect(state.hosts.find((h) => h.name === 'mac-1')?.cordoned).toBeUndefined();

    const results = await Promise.all(
      [0, 1, 2].map(async (i) =>
        (
          await startJob(client, config, {
            id: uniqueId(`h${i}`),
            pool: 'health',
            image: SEED_IMAGE,
            script: 'echo ok',
            timeoutSeconds: 60,
          })
        ).result(),
      ),
    );
    expect(results.map((r) => r.host)).toEqual(['mac-1', 'mac-1', 'mac-1']);
  });

  it('refuses a volume the security policy does not allow, at the client and at the pool', async () => {
    const spec = {
      id: uniqueId('vol'),
      pool: SECURE,
      image: SEED_IMAGE,
      script: 'echo never',
      timeoutSeconds: 60,
      volumes: [{ hostPath: '/etc' }],
    };
    await expect(startJob(client, config, spec)).rejects.toThrow(
      /volumes: volume "\/etc" is not allowed in pool secure \(security.allowedVolumes: \/tmp\/marina-shared\/\*\*\)/,
    );
    // A CI system that starts the workflow itself skips the client's checks: the pool refuses it.
    const direct = await client.workflow.start('jobWorkflow', {
      workflowId: jobWorkflowId(spec.id),
      taskQueue: config.temporal.taskQueue,
      args: [spec],
    });
    await expect(direct.result()).rejects.toMatchObject({
      cause: { message: expect.stringMatching(/refused by pool "secure": volume "\/etc" is not allowed/) },
    });
    const pool = client.workflow.getHandle(poolWorkflowId(SECURE));
    expect((await pool.query(poolStateQuery)).decisions!.map((d) => d.what)).toContainEqual(
      expect.stringMatching(new RegExp(`^refuse ${jobWorkflowId(spec.id)}: volume "/etc" is not allowed`)),
    );
  });

  it('mounts an allowed volume read-only, hands the gpu job its device, and places the next job on the host that holds its image', async () => {
    // Neither host holds the image at first (earlier tests may have left it cached).
    for (const h of ['mac-2', 'mac-3']) {
      const vms = join(stack().stateDir, 'hosts', h, 'tart', 'vms');
      for (const vm of existsSync(vms) ? readdirSync(vms) : []) {
        if (vm.startsWith('marina-img-')) rmSync(join(vms, vm), { recursive: true, force: true });
      }
    }
    const pool = client.workflow.getHandle(poolWorkflowId(SECURE));
    await eventually(
      'the pool to see empty caches',
      async () => (await pool.query(poolStateQuery)).hosts.every((h) => (h.images ?? []).length === 0),
      20_000,
    );
    const first = await (
      await startJob(client, config, {
        id: uniqueId('mount'),
        pool: SECURE,
        image: SEED_IMAGE,
        resources: { vm: 1, gpu: 1 },
        script: 'cat "$MARINA_EMU_VM/dirs" "$MARINA_EMU_VM/args"',
        timeoutSeconds: 60,
        volumes: [{ hostPath: `${SHARED}/spm`, name: 'spm', readOnly: false }],
      })
    ).result();
    expect(first.host).toBe('mac-3');
    // The policy forced read-only: Tart got --dir=spm:/tmp/marina-shared/spm:ro; and mac-3's gpu modifier.
    expect(await readJobLog(config, first.log.key)).toBe(`spm:${SHARED}/spm:ro\n--disk=/dev/disk4\n`);
    // Both hosts free and fit; mac-2 comes first, but mac-3 holds the image now.
    const second = await (
      await startJob(client, config, {
        id: uniqueId('warm'),
        pool: SECURE,
        image: SEED_IMAGE,
        script: 'echo warm; cat "$MARINA_EMU_VM/args"',
        timeoutSeconds: 60,
      })
    ).result();
    expect(second.host).toBe('mac-3');
    // The first job pulled the image; the second found it in mac-3's cache.
    expect(await ensureImageResults(client, jobWorkflowId(first.jobId))).toEqual([
      expect.objectContaining({ cached: false, fetchedBytes: expect.any(Number) }),
    ]);
    expect(await ensureImageResults(client, jobWorkflowId(second.jobId))).toEqual([
      expect.objectContaining({ cached: true }),
    ]);
    // No gpu asked, no device.
    expect(await readJobLog(config, second.log.key)).toBe('warm\n\n');
  });

  it('takes planner controls: pause holds the queue, drain answers once running jobs finished', async () => {
    const pool = client.workflow.getHandle(poolWorkflowId(SECURE));
    const ctl = (c: PoolControl) => pool.executeUpdate(controlPoolUpdate, { args: [c] });
    // On mac-3, which holds the image since the test before.
    const job = (name: string, script: string) =>
      startJob(client, config, {
        id: uniqueId(name),
        pool: SECURE,
        image: SEED_IMAGE,
        labels: { slot: 'b' },
        script,
        timeoutSeconds: 60,
      });

    // Paused: the job waits in the queue; resumed: it runs.
    expect((await ctl({ action: 'pause' })).message).toMatch(/paused/);
    const held = await job('held', 'echo held');
    await new Promise((r) => setTimeout(r, 3000));
    expect((await held.query(jobStatusQuery)).state).toBe('queued');
    await ctl({ action: 'resume' });
    expect((await held.result()).state).toBe('succeeded');

    // Drain answers at once; the host takes no new work; `marina pool drain --wait` follows it to the end.
    const busy = await job('busy', 'sleep 3; echo done');
    await eventually('the job to run', async () => (await busy.query(jobStatusQuery)).state === 'running', 30_000);
    expect((await ctl({ action: 'drain', host: 'mac-3' })).message).toMatch(
      /^drain host mac-3: no new work; waiting for its 1 running job/,
    );
    const waited = await run('./bin/marina', ['-c', config.path, 'pool', 'drain', SECURE, 'mac-3', '--wait'], {
      encoding: 'utf8',
    });
    expect(waited.stdout).toMatch(/host mac-3 drained \(\d+ s\)/);
    // The job had finished on the host (script run, VM cleaned up) when it gave its slot back.
    expect((await busy.query(jobStatusQuery)).state).toBe('succeeded');
    const after = await job('after', 'echo after');
    await eventually('the job queued', async () => (await pool.query(poolStateQuery)).queue.length === 1);
    expect((await after.query(jobStatusQuery)).state).toBe('queued');
    await ctl({ action: 'uncordon', host: 'mac-3' });
    expect((await after.result()).host).toBe('mac-3');
    const decisions = (await pool.query(poolStateQuery)).decisions!.map((d) => d.what);
    expect(decisions).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^operator: drain host mac-3: no new work; waiting for its 1 running job/),
        expect.stringMatching(/^operator: host mac-3 drained/),
      ]),
    );
  });

  it('drains a host under a long job while continue-as-new is due: other jobs keep being placed', async () => {
    const pool = client.workflow.getHandle(poolWorkflowId(BURST));
    const ctl = (c: PoolControl) => pool.executeUpdate(controlPoolUpdate, { args: [c] });
    const probe = (args: Record<string, unknown>) =>
      client.workflow.start<typeof leaseProbeWorkflow>('leaseProbeWorkflow', {
        workflowId: uniqueId('drain-probe'),
        taskQueue: config.temporal.taskQueue,
        args: [{ pool: BURST, ...args }],
      });
    // A long job (it holds its slot until told to finish) on one host; that host is drained.
    const long = await probe({});
    const held = await eventually('the long job placed', async () =>
      (await pool.query(poolStateQuery)).leases.find((l) => l.jobWorkflowId === long.workflowId),
    );
    const started = Date.now();
    expect((await ctl({ action: 'drain', host: held.host })).message).toMatch(/waiting for its 1 running job/);
    // The long job holds its slot until told, so an answer that waited for it would never come: any bound
    // well under the test's timeout tells the two apart, even on a loaded CI machine.
    expect(Date.now() - started).toBeLessThan(30_000);
    // The pool continues as new every 150 events; meanwhile 40 more jobs come and go, all on the other host.
    const runsBefore = await runsOf(poolWorkflowId(BURST));
    const others = await Promise.all(Array.from({ length: 40 }, () => probe({ holdMs: 100 })));
    const results = await Promise.all(others.map((h) => h.result()));
    expect(results.every((r) => r.host !== held.host)).toBe(true);
    expect(await runsOf(poolWorkflowId(BURST))).toBeGreaterThan(runsBefore);
    // The drain is still waiting, carried across the runs; it ends when the long job does.
    expect((await pool.query(poolStateQuery)).drains).toHaveProperty(held.host);
    await long.signal(finishProbeSignal);
    await long.result();
    await eventually(
      'the drain done',
      async () => (await pool.query(poolStateQuery)).drains?.[held.host] === undefined,
    );
    expect((await pool.query(poolStateQuery)).decisions!.map((d) => d.what)).toContainEqual(
      expect.stringMatching(new RegExp(`^operator: host ${held.host} drained`)),
    );
    await ctl({ action: 'uncordon', host: held.host });
    await recordHistory('pool-drain-across-continue-as-new', pool);
    await recordHistory('probe-long-hold', long);
  });

  it('refuses a bad control with the fix, and changes nothing', async () => {
    const pool = client.workflow.getHandle(poolWorkflowId(SECURE));
    const refused = (c: PoolControl) =>
      pool.executeUpdate(controlPoolUpdate, { args: [c] }).then(
        () => 'accepted',
        (e: Error & { cause?: Error }) => e.cause?.message ?? e.message,
      );
    const cordonsBefore = (await pool.query(poolStateQuery)).hosts.map((h) => h.cordoned);
    expect(await refused({ action: 'cordon', host: 'mac-9' })).toMatch(
      /no host "mac-9" in pool secure; hosts: mac-2, mac-3/,
    );
    expect(await refused({ action: 'retire', host: 'mac-3' })).toMatch(
      /on-prem host of pool secure: remove it from the config/,
    );
    expect(await refused({ action: 'capacity', maxHosts: 3 })).toMatch(/pool secure has no aws section/);
    expect((await pool.query(poolStateQuery)).hosts.map((h) => h.cordoned)).toEqual(cordonsBefore);
    // The CLI says the same and exits 2.
    await expect(
      run('./bin/marina', ['-c', config.path, 'pool', 'cordon', SECURE, 'mac-9'], { encoding: 'utf8' }),
    ).rejects.toMatchObject({ code: 2, stderr: expect.stringMatching(/no host "mac-9" in pool secure/) });
  });

  it('replays recorded job and pool histories deterministically', async () => {
    const handle = await startJob(client, config, {
      id: uniqueId('replay'),
      pool: 'health',
      image: SEED_IMAGE,
      script: 'echo replay; exit 7',
      timeoutSeconds: 60,
    });
    expect((await handle.result()).exitCode).toBe(7);
    const histories = [
      { workflowId: handle.workflowId, history: await handle.fetchHistory() },
      {
        workflowId: poolWorkflowId('health'),
        history: await client.workflow.getHandle(poolWorkflowId('health')).fetchHistory(),
      },
    ];
    for (const h of histories) {
      await Worker.runReplayHistory({ workflowBundle: { codePath: stack().bundlePath } }, h.history, h.workflowId);
    }
    await recordHistory('job-exit-7', handle);
    await recordHistory('pool-health-cordon', client.workflow.getHandle(poolWorkflowId('health')));
  });

  it('continues as new under a burst and loses nothing: every request placed once, no slot handed out twice', async () => {
    const runsBefore = await runsOf(poolWorkflowId(BURST));
    const ids = Array.from({ length: 48 }, (_, i) => uniqueId(`burst-${i}`));
    const handles = await Promise.all(
      ids.map((id, i) =>
        client.workflow.start<typeof leaseProbeWorkflow>('leaseProbeWorkflow', {
          workflowId: id,
          taskQueue: config.temporal.taskQueue,
          args: [{ pool: BURST, holdMs: 300 + (i % 5) * 100, client: `ci-${i % 3}` }],
        }),
      ),
    );
    const results = await Promise.all(handles.map((h) => h.result()));
    expect(results).toHaveLength(48);
    expect(new Set(results.map((r) => r.leaseId)).size).toBe(48);
    // At no moment did a host have more probes holding its slots than it has slots (3).
    for (const host of ['mac-2', 'mac-3']) {
      const edges = results
        .filter((r) => r.host === host)
        .flatMap((r) => [
          [r.receivedAt, 1],
          [r.heldUntil, -1],
        ])
        .sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]!);
      let held = 0;
      let most = 0;
      for (const [, d] of edges) most = Math.max(most, (held += d!));
      expect(most).toBeGreaterThan(0);
      expect(most).toBeLessThanOrEqual(3);
    }
    expect(await runsOf(poolWorkflowId(BURST))).toBeGreaterThan(runsBefore + 1);
    const pool = client.workflow.getHandle(poolWorkflowId(BURST));
    await eventually('every burst lease back', async () => {
      const s = await pool.query(poolStateQuery);
      return s.leases.length + s.queue.length === 0;
    });
  });

  it('shares slots fairly between two competing clients: an earlier backlog does not take every slot', async () => {
    const pool = client.workflow.getHandle(poolWorkflowId(BURST));
    const ctl = (c: PoolControl) => pool.executeUpdate(controlPoolUpdate, { args: [c] });
    await ctl({ action: 'pause' });
    const probe = (ci: string, i: number) =>
      client.workflow.start<typeof leaseProbeWorkflow>('leaseProbeWorkflow', {
        workflowId: uniqueId(`fair-${ci}-${i}`),
        taskQueue: config.temporal.taskQueue,
        args: [{ pool: BURST, client: ci }],
      });
    // ci-a queues 8 jobs first, then ci-b 4; 6 slots (2 hosts x 3).
    const a = await Promise.all(Array.from({ length: 8 }, (_, i) => probe('ci-a', i)));
    await eventually('ci-a queued', async () => (await pool.query(poolStateQuery)).queue.length === 8);
    const b = await Promise.all(Array.from({ length: 4 }, (_, i) => probe('ci-b', i)));
    await eventually('all queued', async () => (await pool.query(poolStateQuery)).queue.length === 12);
    await ctl({ action: 'resume' });
    const held = await eventually('6 slots granted', async () => {
      const s = await pool.query(poolStateQuery);
      return s.leases.length === 6 ? s.leases : undefined;
    });
    expect(held.filter((l) => l.client === 'ci-a')).toHaveLength(3);
    expect(held.filter((l) => l.client === 'ci-b')).toHaveLength(3);
    // Every one runs in the end.
    for (const h of [...a, ...b]) await h.signal(finishProbeSignal);
    expect(new Set((await Promise.all([...a, ...b].map((h) => h.result()))).map((r) => r.leaseId)).size).toBe(12);
  });

  it('keeps a standby VM booted: a job takes it and starts without fetch or boot, and it is replenished', async () => {
    const withStandby = (count: number): LoadedConfig => ({
      ...config,
      pools: config.pools.map((p) =>
        p.name === WARM ? { ...p, standby: [{ image: SEED_IMAGE, count, resources: { vm: 1 }, labels: {} }] } : p,
      ),
    });
    const pool = client.workflow.getHandle(poolWorkflowId(WARM));
    const vmsOnMac2 = () => readdirSync(join(stack().stateDir, 'hosts', 'mac-2', 'tart', 'vms'));
    const booted = async () => Object.values((await pool.query(poolStateQuery)).standbys ?? {}).map((s) => s.vm);
    await applyPoolSettings(client, withStandby(1), WARM, 'test');
    try {
      const [first] = await eventually(
        'a standby VM booted',
        async () => ((await booted()).length ? booted() : undefined),
        60_000,
      );
      expect(first).toBe(`marina-standby-${WARM}-0-0-0`);
      const result = await (
        await startJob(client, config, {
          id: uniqueId('standby'),
          pool: WARM,
          image: SEED_IMAGE,
          script: 'basename "$MARINA_EMU_VM"',
          timeoutSeconds: 60,
        })
      ).result();
      // It ran in the standby VM: no fetch, no boot.
      expect(result).toMatchObject({ state: 'succeeded', host: 'mac-2', standbyVm: first });
      expect(result.stages.fetch).toBeUndefined();
      expect(result.stages.boot).toBeUndefined();
      expect(await readJobLog(config, result.log.key)).toBe(`${first}\n`);
      // Replenished: the next standby VM is booted; the taken one went with the job's cleanup.
      await eventually(
        'the standby replenished',
        async () => (await booted())[0] === `marina-standby-${WARM}-0-0-1`,
        60_000,
      );
      expect(vmsOnMac2()).not.toContain(first);
      await recordHistory('job-took-standby', client.workflow.getHandle(jobWorkflowId(result.jobId)));
      expect((await pool.query(poolStateQuery)).decisions!.map((d) => d.what)).toContainEqual(
        expect.stringMatching(new RegExp(`takes standby VM ${first} on mac-2`)),
      );
    } finally {
      // No standby: the VM is destroyed and its slot given back.
      await applyPoolSettings(client, withStandby(0), WARM, 'test');
      await eventually(
        'the standby gone',
        async () => {
          const s = await pool.query(poolStateQuery);
          return s.leases.length === 0 && !vmsOnMac2().some((v) => v.startsWith('marina-standby-'));
        },
        60_000,
      );
    }
  });

  it("pre-pulls the pool's images onto an idle host, so the next job finds its image cached", async () => {
    const image = await freshImage(config, uniqueId('prepull').toLowerCase(), 16);
    const pool = client.workflow.getHandle(poolWorkflowId(WARM));
    await applyPoolSettings(
      client,
      {
        ...config,
        pools: config.pools.map((p) =>
          p.name === WARM ? { ...p, imageCache: { ...p.imageCache, prePull: [image] } } : p,
        ),
      },
      WARM,
      'test',
    );
    try {
      const record = await eventually(
        'pre-pulled onto mac-2',
        async () => {
          const r = (await pool.query(poolStateQuery)).prePulls?.[`mac-2|${image}`];
          return r?.cacheName && !r.running ? r : undefined;
        },
        60_000,
      );
      const vms = readdirSync(join(stack().stateDir, 'hosts', 'mac-2', 'tart', 'vms'));
      expect(vms).toContain(record.cacheName);
      // The pre-pull is a workflow of its own an operator finds in the Web UI, with what it did in its details.
      const pre = client.workflow.getHandle(`prepull/${WARM}/mac-2/${image}`);
      expect(await pre.result()).toMatchObject({ cached: false, fetchedBytes: expect.any(Number) });
      expect((await pre.describe()).raw.workflowExecutionInfo?.type?.name).toBe('prePullWorkflow');

      const id = uniqueId('after-prepull');
      const r = await (
        await startJob(client, config, { id, pool: WARM, image, script: 'echo ok', timeoutSeconds: 60 })
      ).result();
      expect(r.state).toBe('succeeded');
      expect(await ensureImageResults(client, jobWorkflowId(id))).toEqual([expect.objectContaining({ cached: true })]);
    } finally {
      await applyPoolSettings(client, config, WARM, 'test');
    }
  });

  it('comes back by itself when its workflow is terminated: every queued job runs once, no host over its slots', async () => {
    const witness = join(mkdtempSync(join(tmpdir(), 'marina-revive-')), 'witness');
    const ids = Array.from({ length: 5 }, (_, i) => uniqueId(`revive-${i}`));
    // Each script reports its start and end, with the time, to a file Marina does not control.
    const handles = await Promise.all(
      ids.map((id) =>
        startJob(client, config, {
          id,
          pool: REVIVE,
          image: SEED_IMAGE,
          script: `echo "start ${id} $(date +%s%N)" >> ${witness}; sleep 4; echo "end ${id} $(date +%s%N)" >> ${witness}`,
          timeoutSeconds: 120,
        }),
      ),
    );
    const pool = client.workflow.getHandle(poolWorkflowId(REVIVE));
    await eventually(
      'two scripts running and three jobs queued',
      async () => {
        const s = await pool.query(poolStateQuery);
        const started = existsSync(witness) ? readFileSync(witness, 'utf8').match(/^start /gm)?.length : 0;
        return s.running === 2 && s.queued === 3 && started === 2;
      },
      60_000,
    );
    const lostRun = (await pool.describe()).runId;
    await pool.terminate('test: the pool workflow is lost');

    // No worker restart: the jobs themselves bring the pool back, and it learns from them what they hold.
    const results = await Promise.all(handles.map((h) => h.result()));
    expect(results.map((r) => r.state)).toEqual(ids.map(() => 'succeeded'));
    const lines = readFileSync(witness, 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split(' '));
    for (const id of ids) {
      expect(lines.filter(([what, who]) => what === 'start' && who === id)).toHaveLength(1);
      expect(lines.filter(([what, who]) => what === 'end' && who === id)).toHaveLength(1);
    }
    // At no moment did mac-1 run more scripts than its 2 slots.
    let running = 0;
    let most = 0;
    for (const [what] of lines
      .map(([what, , t]) => [what, BigInt(t!)] as const)
      .sort((a, b) => (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : a[0] === 'end' ? -1 : 1))) {
      running += what === 'start' ? 1 : -1;
      most = Math.max(most, running);
    }
    expect(most).toBe(2);
    const now = await pool.describe();
    expect(now.runId).not.toBe(lostRun);
    await recordHistory('pool-recovered-after-terminate', pool);
    await recordHistory('job-across-pool-restart', handles[4]!);
    expect((await pool.query(poolStateQuery)).decisions!.map((d) => d.what)).toContainEqual(
      expect.stringMatching(/^recovered after a restart: \d+ lease\(s\) and \d+ waiting request\(s\)/),
    );
  });

  it('parks a message that keeps failing and shows it, while later grants still go out', async () => {
    const pool = client.workflow.getHandle(poolWorkflowId(BURST));
    const ctl = (c: PoolControl) => pool.executeUpdate(controlPoolUpdate, { args: [c] });
    const probe = (args: Record<string, unknown>) =>
      client.workflow.start<typeof leaseProbeWorkflow>('leaseProbeWorkflow', {
        workflowId: uniqueId('outbox-probe'),
        taskQueue: config.temporal.taskQueue,
        args: [{ pool: BURST, ...args }],
      });
    await ctl({ action: 'pause' });
    const poisoned = await probe({});
    await eventually('the probe queued', async () =>
      (await pool.query(poolStateQuery)).queue.some((q) => q.jobWorkflowId === poisoned.workflowId),
    );
    // Use up the probe's signal budget (the test server allows 1000 per run): every signal to it now
    // fails on the server, as a message to a broken workflow would.
    let refusedAt = 0;
    for (let i = 0; i < 1100 && !refusedAt; i += 50) {
      await Promise.all(
        Array.from({ length: 50 }, (_, j) =>
          poisoned.signal('noise').catch((e: Error & { cause?: Error }) => {
            if (/exceeded workflow execution limit for signal/.test(e.cause?.message ?? '')) refusedAt ||= i + j;
          }),
        ),
      );
    }
    expect(refusedAt).toBeGreaterThan(0);
    const others = await Promise.all(Array.from({ length: 6 }, () => probe({ holdMs: 100 })));
    await ctl({ action: 'resume' });
    // Everyone else is placed and runs while the poisoned grant is retried, then given up on.
    expect((await Promise.all(others.map((h) => h.result()))).every((r) => r.leaseId)).toBe(true);
    const parked = await eventually(
      'the grant parked',
      async () => (await pool.query(poolStateQuery)).parked?.find((p) => p.to === poisoned.workflowId),
      60_000,
    );
    expect(parked).toMatchObject({
      kind: 'granted',
      attempts: 5,
      error: expect.stringMatching(/exceeded workflow execution limit/),
    });
    const s = await pool.query(poolStateQuery);
    expect(s.decisions!.map((d) => d.what)).toContainEqual(
      expect.stringMatching(new RegExp(`^grant to ${poisoned.workflowId} undeliverable .*stays held`)),
    );
    // The operator sees it in the Web UI's current details.
    const meta = await pool.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
    expect(meta.currentDetails).toMatch(new RegExp(`Messages given up on[\\s\\S]*granted to ${poisoned.workflowId}`));
    // The slot stays held (the grant may have landed) until the job closes; then the lease check frees it.
    expect(s.leases.some((l) => l.jobWorkflowId === poisoned.workflowId)).toBe(true);
    await poisoned.terminate('test done');
    await eventually('its slot back', async () =>
      (await pool.query(poolStateQuery)).leases.every((l) => l.jobWorkflowId !== poisoned.workflowId),
    );
  });

  it("takes settings only from marina pool apply: another worker's file changes nothing; apply shows the difference, records who, refuses a stale one", async () => {
    const pool = client.workflow.getHandle(poolWorkflowId(TINY));
    const before = await pool.query(poolSettingsQuery);
    expect(before.settings.queueLimit).toBe(2);
    // A second worker whose file says otherwise, and a worker from before versioned settings (its signal).
    const raw = parseYaml(readFileSync(config.path, 'utf8')) as { pools: { name: string; queueLimit?: number }[] };
    raw.pools.find((p) => p.name === TINY)!.queueLimit = 7;
    const otherPath = join(mkdtempSync(join(tmpdir(), 'marina-apply-')), 'other.yaml');
    writeFileSync(otherPath, stringifyYaml(raw));
    const other = loadConfig(otherPath);
    const otherTiny = other.pools.find((p) => p.name === TINY)!;
    await ensurePools(client, other);
    await pool.signal(syncHostsSignal, poolSettings(otherTiny));
    // An update is answered after every signal sent before it: the pool has seen both by now.
    await pool.executeUpdate(controlPoolUpdate, { args: [{ action: 'resume' }] });
    expect(await pool.query(poolSettingsQuery)).toEqual(before);

    const apply = (...args: string[]) =>
      run('./bin/marina', ['pool', 'apply', '-f', other.path, '--pool', TINY, ...args], { encoding: 'utf8' });
    const dry = await apply('--dry-run');
    expect(dry.stdout).toContain(`pool ${TINY}: 1 change(s) to v${before.version!.version}`);
    expect(dry.stdout).toContain('~ queueLimit: 2 -> 7');
    expect((await pool.query(poolSettingsQuery)).settings.queueLimit).toBe(2);

    const applied = await apply('--by', 'ops@example');
    expect(applied.stdout).toContain(`now runs settings v${before.version!.version + 1}, set by ops@example`);
    const after = await pool.query(poolSettingsQuery);
    expect(after.settings.queueLimit).toBe(7);
    expect(after.version).toMatchObject({
      version: before.version!.version + 1,
      by: 'ops@example',
      source: other.path,
    });
    expect((await apply()).stdout).toContain(`pool ${TINY}: no change (v${after.version!.version} by ops@example`);

    // Two operators at once: the second one's difference was made against the old version, so it is refused.
    await expect(
      pool.executeUpdate(applySettingsUpdate, {
        args: [{ settings: before.settings, by: 'late@example', basedOn: before.version!.version }],
      }),
    ).rejects.toMatchObject({
      cause: {
        message: expect.stringMatching(
          /moved to v\d+ since the difference was made against v\d+: run marina pool apply again/,
        ),
      },
    });
    expect((await pool.query(poolSettingsQuery)).version).toEqual(after.version);

    // Back to the suite's file; the version only goes up.
    const back = await applyPoolSettings(client, config, TINY, 'test');
    expect(back.version.version).toBe(after.version!.version + 1);
    expect(back.changes).toEqual([{ path: 'queueLimit', kind: 'changed', from: 7, to: 2 }]);
  });

  it('refuses a job past the queue limit with an error naming the limit, and loses none already queued', async () => {
    const pool = client.workflow.getHandle(poolWorkflowId(TINY));
    const probe = (args: Record<string, unknown>) =>
      client.workflow.start<typeof leaseProbeWorkflow>('leaseProbeWorkflow', {
        workflowId: uniqueId('tiny'),
        taskQueue: config.temporal.taskQueue,
        args: [{ pool: TINY, ...args }],
      });
    const holder = await probe({});
    await eventually('the slot taken', async () => (await pool.query(poolStateQuery)).running === 1);
    const queued = await Promise.all([probe({ holdMs: 10 }), probe({ holdMs: 10 })]);
    await eventually('two queued', async () => (await pool.query(poolStateQuery)).queued === 2);
    const refused = await startJob(client, config, {
      id: uniqueId('too-many'),
      pool: TINY,
      image: SEED_IMAGE,
      script: 'echo never',
      timeoutSeconds: 60,
    });
    await expect(refused.result()).rejects.toMatchObject({
      cause: {
        message: expect.stringMatching(
          /refused by pool "tiny": pool tiny has 2 jobs queued, its limit \(queueLimit: 2\): submit again later, or raise pools\[\]\.queueLimit/,
        ),
      },
    });
    await holder.signal(finishProbeSignal);
    const results = await Promise.all([holder, ...queued].map((h) => h.result()));
    expect(new Set(results.map((r) => r.leaseId)).size).toBe(3);
  });
});

async function runsOf(workflowId: string): Promise<number> {
  let n = 0;
  for await (const _ of client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) n++;
  return n;
}
