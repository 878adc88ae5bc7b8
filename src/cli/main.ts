#!/usr/bin/env node
/** `marina`: the command line for CI systems, operators and developers. */
import { withClient as withConfiguredClient } from '../client/with-client';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Command } from 'commander';
import { CancelledFailure, WorkflowFailedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { ConfigError, loadConfig, type LoadedConfig } from '../config/load';
import { JobSpecError, jobWorkflowId, type JobSpec } from '../domain/job';
import { checkJobSpec, followJobLog, startJob } from '../client/jobs';
import { unwrapJobResult } from '../client/job-result';
import { ExitError } from './exit-codes';
import { collect, parseDuration, parseNumberPairs, parsePairs, UsageError } from './args';
import {
  controlPoolUpdate,
  JOB_STATES,
  jobStatusQuery,
  poolStateQuery,
  poolWorkflowId,
  type JobResult,
  type PoolControl,
} from '../../workflows/definitions';
import { runDev } from './dev';
import { cancelJobOnSignals } from './cancel-on-signal';
import { onStopSignals, SIGNAL_EXIT_CODES } from './signals';
import { registerImageCommands } from './image';
import { registerGitlabCommands } from './gitlab';
import { parse as parseYaml } from 'yaml';
import { scheduleErrors, type CapacitySchedule } from '../policy/schedule';
import { registerSimulateCommands } from './simulate';
import { registerTraceExportCommand } from './trace-export';
import { registerPoolApplyCommand } from './pool-apply';
import { registerEc2EmulatorCommand } from './ec2-emulator';
import { registerGithubCommands } from './github';
import { TraceError } from '../sim/trace';
import { createMarinaWorker } from '../worker';
import { installRuntime } from '../telemetry/runtime';
import { prebuiltWorkflowBundle } from '../workflow-bundle';

const program = new Command('marina')
  .description('Durable CI on macOS fleets, on Temporal')
  .option('-c, --config <file>', 'config file (default: $MARINA_CONFIG or ./marina.yaml)');

const config = (): LoadedConfig => loadConfig(program.opts<{ config?: string }>().config);

const withClient = <T>(fn: (client: Client, cfg: LoadedConfig) => Promise<T>): Promise<T> =>
  withConfiguredClient(config, fn);

program
  .command('dev')
  .description('start the local stack: Temporal dev server + Web UI, S3, emulated Mac hosts, a worker')
  .option('--state-dir <dir>', 'where the stack keeps its state', '.marina/dev')
  .option('--hosts <n>', 'emulated Mac hosts', '2')
  .option('--parallels-hosts <n>', 'emulated Parallels Desktop hosts, in a second pool local-parallels', '0')
  .option('--port <port>', 'Temporal frontend port', '7233')
  .option('--ui-port <port>', 'Temporal Web UI port', '8233')
  .option('--demo', 'run one demo job through the whole stack, show its output, then stop')
  .action(
    async (o: {
      stateDir: string;
      hosts: string;
      parallelsHosts: string;
      port: string;
      uiPort: string;
      demo?: boolean;
    }) => {
      process.exitCode = await runDev({
        stateDir: o.stateDir,
        hosts: Number(o.hosts),
        parallelsHosts: Number(o.parallelsHosts),
        temporalPort: Number(o.port),
        uiPort: Number(o.uiPort),
        demo: Boolean(o.demo),
      });
    },
  );

program
  .command('worker')
  .description('run a Marina worker for the configured Temporal namespace and task queue')
  .action(async () => {
    const cfg = config();
    const level = process.env.MARINA_LOG_LEVEL as 'ERROR' | 'WARN' | 'INFO' | 'DEBUG' | undefined;
    installRuntime(cfg, level ?? 'INFO');
    // A prebuilt bundle (MARINA_WORKFLOW_BUNDLE, as the Docker image sets) skips the webpack step on start.
    const bundle = prebuiltWorkflowBundle();
    const w = await createMarinaWorker(cfg, bundle ? { workflowBundle: bundle } : {});
    const grace = cfg.worker.shutdownGraceSeconds;
    let stopping = false;
    onStopSignals(
      (sig) => {
        stopping = true;
        console.error(
          `marina worker: ${sig}: taking no new tasks; running activities have ${grace} s to finish, then ` +
            `hand over to other workers (running scripts keep running); ${sig} again exits at once`,
        );
        if (w.worker.getState() === 'RUNNING') w.worker.shutdown();
      },
      (sig) => {
        // Jobs survive this too: their scripts run on in the VMs, and retries re-attach once this
        // worker's heartbeats stop (a heartbeat timeout later than a graceful handover).
        console.error(`marina worker: ${sig} again: exiting now`);
        process.exit(SIGNAL_EXIT_CODES[sig]);
      },
    );
    console.error(
      `marina worker: task queue "${cfg.temporal.taskQueue}" on ${cfg.temporal.address}, pools: ${cfg.pools.map((p) => p.name).join(', ')}, ` +
        `workflows: ${bundle ? `prebuilt bundle ${bundle.codePath}` : 'bundled from source'}`,
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
  .option('--wait-cleanup', "return once the job's VM is gone too, not at the script's end")
  .option('--cancel-wait <duration>', 'on SIGINT/SIGTERM, how long to wait for the cancelled job to clean up', '60s')
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
    const cancelWait = parseDuration('--cancel-wait', o.cancelWait);
    // Refuse a bad job before touching the network.
    await checkJobSpec(config(), spec, { checkImage: false });
    await withClient(async (client, cfg) => {
      // From before the submit: a job started as the signal arrives must not be left running.
      const cancel = cancelJobOnSignals(spec.id, cancelWait);
      const handle = await startJob(client, cfg, spec);
      if (o.detach) {
        cancel.dispose();
        console.log(handle.workflowId);
        return;
      }
      console.error(`marina: started ${handle.workflowId}`);
      cancel.attach(() => handle.cancel());
      const result = handle.result();
      // The script's end decides a job without a snapshot: the VM's cleanup goes on in the workflow.
      const { end } = await followJobLog(
        cfg,
        { jobId: spec.id, runId: handle.firstExecutionRunId },
        (b) => process.stdout.write(b),
        result,
        { untilScriptEnd: !spec.snapshot && !o.waitCleanup },
      );
      if (end && !cancel.signal) {
        void result.catch(() => undefined);
        const state = end.timedOut ? 'timed out' : end.exitCode === 0 ? 'succeeded' : 'failed';
        console.error(
          `marina: job ${spec.id} ${state} (exit ${end.exitCode}); its VM is being cleaned up (\`marina job show ${spec.id}\`)`,
        );
        process.exitCode = end.exitCode === 0 ? 0 : end.exitCode > 0 && end.exitCode < 256 ? end.exitCode : 1;
        cancel.dispose();
        return;
      }
      try {
        const r = await result;
        printResult(r);
        process.exitCode = r.exitCode === 0 ? 0 : r.exitCode > 0 && r.exitCode < 256 ? r.exitCode : 1;
      } catch (e) {
        if (!(e instanceof WorkflowFailedError)) throw e;
        if (cancel.signal && e.cause instanceof CancelledFailure)
          console.error(`marina: job ${spec.id} cancelled (${cancel.signal}); its VM is cleaned up`);
        else console.error(`marina: job ${spec.id} failed: ${e.cause?.message ?? e.message}`);
        process.exitCode = 1;
      } finally {
        // Killed by a signal, the conventional code, whatever the job did meanwhile.
        if (cancel.signal) process.exitCode = SIGNAL_EXIT_CODES[cancel.signal];
        cancel.dispose();
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
  .option('--state <state>', `only jobs in this state: ${JOB_STATES.join(', ')}`)
  .option('--limit <n>', 'at most this many', '50')
  .action(async (o: { state?: string; limit: string }) => {
    // An unknown state would match nothing and look like "no such jobs".
    if (o.state !== undefined && !(JOB_STATES as readonly string[]).includes(o.state))
      throw new UsageError(`--state: "${o.state}" is not a job state; use one of: ${JOB_STATES.join(', ')}`);
    if (!/^[1-9]\d*$/.test(o.limit)) throw new UsageError(`--limit: "${o.limit}" must be a whole number ≥ 1, e.g. 50`);
    return withClient(async (client) => {
      let query = `WorkflowType = "jobWorkflow"`;
      if (o.state) query += ` AND MarinaJobState = "${o.state}"`;
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
    });
  });
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
    if (d.status.name === 'COMPLETED' || d.status.name === 'FAILED') {
      // A failed script fails the workflow with its result in the failure: shown the same either way.
      const r = await unwrapJobResult(h.result() as Promise<JobResult>).catch((e: unknown) => e);
      if (r instanceof Error) out.error = r.cause instanceof Error ? r.cause.message : r.message;
      else out.result = r;
    }
    console.log(JSON.stringify(out, null, 2));
  }),
);
job.command('cancel <id>').action(async (id: string) =>
  withClient(async (client) => {
    const h = client.workflow.getHandle(jobWorkflowId(id));
    let d = await h.describe().catch((e: unknown) => {
      if (e instanceof WorkflowNotFoundError)
        throw new UsageError(
          `no job ${id} (workflow ${jobWorkflowId(id)} not found); \`marina job list\` shows the jobs`,
        );
      throw e;
    });
    // A closed job cannot be cancelled: say what became of it rather than the server's bare refusal.
    const finished = () => {
      const state = (d.searchAttributes as Record<string, unknown[] | undefined>).MarinaJobState?.[0];
      console.error(
        `marina: job ${id} already finished (${d.status.name}${state ? `, state ${String(state)}` : ''}, ` +
          `closed ${d.closeTime?.toISOString() ?? 'just now'}); nothing to cancel`,
      );
      process.exitCode = 1;
    };
    if (d.status.name !== 'RUNNING') return finished();
    try {
      await h.cancel();
    } catch (e) {
      // It ended between the two calls.
      d = await h.describe();
      if (d.status.name !== 'RUNNING') return finished();
      throw e;
    }
    console.error(`marina: cancel requested for job ${id}; its VM will be cleaned up`);
  }),
);

const pool = program.command('pool').description("a pool's state, and the planner's and operator's controls");
registerPoolApplyCommand(pool, () => program.opts<{ config?: string }>().config);
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
registerGitlabCommands(program, config);

program
  .command('check-job <file>')
  .description('validate a job spec (JSON) against the config without submitting it')
  .action(async (file: string) => {
    const spec = await checkJobSpec(config(), JSON.parse(readFileSync(file, 'utf8')), { checkImage: true });
    console.log(JSON.stringify(spec, null, 2));
  });

registerSimulateCommands(program);
registerTraceExportCommand(program, config);
registerEc2EmulatorCommand(program);
registerGithubCommands(program, config);

program.parseAsync(process.argv).catch((e: unknown) => {
  if (e instanceof ConfigError || e instanceof UsageError || e instanceof TraceError)
    console.error(`marina: ${e.message}`);
  else if (e instanceof JobSpecError)
    console.error(`marina: job refused:\n${e.errors.map((x) => `  - ${x.field}: ${x.message}`).join('\n')}`);
  else console.error(`marina: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = e instanceof ExitError ? e.exitCode : 2;
});
