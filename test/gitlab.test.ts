/**
 * GitLab's custom executor on the real local stack: the harness (test/gitlab-harness.ts) calls
 * `marina gitlab config|prepare|run|cleanup` as gitlab-runner does, against a worker in its own
 * process (so a test can SIGKILL it), emulated Mac hosts over real SSH, Temporal and S3.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { Client, Connection, WorkflowNotFoundError } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import type { LoadedConfig } from '../src/config/load';
import { SEED_IMAGE } from '../src/emulator/seed-image';
import { freePort } from '../src/emulator/processes';
import { jobWorkflowId } from '../src/domain/job';
import { poolStateQuery, poolWorkflowId, type SessionView } from '../workflows/definitions';
import { cliOutcome, eventually, fileConfig, leftoverVms, recordHistory, spawnWorker, vmProcesses } from './helpers';
import { BUILD_FAILURE, GitlabRunnerHarness, MAIN_STAGES, SYSTEM_FAILURE, generatedScript } from './gitlab-harness';

const POOL = 'gitlab';
const DEAD = 'gitlab-dead';
let config: LoadedConfig;
let client: Client;
let worker: ChildProcess;
const workers: ChildProcess[] = [];

beforeAll(async () => {
  const deadPort = await freePort(); // nothing listens here: the host is unreachable
  config = fileConfig(POOL, (raw) => {
    raw.pools[0].security = { allowedImages: ['macos-base'] };
    // A pool whose only host cannot be reached; checked rarely, so it is not cordoned before a job takes it.
    raw.pools.push({
      ...raw.pools[0],
      name: DEAD,
      healthCheckSeconds: 3600,
      hosts: [{ name: 'mac-dead', address: '127.0.0.1', ssh: { port: deadPort }, labels: { os: 'macos' } }],
    });
  });
  client = new Client({ connection: await Connection.connect({ address: config.temporal.address }) });
  worker = startWorker();
});

afterAll(async () => {
  for (const w of workers) w.kill('SIGKILL');
  await client?.connection.close();
});

function startWorker(): ChildProcess {
  const w = spawnWorker(config);
  workers.push(w);
  return w;
}

let seq = 0;
const ciJobId = () => `${Date.now()}${seq++}`;
const witnessFile = () => join(mkdtempSync(join(tmpdir(), 'marina-gl-witness-')), 'witness');
const read = (f: string) => (existsSync(f) ? readFileSync(f, 'utf8') : '');

/** Every byte of a workflow's history (its payloads included), to search for what must not be there. */
async function historyBytes(workflowId: string): Promise<Buffer> {
  const h = await client.workflow.getHandle(workflowId).fetchHistory();
  return Buffer.from(
    temporal.api.history.v1.History.encode(h as Parameters<typeof temporal.api.history.v1.History.encode>[0]).finish(),
  );
}

async function leasesOf(pool: string, jobId: string) {
  const s = await client.workflow.getHandle(poolWorkflowId(pool)).query(poolStateQuery);
  return s.leases.filter((l) => l.jobWorkflowId === jobWorkflowId(jobId));
}

/** Started attempts of an activity type in a history: more than one means a retry took over. */
async function maxAttempt(workflowId: string, type: string): Promise<number> {
  const { events } = await client.workflow.getHandle(workflowId).fetchHistory();
  const scheduled = new Set(
    events!
      .filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === type)
      .map((e) => String(e.eventId)),
  );
  return Math.max(
    0,
    ...events!
      .filter((e) => scheduled.has(String(e.activityTaskStartedEventAttributes?.scheduledEventId)))
      .map((e) => e.activityTaskStartedEventAttributes!.attempt ?? 0),
  );
}

const TICKS = `begin\n${[1, 2, 3, 4, 5, 6].map((i) => `tick ${i}\n`).join('')}finish\n`;
const slowScript = (witness: string) =>
  generatedScript(
    'build_script',
    `echo begin; echo ran >> ${witness}; for i in 1 2 3 4 5 6; do echo "tick $i"; sleep 0.5; done; echo finish`,
  );

describe('GitLab custom executor', () => {
  it('runs a job: config JSON, every stage in the VM, output streamed, VM gone after cleanup', async () => {
    const id = ciJobId();
    const h = new GitlabRunnerHarness(config, { ciJobId: id, image: SEED_IMAGE }, { prepare: ['--pool', POOL] });
    const r = await h.runJob();
    expect(r.code, JSON.stringify(h.calls, null, 1)).toBe(0);
    expect(JSON.parse(h.calls[0]!.stdout)).toEqual({
      builds_dir: '/var/tmp/builds',
      cache_dir: '/var/tmp/cache',
      builds_dir_is_shared: false,
      hostname: `marina-gitlab-${id}`,
      driver: { name: 'marina', version: expect.any(String) },
      job_env: {},
    });
    expect(h.calls[1]!.stdout).toContain(`VM marina-gitlab-${id} on mac-`);
    for (const stage of [...MAIN_STAGES, 'after_script', 'archive_cache', 'upload_artifacts_on_success'])
      expect(r.stages[stage]!.stdout).toBe(`Running ${stage}\nstage ${stage}\n`);
    const v = (await client.workflow.getHandle(jobWorkflowId(`gitlab-${id}`)).result()) as unknown as SessionView;
    expect(v.closedBy).toBe('cleanup');
    expect(v.steps.map((s) => [s.stage, s.exitCode])).toEqual(
      [...MAIN_STAGES, 'after_script', 'archive_cache', 'upload_artifacts_on_success', 'cleanup_file_variables'].map(
        (s) => [s, 0],
      ),
    );
    expect(leftoverVms(`gitlab-${id}`)).toEqual([]);
    expect(await leasesOf(POOL, `gitlab-${id}`)).toEqual([]);
  }, 480_000);

  it("a failing build_script: BUILD_FAILURE_EXIT_CODE, the real code in BUILD_EXIT_CODE_FILE, after_script still runs; the job's token never in history", async () => {
    const id = ciJobId();
    const witness = witnessFile();
    const token = `glcbt-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
    const h = new GitlabRunnerHarness(
      config,
      {
        ciJobId: id,
        image: SEED_IMAGE,
        scripts: {
          build_script: generatedScript('build_script', `echo building; echo build >> ${witness}; exit 3`, {
            CI_JOB_TOKEN: token,
          }),
          after_script: generatedScript('after_script', `echo after >> ${witness}; echo tidying`, {
            CI_JOB_TOKEN: token,
          }),
        },
      },
      { prepare: ['--pool', POOL] },
    );
    const r = await h.runJob();
    expect(r.code, JSON.stringify(h.calls, null, 1)).toBe(BUILD_FAILURE);
    expect(r.stages.build_script!.stdout).toBe('Running build_script\nbuilding\n');
    expect(r.stages.build_script!.stderr).toContain('build_script failed with exit code 3');
    expect(h.buildExitCode()).toBe('3');
    expect(r.stages.after_script!.code).toBe(0);
    expect(r.stages.after_script!.stdout).toBe('Running after_script\ntidying\n');
    expect(read(witness)).toBe('build\nafter\n');
    expect(Object.keys(r.stages)).toEqual([
      ...MAIN_STAGES,
      'after_script',
      'archive_cache_on_failure',
      'upload_artifacts_on_failure',
      'cleanup_file_variables',
      'cleanup',
    ]);
    expect(r.stages.cleanup!.code).toBe(0);
    expect(leftoverVms(`gitlab-${id}`)).toEqual([]);
    // The stage scripts carried the job token: by S3 reference only, never in the workflow's history.
    expect((await historyBytes(jobWorkflowId(`gitlab-${id}`))).includes(token)).toBe(false);
    await recordHistory(
      'session-build-fails-after-script-runs',
      client.workflow.getHandle(jobWorkflowId(`gitlab-${id}`)),
    );
  }, 480_000);

  it('an image the pool does not allow is refused in prepare with a clear message (no retry, nothing started)', async () => {
    const id = ciJobId();
    const h = new GitlabRunnerHarness(config, { ciJobId: id, image: 'ubuntu:22.04' }, { prepare: ['--pool', POOL] });
    const r = await h.runJob();
    expect(r.code, JSON.stringify(h.calls, null, 1)).toBe(BUILD_FAILURE);
    const prepares = h.calls.filter((c) => c.args[0] === 'prepare');
    expect(prepares).toHaveLength(1);
    expect(prepares[0]!.stderr).toContain(
      'refused: image "ubuntu:22.04" is not allowed in pool gitlab (security.allowedImages: macos-base)',
    );
    await expect(client.workflow.getHandle(jobWorkflowId(`gitlab-${id}`)).describe()).rejects.toBeInstanceOf(
      WorkflowNotFoundError,
    );
    expect(r.stages.cleanup!.code).toBe(0);
  }, 120_000);

  it('an unreachable host: SYSTEM_FAILURE_EXIT_CODE from prepare (retried as the runner does), lease returned', async () => {
    const id = ciJobId();
    const h = new GitlabRunnerHarness(
      config,
      { ciJobId: id, image: SEED_IMAGE },
      { prepare: ['--pool', DEAD, '--queue-timeout', '20s'] },
    );
    const r = await h.runJob();
    expect(r.code, JSON.stringify(h.calls, null, 1)).toBe(SYSTEM_FAILURE);
    const prepares = h.calls.filter((c) => c.args[0] === 'prepare');
    expect(prepares.map((p) => p.code)).toEqual([SYSTEM_FAILURE, SYSTEM_FAILURE, SYSTEM_FAILURE]);
    // Placed on the host before its health checks gave up on it (the SSH error), or left queued (the pool's account of it).
    expect(prepares[0]!.stderr).toMatch(
      /system failure: .*(ssh to host gitlab-dead\/mac-dead|mac-dead: .*ssh to host)/,
    );
    expect(r.stages.cleanup!.code).toBe(0);
    expect(await leasesOf(DEAD, `gitlab-${id}`)).toEqual([]);
  }, 480_000);

  it('the worker SIGKILLed in the middle of a stage: the stage completes once, its output whole', async () => {
    const id = ciJobId();
    const witness = witnessFile();
    const h = new GitlabRunnerHarness(
      config,
      { ciJobId: id, image: SEED_IMAGE, scripts: { build_script: slowScript(witness) } },
      { prepare: ['--pool', POOL] },
    );
    expect((await h.config_()).code).toBe(0);
    expect((await h.prepare()).code).toBe(0);
    for (const stage of MAIN_STAGES.slice(0, -1)) expect((await h.run(stage)).code).toBe(0);
    const run = cliOutcome(h.spawnRun('build_script'));
    await eventually('the stage running', async () => read(witness) !== '', 90_000);
    worker.kill('SIGKILL');
    await new Promise((r) => worker.once('exit', r));
    worker = startWorker();
    const out = await run;
    expect(out.code).toBe(0);
    expect(out.stdout).toBe(`Running build_script\n${TICKS}`);
    expect(read(witness)).toBe('ran\n'); // once
    // The kill landed inside the step: a second attempt took it over.
    expect(await maxAttempt(jobWorkflowId(`gitlab-${id}`), 'runScript')).toBeGreaterThanOrEqual(2);
    expect((await h.run('after_script')).code).toBe(0);
    expect((await h.cleanup()).code).toBe(0);
    expect(leftoverVms(`gitlab-${id}`)).toEqual([]);
  }, 480_000);

  it('the executor killed mid-stage: run again attaches (once); never cleaned up, the VM is reaped after the idle timeout', async () => {
    const id = ciJobId();
    const witness = witnessFile();
    const h = new GitlabRunnerHarness(
      config,
      { ciJobId: id, image: SEED_IMAGE, scripts: { build_script: slowScript(witness) } },
      // Long enough for the gaps between this machine's process starts, short for the test.
      { prepare: ['--pool', POOL, '--idle-timeout', '20s'] },
    );
    expect((await h.config_()).code).toBe(0);
    expect((await h.prepare()).code).toBe(0);
    for (const stage of MAIN_STAGES.slice(0, -1)) expect((await h.run(stage)).code).toBe(0);
    const child = h.spawnRun('build_script');
    const killed = cliOutcome(child);
    await eventually('the stage running', async () => read(witness) !== '', 90_000);
    process.kill(-child.pid!, 'SIGKILL'); // its whole process group, as the runner kills
    expect((await killed).signal).toBe('SIGKILL');
    const again = await h.run('build_script');
    expect(again.code).toBe(0);
    expect(again.stdout).toBe(`Running build_script\n${TICKS}`);
    expect(read(witness)).toBe('ran\n');

    // The executor is gone for good: no more stages, no cleanup. The session reaps itself.
    const handle = client.workflow.getHandle(jobWorkflowId(`gitlab-${id}`));
    const v = (await handle.result()) as unknown as SessionView;
    expect(v.closedBy).toBe('idle-timeout');
    await recordHistory('session-attach-then-idle-reap', handle);
    expect(v.state).toBe('closed');
    expect(leftoverVms(`gitlab-${id}`)).toEqual([]);
    await eventually('lease returned', async () => (await leasesOf(POOL, `gitlab-${id}`)).length === 0);
    // A cleanup that comes late finds nothing to do.
    const late = await h.cleanup();
    expect(late.code).toBe(0);
    expect(late.stdout).toContain('nothing to clean');
  }, 480_000);

  it('a job cancelled mid-stage: SIGTERM to run, then cleanup stops the script and destroys the VM', async () => {
    const id = ciJobId();
    const witness = witnessFile();
    const h = new GitlabRunnerHarness(
      config,
      {
        ciJobId: id,
        image: SEED_IMAGE,
        scripts: { build_script: generatedScript('build_script', `echo started >> ${witness}; sleep 300`) },
      },
      { prepare: ['--pool', POOL] },
    );
    expect((await h.config_()).code).toBe(0);
    expect((await h.prepare()).code).toBe(0);
    const child = h.spawnRun('build_script');
    const run = cliOutcome(child);
    await eventually('the stage running', async () => read(witness) !== '', 90_000);
    // What the runner does on a cancel (or its job timeout): SIGTERM to the process group, then cleanup_exec.
    process.kill(-child.pid!, 'SIGTERM');
    expect((await run).signal).toBe('SIGTERM');
    expect(vmProcesses(`gitlab-${id}`).length).toBeGreaterThan(0); // the script runs on until cleanup
    const cleanup = await h.cleanup();
    expect(cleanup.code).toBe(0);
    expect(cleanup.stdout).toContain(`session gitlab-${id} closed`);
    const v = (await client.workflow.getHandle(jobWorkflowId(`gitlab-${id}`)).result()) as unknown as SessionView;
    expect(v.closedBy).toBe('cleanup');
    expect(v.steps.find((s) => s.stage === 'build_script')?.systemError).toMatch(/stopped: the session was closed/);
    expect(leftoverVms(`gitlab-${id}`)).toEqual([]);
    expect(vmProcesses(`gitlab-${id}`)).toEqual([]);
    expect(await leasesOf(POOL, `gitlab-${id}`)).toEqual([]);
  }, 480_000);
});
