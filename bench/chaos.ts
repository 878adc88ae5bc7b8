/**
 * The chaos soak (issue #22): short jobs on an on-prem pool of emulated hosts and an AWS pool (the EC2 Mac
 * emulator at compressed time) while, on a seeded schedule, worker processes are SIGKILLed, every worker is
 * stopped for a while, the Temporal server is killed and restarted on its database, SSH connections are cut
 * mid-stream, a host vanishes, S3 fails and stalls, EC2 throttles, fails, drops answers and lags (eventual
 * consistency), and clients cancel jobs. Then the faults stop, the system settles, and the run checks what
 * Marina promises against an outside witness: every job ended, every script ran once (a cancelled one at most
 * once), every log is complete, no VM is left, every lease is back, and the EC2 ledger shows no host no
 * workflow owns and no double allocation. It prints the counts, and exits 1 on any anomaly or a fault kind
 * never injected.
 *
 *   npm run chaos -- --minutes 10 [--seed 42] [--jobs-per-minute 30] [--hosts 3] [--outage-seconds 40]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parse, stringify } from 'yaml';
import type { Client } from '@temporalio/client';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { startDevStack } from '../src/emulator/dev-stack';
import { freePort } from '../src/emulator/processes';
import { SEED_IMAGE } from '../src/emulator/seed-image';
import { loadConfig, type LoadedConfig } from '../src/config/load';
import { connectClient, startJob } from '../src/client/jobs';
import { jobWorkflowId } from '../src/domain/job';
import { writeWorkflowBundle } from '../src/workflow-bundle';
import { seeded } from '../src/ec2mac/random';
import { AWS_POOL, startChaosAws } from './chaos/aws';
import { drainHostSignal, retireHostSignal } from '../workflows/host';
import { poolStateQuery, poolWorkflowId } from '../workflows/definitions';
import { check, LOG_LINES, patiently, settle, type Anomaly, type JobRecord } from './chaos/check';
import { TcpFaultProxy } from './chaos/tcp-fault-proxy';
import { S3FaultProxy } from './chaos/s3-fault-proxy';
import { faultSchedule, FAULT_KINDS, type Fault, type FaultKind } from './chaos/schedule';
import { readCounts } from './chaos/witness';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const ROOT = resolve(__dirname, '..');
const POOL = 'chaos';

interface Options {
  minutes: number;
  seed: number;
  jobsPerMinute: number;
  hosts: number;
  faultEverySeconds: number;
  hostVanishSeconds: number;
  /** How long every worker stays stopped (all-workers-down). */
  outageSeconds: number;
  /** EC2 fault windows (throttling, 500s, drops, consistency), real seconds. */
  ec2FaultSeconds: number;
  /** The EC2 emulator's speed: EC2 seconds per real second. */
  ec2Speed: number;
  /** Share of jobs sent to the AWS pool, in percent. */
  awsPercent: number;
  awsMaxHosts: number;
  /** The load retires the oldest EC2 host this often, so hosts are allocated and released under EC2's faults. */
  retireEverySeconds: number;
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
    outageSeconds: 40,
    ec2FaultSeconds: 30,
    ec2Speed: 1800,
    awsPercent: 35,
    awsMaxHosts: 3,
    retireEverySeconds: 40,
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

const log = (line: string) => console.error(`chaos ${new Date().toISOString().slice(11, 19)} ${line}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
    // The pinned host keys, under the proxies' ports.
    writeFileSync(
      join(state, 'chaos_known_hosts'),
      stack.hosts.map((h, i) => h.knownHostsLine.replace(`]:${h.port} `, `]:${hostProxies[i]!.port} `)).join('\n') +
        '\n',
    );
    pool.ssh.knownHosts = { file: 'chaos_known_hosts' };
    // The AWS pool: EC2 hosts of the emulator, their instances reached without a proxy (SSH cuts are the
    // on-prem pool's; EC2's own faults come through the emulator).
    const aws = await startChaosAws({
      state,
      vmPort: (raw.pools[0] as { vm: { port: number } }).vm.port,
      speed: o.ec2Speed,
      maxHosts: o.awsMaxHosts,
    });
    stops.push(() => aws.emu.stop());
    raw.pools.push(aws.pool({ ...raw.pools[0], security: pool.security }));
    raw.pools[0] = pool;
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
    /** Until when every worker is to stay stopped (all-workers-down): a killed worker is not restarted before. */
    let outageUntil = 0;
    const exited = (w: ChildProcess | undefined) => !w || w.exitCode !== null || w.signalCode !== null;
    /** Worker exits the run did not cause (a worker started while Temporal was down exits), each restarted. */
    let workerExits = 0;
    let stopping = false;
    const killed = new Set<ChildProcess>();
    const kill = (w: ChildProcess | undefined) => {
      if (!w) return;
      killed.add(w);
      w.kill('SIGKILL');
    };
    const startWorker = (i: number) => {
      if (stopping || Date.now() < outageUntil || !exited(workers[i])) return;
      const out = openSync(join(state, 'logs', `worker-${i}.log`), 'a');
      const w = spawn(
        process.execPath,
        ['--import', 'tsx', join(ROOT, 'src/cli/main.ts'), '--config', configPath, 'worker'],
        {
          cwd: ROOT,
          stdio: ['ignore', out, out],
          env: { ...process.env, MARINA_WORKFLOW_BUNDLE: bundle, MARINA_LOG_LEVEL: 'WARN' },
        },
      );
      workers[i] = w;
      // A supervisor's part (systemd's Restart=, Docker's restart policy): a worker that exits on its own is
      // started again; one the run killed comes back on the fault's own terms.
      w.once('exit', () => {
        if (killed.has(w) || stopping) return;
        workerExits++;
        log(`worker ${i} exited on its own (${w.exitCode ?? w.signalCode}); restarting it`);
        setTimeout(() => startWorker(i), 2000);
      });
    };
    startWorker(0);
    startWorker(1);
    stops.push(async () => {
      stopping = true;
      for (const w of workers) kill(w);
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
        const toAws = random() * 100 < o.awsPercent;
        const job: JobRecord = { id: `chaos-${o.seed}-${n}`, pool: toAws ? AWS_POOL : POOL, submitted: false };
        const r = random();
        if (r < 0.1) job.cancelAfterMs = 1000 + random() * 5000;
        else if (r < 0.15) job.snapshot = `chaos/snap-${n}:1`;
        jobs.push(job);
        void submit(client, config, job, witnessPort, random).then(
          () => {
            if (job.cancelAfterMs !== undefined)
              setTimeout(() => void cancel(client, job.id).catch(() => undefined), job.cancelAfterMs);
          },
          // Reported by the check as never submitted.
          (e: unknown) => log(`submit ${job.id} failed: ${String(e)}`),
        );
        await sleep((60_000 / o.jobsPerMinute) * (0.5 + random()));
      }
    })();

    // Churn: an operator retires the oldest EC2 host now and then, as an operator should: drain it, wait until
    // its jobs are done, then retire it (`retireHost` alone terminates at once and its jobs run again). So the
    // pool allocates, launches, terminates and releases under EC2's faults, not only at the start.
    let retired = 0;
    const churn = (async () => {
      for (let at = o.retireEverySeconds * 1000; at < durationMs; at += o.retireEverySeconds * 1000) {
        await sleep(t0 + at - Date.now());
        const oldest = aws.oldestHostWorkflow();
        if (!oldest) continue;
        const host = client.workflow.getHandle(oldest.workflowId);
        try {
          await patiently('drain', () => host.signal(drainHostSignal, { drain: true }));
          const until = Date.now() + 60_000;
          // Retired only once the pool has the host cordoned (it places nothing new there) and no lease is on it.
          const busy = async () => {
            const view = await patiently('pool state', () =>
              client.workflow.getHandle(poolWorkflowId(AWS_POOL)).query(poolStateQuery),
            );
            const cordoned = view.hosts.find((h) => h.name === oldest.hostId)?.cordoned !== undefined;
            return !cordoned || view.leases.some((l) => l.host === oldest.hostId);
          };
          while ((await busy()) && Date.now() < until) await sleep(1000);
          if (await busy()) {
            log(`load: EC2 host ${oldest.hostId} still busy after 60 s of draining; not retired`);
            await patiently('undrain', () => host.signal(drainHostSignal, { drain: false }));
            continue;
          }
          log(`load: retire EC2 host ${oldest.hostId} (${oldest.workflowId}), drained`);
          await patiently('retire', () => host.signal(retireHostSignal, { reason: 'chaos: churn' }));
          retired++;
        } catch (e) {
          log(`retire ${oldest.workflowId} failed: ${String(e)}`);
        }
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
          kill(workers[i]);
          setTimeout(() => startWorker(i), 2000 + random() * 3000);
          return;
        }
        case 'all-workers-down': {
          // Longer than every activity's heartbeat and start-to-close timeout that a stopped worker trips, and
          // longer than any schedule-to-close timeout left (none since the cleanup's went: README, "Chaos").
          outageUntil = Date.now() + o.outageSeconds * 1000;
          for (const w of workers) kill(w);
          setTimeout(() => workers.forEach((_, i) => startWorker(i)), o.outageSeconds * 1000 + 50);
          return;
        }
        case 'ec2-throttle':
        case 'ec2-500':
        case 'ec2-drop':
        case 'ec2-consistency':
          await aws.inject(f.kind, o.seed * 100 + faultsDone[f.kind], o.ec2FaultSeconds * 1000);
          return;
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
    await Promise.all([load, faults, churn]);
    // An outage the schedule began near the end runs its whole length.
    if (outageUntil > Date.now()) await sleep(outageUntil - Date.now());
    // Faults over: whatever was down comes back.
    for (const p of hostProxies) p.down(0);
    await aws.calm();
    outageUntil = 0;
    for (let i = 0; i < workers.length; i++) startWorker(i);
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
      [POOL, AWS_POOL],
    );
    const ec2 = await aws.check(client, anomalies);

    const states: Record<string, number> = {};
    for (const r of outcomes.values()) states[r.state] = (states[r.state] ?? 0) + 1;
    const byKind: Record<string, number> = {};
    for (const a of anomalies) byKind[a.kind] = (byKind[a.kind] ?? 0) + 1;
    const report = {
      seed: o.seed,
      minutes: o.minutes,
      jobs: jobs.length,
      jobsByPool: {
        [POOL]: jobs.filter((j) => j.pool === POOL).length,
        [AWS_POOL]: jobs.filter((j) => j.pool === AWS_POOL).length,
      },
      outcomes: states,
      faults: {
        ...faultsDone,
        sshConnectionsCut: sshCuts,
        s3RequestsFailed: s3Proxy.injected.errors,
        s3RequestsStalled: s3Proxy.injected.stalls,
        ...aws.injected(),
      },
      ec2HostsRetiredByTheLoad: retired,
      workerExitsRestarted: workerExits,
      notInjected: FAULT_KINDS.filter((k) => faultsDone[k] === 0),
      anomalies: byKind,
      ec2Ledger: ec2,
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
      pool: job.pool,
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

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e);
    process.exit(2);
  },
);
