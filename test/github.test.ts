/**
 * GitHub Actions JIT runners on the real local stack: recorded webhook payloads (re-signed) into
 * `marina github serve`'s handler, a GitHub API stand-in, and a runner stand-in in the emulated VM.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { Client, Connection, WorkflowNotFoundError } from '@temporalio/client';
import type { LoadedConfig } from '../src/config/load';
import { startWebhookServer, type WebhookServer } from '../src/github/server';
import { githubScanScheduleId } from '../src/github/schedule';
import { githubRunnerName } from '../src/github/types';
import { controlPoolUpdate, poolStateQuery, poolWorkflowId, type JobResult } from '../workflows/definitions';
import {
  eventually,
  fileConfig,
  leftoverVms,
  readJobLog,
  recordHistory,
  spawnCli,
  spawnWorker,
  stack,
  startWorker,
} from './helpers';
import { GithubStandIn } from './github/stand-in';
import { appKeyPair, deliver, recordedPayload, runnerImage } from './github/fixtures';

const POOL = 'github';
const REPO = 'Codertocat/Hello-World';
/** A repository not listed itself, whose owner is an organisation target: its runners register there. */
const ORG_REPO = 'Codertocat/Other-World';
const APP_ID = 4242;
const WEBHOOK_SECRET = 'It is a secret to everybody, test edition';
let config: LoadedConfig;
let client: Client;
let standIn: GithubStandIn;
let server: WebhookServer;
let worker: { stop: () => Promise<void> } | undefined;
let sign: (body: string) => Promise<string>;
let appKey: { privateKey: string; publicKey: string };
const children: ChildProcess[] = [];
/** Every job workflow the tests started: the history check reads them all. */
const workflowIds: string[] = [];
let nextJob = 7_100_000_000 + Math.floor(Math.random() * 1_000_000) * 100;

function newJob(opts: { hold?: boolean; repository?: string } = {}) {
  const id = nextJob++;
  standIn.addJob({
    id,
    runId: id + 50,
    repository: opts.repository ?? REPO,
    name: `build ${id}`,
    labels: ['ubuntu-latest'],
    steps: ['Set up job', 'Run make test', 'Complete job'],
    ...opts,
  });
  workflowIds.push(`job/gh-${id}`);
  return { id, runId: id + 50, wf: `job/gh-${id}`, runner: githubRunnerName(id) };
}

async function queuedDelivery(job: { id: number; runId: number }, delivery?: string) {
  const body = await recordedPayload('queued', job.id, job.runId);
  return deliver(server.url, body, await sign(body), delivery);
}

async function noLeaseFor(wf: string): Promise<boolean> {
  const s = await client.workflow.getHandle(poolWorkflowId(POOL)).query(poolStateQuery);
  return !s.leases.some((l) => l.jobWorkflowId === wf) && !s.queue.some((q) => q.jobWorkflowId === wf);
}

beforeAll(async () => {
  appKey = appKeyPair();
  const keyFile = join(stack().stateDir, 'github-app.pem');
  writeFileSync(keyFile, appKey.privateKey, { mode: 0o600 });
  const secretFile = join(stack().stateDir, 'github-webhook-secret');
  writeFileSync(secretFile, `${WEBHOOK_SECRET}\n`, { mode: 0o600 });
  standIn = new GithubStandIn(APP_ID, appKey.publicKey, [{ id: 3456996, account: 'Codertocat', repositories: [REPO] }]);
  await standIn.start();
  const base = fileConfig(POOL);
  const vmKey = join(stack().stateDir, 'keys', 'vm_ed25519');
  const image = await runnerImage(base, `gh-runner-${Date.now().toString(36)}`, vmKey);
  config = fileConfig(POOL, (raw) => {
    raw.github = {
      apiUrl: standIn.url,
      app: { appId: APP_ID, privateKey: { file: keyFile } },
      webhookSecret: { file: secretFile },
      listen: { port: 0 },
      targets: [{ repository: REPO }, { organization: 'Codertocat', runnerGroupId: 3 }],
      // The schedule is triggered by the test (the missed-webhook case): no scan interferes with the others.
      scanSeconds: 3600,
      idleCheckSeconds: 1,
    };
    raw.pools[0].github = { labels: ['self-hosted', 'ubuntu-latest', 'marina-test'], image, timeoutSeconds: 300 };
  });
  client = new Client({ connection: await Connection.connect({ address: config.temporal.address }) });
  const { Webhooks } = await import('@octokit/webhooks');
  const webhooks = new Webhooks({ secret: WEBHOOK_SECRET });
  sign = (body) => webhooks.sign(body);
  worker = await startWorker(config);
  server = await startWebhookServer(client, config, { port: 0, log: () => undefined });
}, 120_000);

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await server?.close().catch(() => undefined);
  await worker?.stop();
  await standIn?.stop();
  await client?.connection.close();
});

describe('GitHub Actions JIT runners', () => {
  it('a queued job: one JIT runner runs it in a VM, then the VM is gone and the runner deregistered', async () => {
    const job = newJob();
    const res = await queuedDelivery(job);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ outcome: 'started', jobId: `gh-${job.id}`, pool: POOL });
    const r = (await client.workflow.getHandle(job.wf).result()) as JobResult & { tookJob?: boolean };
    expect(r.state).toBe('succeeded');
    const log = await readJobLog(config, r.log.key);
    expect(log).toContain(`Running job: build ${job.id} (${REPO}, job ${job.id})`);
    expect(log).toContain('  step 2: Run make test');
    expect(log).toContain('completed with result: Succeeded');
    expect(standIn.jobs.get(job.id)).toMatchObject({
      status: 'completed',
      conclusion: 'success',
      runnerName: job.runner,
    });
    expect(standIn.count('jit', job.runner)).toBe(1);
    expect(standIn.runnersNamed(job.runner)).toEqual([]);
    expect(leftoverVms(`gh-${job.id}`)).toEqual([]);
    // Fair share: the client is the repository.
    const d = await client.workflow.getHandle(job.wf).describe();
    expect(d.searchAttributes.MarinaClient).toEqual([REPO]);
    await recordHistory('job-github-jit-runner', client.workflow.getHandle(job.wf));
  });

  it('an organisation target: the runner registers at organisation level', async () => {
    const job = newJob({ repository: ORG_REPO });
    const payload = JSON.parse(await recordedPayload('queued', job.id, job.runId)) as {
      repository: { full_name: string; name: string };
    };
    payload.repository.full_name = ORG_REPO;
    payload.repository.name = 'Other-World';
    const body = JSON.stringify(payload);
    expect((await deliver(server.url, body, await sign(body))).body.outcome).toBe('started');
    const r = (await client.workflow.getHandle(job.wf).result()) as JobResult;
    expect(r.state).toBe('succeeded');
    expect(standIn.jobs.get(job.id)).toMatchObject({ status: 'completed', runnerName: job.runner });
    expect(standIn.registrations.filter((x) => x.name === job.runner)).toEqual([
      { name: job.runner, scope: 'org/Codertocat', groupId: 3 },
    ]);
    expect(standIn.runnersNamed(job.runner)).toEqual([]);
  });

  it('a redelivered webhook starts no second runner', async () => {
    const job = newJob();
    const delivery = '72d3162e-cc78-11e3-81ab-4c9367dc0958';
    const [a, b] = await Promise.all([queuedDelivery(job, delivery), queuedDelivery(job, delivery)]);
    expect([a.body.outcome, b.body.outcome].sort()).toEqual(['duplicate', 'started']);
    const r = (await client.workflow.getHandle(job.wf).result()) as JobResult;
    expect(r.state).toBe('succeeded');
    // Redelivered again after the job ended: still nothing new.
    expect((await queuedDelivery(job, delivery)).body.outcome).toBe('duplicate');
    expect(standIn.count('jit', job.runner)).toBe(1);
    expect(standIn.count('claim', job.runner)).toBe(1);
  });

  it('a bad or missing signature gets 401 and starts nothing', async () => {
    const job = newJob();
    const body = await recordedPayload('queued', job.id, job.runId);
    const wrong = await new (await import('@octokit/webhooks')).Webhooks({ secret: 'not the secret' }).sign(body);
    expect((await deliver(server.url, body, wrong)).status).toBe(401);
    expect((await deliver(server.url, body, undefined)).status).toBe(401);
    // A valid signature over other bytes (the body changed in transit) is refused too.
    expect((await deliver(server.url, body.replace('"queued"', '"queued" '), await sign(body))).status).toBe(401);
    await expect(client.workflow.getHandle(job.wf).describe()).rejects.toBeInstanceOf(WorkflowNotFoundError);
    expect(standIn.count('jit', job.runner)).toBe(0);
    workflowIds.pop();
    standIn.cancel(job.id);
  });

  it('marina github serve, as its own process: 401 for a bad signature, 200 for a good one', async () => {
    const cli = spawnCli(config, ['github', 'serve', '--port', '0']);
    children.push(cli);
    try {
      let out = '';
      cli.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      const url = await eventually('the receiver listening', async () => /listening on (\S+)/.exec(out)?.[1], 60_000);
      const body = JSON.parse(await recordedPayload('queued', nextJob++, 1)) as { workflow_job: { labels: string[] } };
      body.workflow_job.labels = ['gpu-only'];
      const text = JSON.stringify(body);
      expect((await deliver(url, text, 'sha256=' + '0'.repeat(64))).status).toBe(401);
      const ok = await deliver(url, text, await sign(text));
      expect(ok).toMatchObject({ status: 200, body: { outcome: 'ignored' } });
    } finally {
      cli.kill('SIGTERM');
      await new Promise((r) => cli.once('exit', r));
    }
  });

  it('a job whose labels match no pool is ignored', async () => {
    const body = JSON.parse(await recordedPayload('queued', nextJob++, 1)) as { workflow_job: { labels: string[] } };
    body.workflow_job.labels = ['self-hosted', 'k8s'];
    const text = JSON.stringify(body);
    const res = await deliver(server.url, text, await sign(text));
    expect(res.status).toBe(200);
    expect(res.body.outcome).toBe('ignored');
    expect(String(res.body.reason)).toContain('no pool');
  });

  it('a job cancelled on GitHub before its runner took it: no runner left registered, the slot returned', async () => {
    const job = newJob({ hold: true });
    expect((await queuedDelivery(job)).body.outcome).toBe('started');
    // The runner is up and polling; GitHub has given it nothing.
    await eventually('runner online', async () => standIn.count('online', job.runner) > 0, 90_000);
    standIn.cancel(job.id);
    const body = await recordedPayload('completed', job.id, job.runId);
    const res = await deliver(server.url, body, await sign(body));
    expect(res.status).toBe(200);
    const r = (await client.workflow.getHandle(job.wf).result()) as JobResult & { stoppedIdle?: boolean };
    expect(r.state).toBe('succeeded');
    expect(standIn.runnersNamed(job.runner)).toEqual([]);
    expect(standIn.count('delete', job.runner)).toBe(1);
    expect(standIn.count('claim', job.runner)).toBe(0);
    expect(leftoverVms(`gh-${job.id}`)).toEqual([]);
    expect(await noLeaseFor(job.wf)).toBe(true);
  });

  it('a job completed while waiting for a slot: its workflow is cancelled, no runner ever registered', async () => {
    const pool = client.workflow.getHandle(poolWorkflowId(POOL));
    await pool.executeUpdate(controlPoolUpdate, { args: [{ action: 'pause' }] });
    try {
      const job = newJob({ hold: true });
      expect((await queuedDelivery(job)).body.outcome).toBe('started');
      await eventually('queued in the pool', async () => {
        const s = await pool.query(poolStateQuery);
        return s.queue.some((q) => q.jobWorkflowId === job.wf);
      });
      standIn.cancel(job.id);
      const body = await recordedPayload('completed', job.id, job.runId);
      const res = await deliver(server.url, body, await sign(body));
      expect(res.body.outcome).toBe('cancelled');
      await eventually('workflow cancelled', async () => {
        const d = await client.workflow.getHandle(job.wf).describe();
        return d.status.name === 'CANCELLED';
      });
      expect(standIn.count('jit', job.runner)).toBe(0);
      await eventually('slot request withdrawn', () => noLeaseFor(job.wf));
    } finally {
      await pool.executeUpdate(controlPoolUpdate, { args: [{ action: 'resume' }] });
    }
  });

  it('a webhook missed while the receiver was down: the Schedule starts the job', async () => {
    await server.close();
    const job = newJob();
    // No delivery: the receiver is down. The target's Schedule lists queued jobs and starts this one.
    await client.schedule.getHandle(githubScanScheduleId(config, `repo/${REPO}`)).trigger();
    const r = await eventually(
      'the missed job ran',
      async () => (await client.workflow.getHandle(job.wf).result()) as JobResult,
      120_000,
    );
    expect(r.state).toBe('succeeded');
    expect(standIn.jobs.get(job.id)?.status).toBe('completed');
    expect(standIn.count('jit', job.runner)).toBe(1);
    server = await startWebhookServer(client, config, { port: 0, log: () => undefined });
  });

  it('the worker SIGKILLed once the JIT runner is registered: one runner runs the job, none is left', async () => {
    await worker?.stop();
    worker = undefined;
    let child = spawnWorker(config);
    children.push(child);
    const job = newJob();
    let killed = false;
    standIn.onGenerate = async (runner) => {
      if (runner.name !== job.runner || killed) return;
      killed = true;
      // GitHub holds the registration; the worker dies before it has the config.
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      child = spawnWorker(config);
      children.push(child);
    };
    try {
      expect((await queuedDelivery(job)).body.outcome).toBe('started');
      const r = (await client.workflow.getHandle(job.wf).result()) as JobResult;
      expect(r.state).toBe('succeeded');
      expect(killed).toBe(true);
      // Two registrations over time (the first one's config died with the worker), never two runners: the stale
      // one was deleted before the second was made, and one runner claimed the job.
      expect(standIn.count('jit', job.runner)).toBe(2);
      expect(standIn.count('delete', job.runner)).toBe(1);
      expect(standIn.count('claim', job.runner)).toBe(1);
      expect(standIn.count('online', job.runner)).toBe(1);
      expect(standIn.runnersNamed(job.runner)).toEqual([]);
      expect(leftoverVms(`gh-${job.id}`)).toEqual([]);
    } finally {
      standIn.onGenerate = undefined;
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      worker = await startWorker(config);
    }
  });

  it('no JIT config, installation token or App key in any history or job log', async () => {
    const { temporal } = await import('@temporalio/proto');
    const keyLines = appKey.privateKey.split('\n').filter((l) => l.length >= 40 && !l.startsWith('-----'));
    const secrets = [...standIn.issuedSecrets, ...keyLines];
    expect(standIn.issuedSecrets.length).toBeGreaterThan(5);
    const ids = [...workflowIds, githubScanScheduleId(config, `repo/${REPO}`)];
    let searched = 0;
    for (const id of ids) {
      const handle = client.workflow.getHandle(id);
      const history = await handle.fetchHistory().catch(() => undefined);
      if (!history) continue;
      const bytes = Buffer.from(temporal.api.history.v1.History.encode(history).finish());
      for (const s of secrets) expect(bytes.includes(s), `${id} holds a secret`).toBe(false);
      const result = (await handle.result().catch(() => undefined)) as JobResult | undefined;
      if (result?.log) {
        const log = await readJobLog(config, result.log.key);
        for (const s of secrets) expect(log.includes(s), `${id}'s log holds a secret`).toBe(false);
      }
      searched++;
    }
    expect(searched).toBeGreaterThanOrEqual(5);
  });
});
