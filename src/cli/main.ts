#!/usr/bin/env node
/** `marina`: the command line for CI systems, operators and developers. */
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Command } from 'commander';
import { WorkflowFailedError, type Client } from '@temporalio/client';
import { ConfigError, loadConfig, type LoadedConfig } from '../config/load';
import { JobSpecError, jobWorkflowId, type JobSpec } from '../domain/job';
import { checkJobSpec, connectClient, followLog, startJob } from '../client/jobs';
import { ExitError } from './exit-codes';
import { collect, parseDuration, parseNumberPairs, parsePairs, UsageError } from './args';
import {
  controlPoolUpdate,
  jobStatusQuery,
  poolStateQuery,
  poolWorkflowId,
  type JobResult,
  type PoolControl,
} from '../../workflows/definitions';
import { runDev } from './dev';
import { registerImageCommands } from './image';
import { parse as parseYaml } from 'yaml';
import { scheduleErrors, type CapacitySchedule } from '../policy/schedule';
import { registerSimulateCommands } from './simulate';
import { registerEc2EmulatorCommand } from './ec2-emulator';
import { TraceError } from '../sim/trace';
import { createMarinaWorker } from '../worker';
import { DefaultLogger, Runtime } from '@temporalio/worker';

const program = new Command('marina')
  .description('Durable CI on macOS fleets, on Temporal')
  .option('-c, --config <file>', 'config file (default: $MARINA_CONFIG or ./marina.yaml)');

const config = (): LoadedConfig => loadConfig(program.opts<{ config?: string }>().config);

async function withClient<T>(fn: (client: Client, cfg: LoadedConfig) => Promise<T>): Promise<T> {
  const cfg = config();
  const client = await connectClient(cfg);
  try {
    return await fn(client, cfg);
  } finally {
    await client.connection.close();
  }
}

program
  .command('dev')
  .description('start the local stack: Temporal dev server + Web UI, S3, emulated Mac hosts, a worker')
  .option('--state-dir <dir>', 'where the stack keeps its state', '.marina/dev')
  .option('--hosts <n>', 'emulated Mac hosts', '2')
  .option('--port <port>', 'Temporal frontend port', '7233')
  .option('--ui-port <port>', 'Temporal Web UI port', '8233')
  .option('--demo', 'run one demo job through the whole stack, show its output, then stop')
  .action(async (o: { stateDir: string; hosts: string; port: string; uiPort: string; demo?: boolean }) => {
    process.exitCode = await runDev({
      stateDir: o.stateDir,
      hosts: Number(o.hosts),
      temporalPort: Number(o.port),
      uiPort: Number(o.uiPort),
      demo: Boolean(o.demo),
    });
  });

program
  .command('worker')
  .description('run a Marina worker for the configured Temporal namespace and task queue')
  .action(async () => {
    const cfg = config();
    const level = process.env.MARINA_LOG_LEVEL as 'ERROR' | 'WARN' | 'INFO' | 'DEBUG' | undefined;
    // Signals are ours, not the SDK's: a second one must be able to end the process at once.
    Runtime.install({ logger: new DefaultLogger(level ?? 'INFO'), shutdownSignals: [] });
    // A prebuilt bundle (MARINA_WORKFLOW_BUNDLE) skips the webpack step on start.
    const bundle = process.env.MARINA_WORKFLOW_BUNDLE;
    const w = await createMarinaWorker(cfg, bundle ? { workflowBundle: { codePath: bundle } } : {});
    const grace = cfg.worker.shutdownGraceSeconds;
    let stopping = false;
    const onSignal = (sig: 'SIGINT' | 'SIGTERM') => {
      if (stopping) {
        // Jobs survive this too: their scripts run on in the VMs, and retries re-attach once this
        // worker's heartbeats stop (a heartbeat timeout later than a graceful handover).
        console.error(`marina worker: ${sig} again: exiting now`);
        process.exit(sig === 'SIGINT' ? 130 : 143);
      }
      stopping = true;
      console.error(
        `marina worker: ${sig}: taking no new tasks; running activities have ${grace} s to finish, then ` +
          `hand over to other workers (running scripts keep running); ${sig} again exits at once`,
      );
      if (w.worker.getState() === 'RUNNING') w.worker.shutdown();
    };
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, onSignal);
    console.error(
      `marina worker: task queue "${cfg.temporal.taskQueue}" on ${cfg.temporal.address}, pools: ${cfg.pools.map((p) => p.name).join(', ')}`,
    );
    try {
      await w.worker.run();
    } finally {
      await w.close();
    }
    if (stopping) console.error('marina worker: stopped');
  });

program
  .command('run')
  .description('submit a job, stream its output, exit with its exit code')
  .requiredOption('--pool <name>', 'pool to run in')
  .requiredOption('--image <ref>', 'VM image, name:tag')
  .option('--script <bash>', 'script to run in the VM')
  .option('--script-file <file>', 'read the script from a file ("-" for stdin)')
  .option('--id <id>', 'job id (default: generated)')
  .option('--timeout <duration>', 'script time limit, e.g. 30m', '1h')
  .option('--env <KEY=VALUE>', 'environment for the script (repeatable)', collect)
  .option('--secret <VAR=secret-name>', 'secret from the worker config exposed as VAR (repeatable)', collect)
  .option('--resource <name=amount>', 'resources, e.g. vm=1 cpu=4 (repeatable)', collect)
  .option('--label <key=value>', 'host labels required (repeatable)', collect)
  .option('--snapshot <ref>', 'push the VM as this image after success')
  .option('--client <name>', 'submitting CI system, for fair share and the UI')
  .option('--detach', 'print the workflow id and return at once')
  .action(async (o) => {
    let script = o.script as string | undefined;
    if (o.scriptFile) script = readFileSync(o.scriptFile === '-' ? 0 : o.scriptFile, 'utf8');
    if (script === undefined) throw new UsageError('give the script with --script "..." or --script-file FILE');
    const spec: JobSpec = {
      id: o.id ?? `${new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14)}-${randomBytes(3).toString('hex')}`,
      pool: o.pool,
      image: o.image,
      script,
      timeoutSeconds: parseDuration('--timeout', o.timeout),
      env: parsePairs('--env', o.env),
      secrets: parsePairs('--secret', o.secret),
      resources: parseNumberPairs('--resource', o.resource),
      labels: parsePairs('--label', o.label),
      snapshot: o.snapshot ? { image: o.snapshot } : undefined,
      client: o.client,
    };
    // Refuse a bad job before touching the network.
    await checkJobSpec(config(), spec, { checkImage: false });
    await withClient(async (client, cfg) => {
      const handle = await startJob(client, cfg, spec);
      if (o.detach) {
        console.log(handle.workflowId);
        return;
      }
      console.error(`marina: started ${handle.workflowId}`);
      let cancelling = false;
      process.on('SIGINT', () => {
        if (cancelling) process.exit(130);
        cancelling = true;
        console.error('\nmarina: cancelling the job (Ctrl-C again to stop waiting)');
        void handle.cancel();
      });
      const result = handle.result();
      await followLog(cfg, spec.id, (b) => process.stdout.write(b), result);
      try {
        const r = await result;
        printResult(r);
        process.exitCode = r.exitCode === 0 ? 0 : r.exitCode > 0 && r.exitCode < 256 ? r.exitCode : 1;
      } catch (e) {
        if (e instanceof WorkflowFailedError) {
          console.error(`marina: job ${spec.id} failed: ${e.cause?.message ?? e.message}`);
          process.exitCode = cancelling ? 130 : 1;
          return;
        }
        throw e;
      }
    });
  });

function printResult(r: JobResult): void {
  const stages = Object.entries(r.stages)
    .map(([k, v]) => `${k} ${((v ?? 0) / 1000).toFixed(1)}s`)
    .join(', ');
  console.error(
    `marina: job ${r.jobId} ${r.state} (exit ${r.exitCode}) on ${r.host}; ${stages}; log s3://${r.log.bucket}/${r.log.key}`,
  );
}

const job = program.command('job').description('list, inspect and cancel jobs');
job
  .command('list')
  .option('--state <state>', 'only jobs in this state (queued, running, succeeded, ...)')
  .option('--limit <n>', 'at most this many', '50')
  .action(async (o: { state?: string; limit: string }) =>
    withClient(async (client) => {
      let query = `WorkflowType = "jobWorkflow"`;
      if (o.state) query += ` AND MarinaJobState = "${o.state.replace(/"/g, '')}"`;
      let n = 0;
      for await (const wf of client.workflow.list({ query })) {
        const sa = wf.searchAttributes as Record<string, unknown[] | undefined>;
        console.log(
          [
            wf.workflowId,
            wf.status.name,
            sa.MarinaJobState?.[0] ?? '',
            sa.MarinaPool?.[0] ?? '',
            sa.MarinaHost?.[0] ?? '',
            sa.MarinaImage?.[0] ?? '',
            wf.startTime.toISOString(),
          ].join('\t'),
        );
        if (++n >= Number(o.limit)) break;
      }
    }),
  );
job.command('show <id>').action(async (id: string) =>
  withClient(async (client) => {
    const h = client.workflow.getHandle(jobWorkflowId(id));
    const d = await h.describe();
    const status = d.status.name === 'RUNNING' ? await h.query(jobStatusQuery) : undefined;
    const out: Record<string, unknown> = {
      workflowId: d.workflowId,
      status: d.status.name,
      started: d.startTime,
      closed: d.closeTime,
    };
    if (status) Object.assign(out, { state: status.state, host: status.host, stages: status.stages });
    if (d.status.name === 'COMPLETED') out.result = await h.result();
    console.log(JSON.stringify(out, null, 2));
  }),
);
job.command('cancel <id>').action(async (id: string) =>
  withClient(async (client) => {
    await client.workflow.getHandle(jobWorkflowId(id)).cancel();
    console.error(`marina: cancel requested for job ${id}; its VM will be cleaned up`);
  }),
);

const pool = program.command('pool').description("a pool's state, and the planner's and operator's controls");
pool
  .command('show <name>')
  .description("the pool's full state: hosts, leases, queue, fleet, latest decisions")
  .action(async (name: string) =>
    withClient(async (client) => {
      console.log(JSON.stringify(await client.workflow.getHandle(poolWorkflowId(name)).query(poolStateQuery), null, 2));
    }),
  );
pool
  .command('decisions <name>')
  .description('the latest placement and capacity decisions, with their reasons')
  .action(async (name: string) =>
    withClient(async (client) => {
      const s = await client.workflow.getHandle(poolWorkflowId(name)).query(poolStateQuery);
      for (const d of s.decisions ?? []) console.log(`${d.at}  ${d.what}`);
    }),
  );

async function control(name: string, c: PoolControl): Promise<void> {
  await withClient(async (client) => {
    try {
      const r = await client.workflow.getHandle(poolWorkflowId(name)).executeUpdate(controlPoolUpdate, { args: [c] });
      console.log(r.message);
    } catch (e) {
      // A refused control names what to fix; the pool changed nothing.
      const cause = (e as { cause?: { message?: string } }).cause?.message;
      throw new UsageError(cause ?? (e as Error).message);
    }
  });
}
pool
  .command('pause <name>')
  .description('place and allocate nothing new; running jobs go on')
  .action((name: string) => control(name, { action: 'pause' }));
pool.command('resume <name>').action((name: string) => control(name, { action: 'resume' }));
for (const action of ['cordon', 'uncordon', 'drain', 'retire'] as const) {
  const cmd = pool.command(`${action} <name> <host>`).description(
    {
      cordon: 'place no new work on the host',
      uncordon: 'place work on the host again',
      drain: 'place no new work on the host; its running jobs finish (answers at once; --wait follows them)',
      retire: 'AWS host: drain it, then terminate its instance and release it when AWS allows (answers at once)',
    }[action],
  );
  if (action === 'drain' || action === 'retire')
    cmd.option(
      '--wait',
      action === 'drain' ? 'return once its running jobs have finished' : 'return once the host has left the pool',
    );
  cmd.action(async (name: string, host: string, o: { wait?: boolean }) => {
    await control(name, { action, host });
    if (o.wait && (action === 'drain' || action === 'retire')) await waitForHost(name, host, action);
  });
}

/** Follows a drain or a retire in the pool's query: the pool itself never waits on either. */
async function waitForHost(name: string, host: string, action: 'drain' | 'retire'): Promise<void> {
  await withClient(async (client) => {
    const handle = client.workflow.getHandle(poolWorkflowId(name));
    const started = Date.now();
    for (;;) {
      const s = await handle.query(poolStateQuery);
      const done =
        action === 'drain'
          ? s.drains?.[host] === undefined && !s.leases.some((l) => l.host === host)
          : !s.hosts.some((h) => h.name === host) && !Object.values(s.fleet ?? {}).some((r) => r.host === host);
      if (done) {
        console.log(
          `host ${host} ${action === 'drain' ? 'drained' : 'retired'} (${Math.round((Date.now() - started) / 1000)} s)`,
        );
        return;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  });
}
pool
  .command('capacity <name>')
  .description('AWS pools: override the configured capacity (until changed again)')
  .option('--min <n>', 'minHosts')
  .option('--max <n>', 'maxHosts')
  .option('--headroom <n>', 'headroomSlots')
  .action((name: string, o: { min?: string; max?: string; headroom?: string }) => {
    const num = (flag: string, v: string | undefined): number | undefined => {
      if (v === undefined) return undefined;
      if (!/^\d+$/.test(v)) throw new UsageError(`${flag}: "${v}" must be a whole number ≥ 0`);
      return Number(v);
    };
    const c: PoolControl = {
      action: 'capacity',
      ...(o.min !== undefined ? { minHosts: num('--min', o.min) } : {}),
      ...(o.max !== undefined ? { maxHosts: num('--max', o.max) } : {}),
      ...(o.headroom !== undefined ? { headroomSlots: num('--headroom', o.headroom) } : {}),
    };
    return control(name, c);
  });

pool
  .command('schedules <name>')
  .description(
    "AWS pools: replace the configured capacity schedules (a YAML or JSON list, as in the config's aws.schedules)",
  )
  .option('--file <file>', 'the schedules; - reads stdin')
  .option('--clear', "go back to the config's schedules")
  .action((name: string, o: { file?: string; clear?: boolean }) => {
    if (o.clear) return control(name, { action: 'schedules', schedules: null });
    if (!o.file) throw new UsageError('give --file schedules.yaml (or - for stdin), or --clear');
    const parsed: unknown = parseYaml(readFileSync(o.file === '-' ? 0 : o.file, 'utf8'));
    const errors = scheduleErrors(parsed);
    if (errors.length > 0) throw new UsageError(`${o.file}: ${errors.join('; ')}`);
    return control(name, { action: 'schedules', schedules: parsed as CapacitySchedule[] });
  });

program
  .command('host')
  .description('hosts across pools')
  .command('list')
  .action(async () =>
    withClient(async (client, cfg) => {
      for (const p of cfg.pools) {
        const s = await client.workflow.getHandle(poolWorkflowId(p.name)).query(poolStateQuery);
        for (const h of s.hosts) {
          const leases = s.leases.filter((l) => l.host === h.name).length;
          console.log(
            [
              p.name,
              h.name,
              `${leases}/${h.resources.vm ?? 0} vm`,
              h.cordoned ? `cordoned(${h.cordoned})` : 'ready',
              h.lastHealthError ?? '',
            ].join('\t'),
          );
        }
      }
    }),
  );

registerImageCommands(program, config);

program
  .command('check-job <file>')
  .description('validate a job spec (JSON) against the config without submitting it')
  .action(async (file: string) => {
    const spec = await checkJobSpec(config(), JSON.parse(readFileSync(file, 'utf8')), { checkImage: true });
    console.log(JSON.stringify(spec, null, 2));
  });

registerSimulateCommands(program);
registerEc2EmulatorCommand(program);

program.parseAsync(process.argv).catch((e: unknown) => {
  if (e instanceof ConfigError || e instanceof UsageError || e instanceof TraceError)
    console.error(`marina: ${e.message}`);
  else if (e instanceof JobSpecError)
    console.error(`marina: job refused:\n${e.errors.map((x) => `  - ${x.field}: ${x.message}`).join('\n')}`);
  else console.error(`marina: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = e instanceof ExitError ? e.exitCode : 2;
});
