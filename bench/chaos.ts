/**
 * The chaos soak (issue #22): short jobs on an on-prem pool of emulated hosts while, on a seeded schedule,
 * worker processes are SIGKILLed, the Temporal server is killed and restarted on its database, SSH
 * connections are cut mid-stream, a host vanishes, S3 fails and stalls, and clients cancel jobs. Then the
 * faults stop, the system settles, and the run checks what Marina promises against an outside witness:
 * every job ended, every script ran once (a cancelled one at most once), every log is complete, no VM is
 * left, every lease is back. It prints the counts, and exits 1 on any anomaly.
 *
 *   npm run chaos -- --minutes 10 [--seed 42] [--jobs-per-minute 30] [--hosts 3]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parse, stringify } from 'yaml';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { startDevStack } from '../src/emulator/dev-stack';
import { freePort } from '../src/emulator/processes';
import { SEED_IMAGE } from '../src/emulator/seed-image';
import { loadConfig, logsLocation, type LoadedConfig } from '../src/config/load';
import { s3ClientFor } from '../src/config/s3';
import { connectClient, startJob } from '../src/client/jobs';
import { jobResultOfFailure } from '../src/client/job-result';
import { isJobVm, jobWorkflowId } from '../src/domain/job';
import { writeWorkflowBundle } from '../src/workflow-bundle';
import { poolStateQuery, poolWorkflowId, type JobResult } from '../workflows/definitions';
import { seeded } from '../src/ec2mac/random';
import { TcpFaultProxy } from './chaos/tcp-fault-proxy';
import { S3FaultProxy } from './chaos/s3-fault-proxy';
import { faultSchedule, FAULT_KINDS, type Fault, type FaultKind } from './chaos/schedule';
import { readCounts } from './chaos/witness';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const ROOT = resolve(__dirname, '..');
const POOL = 'chaos';
const LOG_LINES = 20;

interface Options {
  minutes: number;
  seed: number;
  jobsPerMinute: number;
  hosts: number;
  faultEverySeconds: number;
  hostVanishSeconds: number;
  settleMinutes: number;
}

function options(argv: string[]): Options {
  const o: Options = {
    minutes: 2,
    seed: Date.now() % 100_000,
    jobsPerMinute: 30,
    hosts: 3,
    faultEverySeconds: 8,
    hostVanishSeconds: 60,
    settleMinutes: 10,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i]!.replace(/^--/, '').replace(/-(\w)/g, (_, c: string) => c.toUpperCase()) as keyof Options;
    const value = Number(argv[i + 1]);
    if (!(key in o) || !Number.isFinite(value) || value <= 0)
      throw new Error(
        `${argv[i]} ${argv[i + 1] ?? ''}: expected one of ${Object.keys(o)
          .map((k) => `--${k}`)
          .join(', ')} with a positive number`,
      );
    o[key] = value;
  }
  return o;
}

interface JobRecord {
  id: string;
  cancelAfterMs?: number;
  snapshot?: string;
  submitted: boolean;
}

type Anomaly = { kind: string; job?: string; detail: string };

const log = (line: string) => console.error(`chaos ${new Date().toISOString().slice(11, 19)} ${line}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Retries a client call through a Temporal restart. */
async function patiently<T>(what: string, fn: () => Promise<T>, ms = 120_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > until) throw new Error(`${what}: ${(e as Error).message}`, { cause: e });
      await sleep(1000);
    }
  }
}

async function main(): Promise<number> {
  const o = options(process.argv.slice(2));
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  const random = seeded(o.seed + 1);
  const durationMs = o.minutes * 60_000;
  const schedule = faultSchedule(o.seed, durationMs, o.faultEverySeconds * 1000, Math.max(o.hosts, 2));
  log(
    `seed ${o.seed}: ${o.minutes} min, ~${o.jobsPerMinute} jobs/min, ${schedule.length} faults; replay with --seed ${o.seed}`,
  );

  const state = mkdtempSync(join(tmpdir(), 'marina-chaos-'));
  const stack = await startDevStack({
    stateDir: state,
    hosts: o.hosts,
    headless: true,
    vmBootSeconds: 1,
    healthCheckSeconds: 5,
    leaseCheckSeconds: 3,
  });
  const stops: Array<() => Promise<unknown>> = [() => stack.stop()];
  try {
    // Faults sit between Marina and what it drives: a TCP proxy per host, an HTTP proxy before S3.
    const hostProxies = await Promise.all(
      stack.hosts.map(async (h) => {
        const p = new TcpFaultProxy({ host: '127.0.0.1', port: h.port });
        await p.start();
        stops.push(() => p.stop());
        return p;
      }),
    );
    const s3Url = new URL(stack.s3Endpoint);
    const s3Proxy = new S3FaultProxy({ host: s3Url.hostname, port: Number(s3Url.port) }, seeded(o.seed + 2));
    await s3Proxy.start();
    stops.push(() => s3Proxy.stop());

    const raw = parse(readFileSync(stack.configPath, 'utf8'));
    raw.temporal.taskQueue = 'chaos';
    raw.imageStore.endpoint = `http://127.0.0.1:${s3Proxy.port}`;
    const pool = { ...raw.pools[0], name: POOL };
    pool.hosts = pool.hosts.map((h: { ssh: { port: number } }, i: number) => ({
      ...h,
      ssh: { ...h.ssh, port: hostProxies[i]!.port },
    }));
    pool.standby = [{ image: SEED_IMAGE, count: 1 }];
    pool.security = { allowedSnapshotImages: ['chaos/**'] };
    raw.pools = [pool];
    // The pinned host keys, under the proxies' ports.
    writeFileSync(
      join(state, 'chaos_known_hosts'),
      stack.hosts.map((h, i) => h.knownHostsLine.replace(`]:${h.port} `, `]:${hostProxies[i]!.port} `)).join('\n') +
        '\n',
    );
    pool.ssh.knownHosts = { file: 'chaos_known_hosts' };
    const configPath = join(state, 'chaos.yaml');
    writeFileSync(configPath, stringify(raw));
    const config = loadConfig(configPath);

    const bundle = join(state, 'workflow-bundle.js');
    await writeWorkflowBundle(bundle);

    const witnessPort = await freePort();
    const witnessFile = join(state, 'witness.log');
    const witness = spawn(
      process.execPath,
      ['--import', 'tsx', join(__dirname, 'chaos/witness.ts'), String(witnessPort), witnessFile],
      {
        cwd: ROOT,
        stdio: 'ignore',
      },
    );
    stops.push(async () => witness.kill('SIGKILL'));

    const workers: Array<ChildProcess | undefined> = [undefined, undefined];
    const startWorker = (i: number) => {
      const out = openSync(join(state, 'logs', `worker-${i}.log`), 'a');
      workers[i] = spawn(
        process.execPath,
        ['--import', 'tsx', join(ROOT, 'src/cli/main.ts'), '--config', configPath, 'worker'],
        {
          cwd: ROOT,
          stdio: ['ignore', out, out],
          env: { ...process.env, MARINA_WORKFLOW_BUNDLE: bundle, MARINA_LOG_LEVEL: 'WARN' },
        },
      );
    };
    startWorker(0);
    startWorker(1);
    stops.push(async () => {
      for (const w of workers) w?.kill('SIGKILL');
    });

    const client = await connectClient(config);
    stops.push(() => client.connection.close());

    const faultsDone: Record<FaultKind, number> = Object.fromEntries(FAULT_KINDS.map((k) => [k, 0])) as Record<
      FaultKind,
      number
    >;
    const jobs: JobRecord[] = [];
    let sshCuts = 0;
    const t0 = Date.now();

    // The load: a job every 60/rate s; some cancelled part way, some snapshotted.
    const load = (async () => {
      for (let n = 0; Date.now() - t0 < durationMs; n++) {
        const job: JobRecord = { id: `chaos-${o.seed}-${n}`, submitted: false };
        const r = random();
        if (r < 0.1) job.cancelAfterMs = 1000 + random() * 5000;
        else if (r < 0.15) job.snapshot = `chaos/snap-${n}:1`;
        jobs.push(job);
        void submit(client, config, job, witnessPort, random).then(() => {
          if (job.cancelAfterMs !== undefined)
            setTimeout(() => void cancel(client, job.id).catch(() => undefined), job.cancelAfterMs);
        });
        await sleep((60_000 / o.jobsPerMinute) * (0.5 + random()));
      }
    })();

    // The faults, on the schedule.
    const faults = (async () => {
      for (const f of schedule) {
        const wait = t0 + f.atMs - Date.now();
        if (wait > 0) await sleep(wait);
        await inject(f).catch((e: unknown) => log(`fault ${f.kind} failed to inject: ${String(e)}`));
        faultsDone[f.kind]++;
      }
    })();
    async function inject(f: Fault): Promise<void> {
      log(`fault: ${f.kind} (target ${f.target})`);
      switch (f.kind) {
        case 'worker-kill': {
          const i = f.target % workers.length;
          workers[i]?.kill('SIGKILL');
          setTimeout(() => startWorker(i), 2000 + random() * 3000);
          return;
        }
        case 'temporal-restart':
          await stack.killAndRestartTemporal(2000);
          return;
        case 'ssh-cut': {
          // The host with the most open connections (the scheduled one on a tie): a cut must cut something.
          const busiest = [...hostProxies].sort((a, b) => b.openConnections - a.openConnections)[0]!;
          const proxy = busiest.openConnections > 0 ? busiest : hostProxies[f.target % hostProxies.length]!;
          sshCuts += proxy.cut();
          return;
        }
        case 'host-vanish':
          hostProxies[f.target % hostProxies.length]!.down(o.hostVanishSeconds * 1000);
          return;
        case 's3-errors':
          s3Proxy.errors(30_000, 0.5);
          return;
        case 's3-stall':
          s3Proxy.stall(30_000, 0.5);
          return;
        case 'cancel': {
          const running = jobs.filter((j) => j.submitted && j.cancelAfterMs === undefined && !j.snapshot).at(-1);
          if (running) {
            running.cancelAfterMs = 0;
            await cancel(client, running.id).catch(() => undefined);
          }
          return;
        }
      }
    }
    await Promise.all([load, faults]);
    // Faults over: whatever was down comes back.
    for (const p of hostProxies) p.down(0);
    for (let i = 0; i < workers.length; i++) if (workers[i]?.exitCode !== null) startWorker(i);
    const stoppedAt = Date.now();
    log(`load and faults over: ${jobs.length} jobs submitted; settling`);

    const anomalies: Anomaly[] = [];
    const outcomes = await settle(client, jobs, o.settleMinutes * 60_000, anomalies);
    const settleSeconds = (Date.now() - stoppedAt) / 1000;
    await check(
      config,
      stack.s3Endpoint,
      client,
      stack.hosts.map((h) => h.dir),
      jobs,
      outcomes,
      readCounts(witnessFile),
      anomalies,
    );

    const states: Record<string, number> = {};
    for (const r of outcomes.values()) states[r.state] = (states[r.state] ?? 0) + 1;
    const byKind: Record<string, number> = {};
    for (const a of anomalies) byKind[a.kind] = (byKind[a.kind] ?? 0) + 1;
    const report = {
      seed: o.seed,
      minutes: o.minutes,
      jobs: jobs.length,
      outcomes: states,
      faults: {
        ...faultsDone,
        sshConnectionsCut: sshCuts,
        s3RequestsFailed: s3Proxy.injected.errors,
        s3RequestsStalled: s3Proxy.injected.stalls,
      },
      notInjected: FAULT_KINDS.filter((k) => faultsDone[k] === 0),
      anomalies: byKind,
      settleSeconds: Math.round(settleSeconds),
      schedule: schedule.map((f) => `${(f.atMs / 1000).toFixed(0)}s ${f.kind}#${f.target}`).join(', '),
    };
    console.log(JSON.stringify(report, null, 2));
    for (const a of anomalies.slice(0, 30)) console.log(`anomaly ${a.kind}${a.job ? ` ${a.job}` : ''}: ${a.detail}`);
    log(`state kept in ${state}`);
    return anomalies.length === 0 && report.notInjected.length === 0 ? 0 : 1;
  } finally {
    for (const s of stops.reverse()) await s().catch(() => undefined);
  }
}

function script(id: string, witnessPort: number, random: () => number): string {
  const w = `http://127.0.0.1:${witnessPort}`;
  // The witness hears the start before any output and the end after the last line.
  return [
    `curl -fsS -X POST ${w}/start/${id}`,
    `for i in $(seq 1 ${LOG_LINES}); do echo "line $i of ${id}"; sleep 0.05; done`,
    `sleep ${(0.5 + random() * 3).toFixed(1)}`,
    `curl -fsS -X POST ${w}/end/${id}`,
  ].join('\n');
}

async function submit(client: Client, config: LoadedConfig, job: JobRecord, witnessPort: number, random: () => number) {
  await patiently(`submit ${job.id}`, () =>
    startJob(client, config, {
      id: job.id,
      pool: POOL,
      image: SEED_IMAGE,
      script: script(job.id, witnessPort, random),
      timeoutSeconds: 600,
      client: 'chaos',
      ...(job.snapshot ? { snapshot: { image: job.snapshot } } : {}),
    }).catch((e: unknown) => {
      // A submit retried after the server took the first one: the job exists, which is what we want.
      if ((e as Error).name === 'WorkflowExecutionAlreadyStartedError') return;
      throw e;
    }),
  );
  job.submitted = true;
}

async function cancel(client: Client, id: string): Promise<void> {
  await patiently(`cancel ${id}`, () => client.workflow.getHandle(jobWorkflowId(id)).cancel(), 30_000);
}

/** Waits for every job to end; its result, or what it ended as. */
type Outcome = JobResult | { state: 'cancelled' };

async function settle(
  client: Client,
  jobs: JobRecord[],
  ms: number,
  anomalies: Anomaly[],
): Promise<Map<string, Outcome>> {
  const results = new Map<string, Outcome>();
  const until = Date.now() + ms;
  for (const job of jobs) {
    if (!job.submitted) {
      anomalies.push({ kind: 'never-submitted', job: job.id, detail: 'the submit did not go through' });
      continue;
    }
    const handle = client.workflow.getHandle(jobWorkflowId(job.id));
    for (;;) {
      const d = await patiently('describe', () => handle.describe()).catch((e: unknown) => {
        if (e instanceof WorkflowNotFoundError) return undefined;
        throw e;
      });
      const status = d?.status.name;
      if (status && status !== 'RUNNING') {
        if (status === 'COMPLETED') results.set(job.id, (await handle.result()) as JobResult);
        else if (status === 'FAILED') {
          const r = await handle.result().catch((e: unknown) => jobResultOfFailure(e));
          if (r) results.set(job.id, r as JobResult);
          else anomalies.push({ kind: 'job-errored', job: job.id, detail: 'failed without a job result' });
        } else if (status === 'CANCELLED') results.set(job.id, { state: 'cancelled' });
        else anomalies.push({ kind: 'job-ended-badly', job: job.id, detail: status });
        break;
      }
      if (Date.now() > until) {
        anomalies.push({ kind: 'never-ended', job: job.id, detail: `still ${status ?? 'unknown'} after settling` });
        break;
      }
      await sleep(1000);
    }
  }
  return results;
}

async function check(
  config: LoadedConfig,
  directS3: string,
  client: Client,
  hostDirs: string[],
  jobs: JobRecord[],
  results: Map<string, Outcome>,
  counts: ReturnType<typeof readCounts>,
  anomalies: Anomaly[],
): Promise<void> {
  const loc = logsLocation(config);
  // Logs are read straight from S3, not through the fault proxy.
  const s3 = s3ClientFor(config, { ...loc, endpoint: directS3 });
  for (const job of jobs) {
    const r = results.get(job.id);
    if (!r) continue;
    const seen = counts[job.id] ?? { start: 0, end: 0 };
    if (r.state === 'cancelled' || !('jobId' in r)) {
      if (seen.start > 1)
        anomalies.push({ kind: 'ran-twice', job: job.id, detail: `cancelled, started ${seen.start} times` });
      continue;
    }
    if (r.state !== 'succeeded') {
      anomalies.push({ kind: `job-${r.state}`, job: job.id, detail: `exit ${r.exitCode} on ${r.host}` });
      continue;
    }
    if (seen.start !== 1 || seen.end !== 1)
      anomalies.push({
        kind: seen.start > 1 ? 'ran-twice' : 'witness-mismatch',
        job: job.id,
        detail: JSON.stringify(seen),
      });
    const text = await s3
      .send(new GetObjectCommand({ Bucket: r.log.bucket, Key: r.log.key }))
      .then((out) => out.Body!.transformToString())
      .catch((e: unknown) => `unreadable: ${String(e)}`);
    const want = Array.from({ length: LOG_LINES }, (_, i) => `line ${i + 1} of ${job.id}`).join('\n');
    if (!text.includes(want)) anomalies.push({ kind: 'log-incomplete', job: job.id, detail: `${text.length} bytes` });
  }
  s3.destroy();
  // No job VM left on any host (standby VMs belong to the pool, cached images to the host cache).
  for (const dir of hostDirs) {
    const vms = join(dir, 'tart', 'vms');
    if (!existsSync(vms)) continue;
    for (const vm of readdirSync(vms))
      if (isJobVm(vm) && !vm.startsWith('marina-standby-'))
        anomalies.push({ kind: 'vm-left', detail: `${vm} on ${dir.split('/').pop()}` });
  }
  // Every job's lease is back, nothing queued.
  const view = await patiently('pool state', () =>
    client.workflow.getHandle(poolWorkflowId(POOL)).query(poolStateQuery),
  );
  for (const l of view.leases)
    if (l.jobWorkflowId.startsWith('job/') || l.jobWorkflowId.includes('chaos-'))
      anomalies.push({ kind: 'lease-held', detail: `${l.leaseId} by ${l.jobWorkflowId} on ${l.host}` });
  if (view.queued > 0) anomalies.push({ kind: 'queue-not-empty', detail: `${view.queued} requests queued` });
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e);
    process.exit(2);
  },
);
