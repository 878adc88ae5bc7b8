/** `marina dev`: the whole stack on one machine, and the demo job that proves it. */
import { startDevStack, type DevStack } from '../emulator/dev-stack';
import { onStopSignals, SIGNAL_EXIT_CODES, type StopSignal } from './signals';
import { createMarinaWorker } from '../worker';
import { applyPoolSettings } from '../client/pool-settings';
import { prebuiltWorkflowBundle } from '../workflow-bundle';
import { followLog, startJob } from '../client/jobs';
import { SEED_IMAGE } from '../emulator/seed-image';
import { WorkflowFailedError } from '@temporalio/client';
import { DefaultLogger, Runtime } from '@temporalio/worker';

const DEMO_SCRIPT = `echo "hello from $(hostname) inside VM $MARINA_JOB_ID"
echo "the secret is $(printf %s "$DEMO_TOKEN" | wc -c) bytes long (its value never reaches workflow history)"
for i in 1 2 3; do echo "step $i"; sleep 0.3; done
uname -a
echo done`;

export async function runDev(o: {
  stateDir: string;
  hosts: number;
  parallelsHosts?: number;
  temporalPort: number;
  uiPort: number;
  demo: boolean;
}): Promise<number> {
  const log = (l: string) => console.error(`marina dev: ${l}`);
  // Keep the terminal for the job's output: the worker's own logs only when something goes wrong.
  // The SDK's signal hooks stay off: they shut the worker down behind our back and swallow later signals.
  Runtime.install({
    logger: new DefaultLogger((process.env.MARINA_LOG_LEVEL as 'WARN' | undefined) ?? 'WARN'),
    shutdownSignals: [],
  });

  // Everything this process started goes on the first SIGINT or SIGTERM, whatever it is doing then.
  // Filled in as start-up gets on; the signal handler stops whatever is there.
  const live: { stack?: DevStack; stopWorker?: () => Promise<void> } = {};
  let signalled: StopSignal | undefined;
  let stopped: Promise<void> | undefined;
  const stopAll = () =>
    (stopped ??= (async () => {
      await live.stopWorker?.().catch((e: unknown) => log(`worker stop: ${String(e)}`));
      await live.stack?.stop();
    })());
  const disposeSignals = onStopSignals(
    (sig) => {
      signalled = sig;
      log(`${sig}: stopping the worker, Temporal, S3 and the emulated hosts (${sig} again: at once)`);
      // During start-up there is no stack yet: the start-up path stops it once it has one.
      if (live.stack) void stopAll().then(() => exitStopped(sig));
    },
    (sig) => {
      // Skips the worker's grace time, never the children: they are in their own process groups.
      log(`${sig} again: stopping the stack now`);
      void (live.stack?.stop() ?? Promise.resolve()).then(() => process.exit(SIGNAL_EXIT_CODES[sig]));
    },
  );
  const exitStopped = (sig: StopSignal) => {
    log('stopped');
    process.exit(SIGNAL_EXIT_CODES[sig]);
  };

  const stack = await startDevStack({ ...o, log });
  live.stack = stack;
  if (signalled) {
    const sig = signalled;
    await stopAll();
    exitStopped(sig);
  }
  let w;
  try {
    // A prebuilt bundle (MARINA_WORKFLOW_BUNDLE, as for `marina worker`) skips the webpack step on start.
    const bundle = prebuiltWorkflowBundle();
    w = await createMarinaWorker(stack.config, bundle ? { workflowBundle: bundle } : {});
  } catch (e) {
    disposeSignals();
    await stack.stop();
    throw e;
  }
  const worker = w;
  const running = worker.worker.run();
  live.stopWorker = async () => {
    if (worker.worker.getState() === 'RUNNING') worker.worker.shutdown();
    // Bounded by the SDK: activities get the grace time, then the force time (src/worker.ts).
    await running.catch(() => undefined);
    await worker.close();
  };
  log(`worker up; config ${stack.configPath}`);
  // The stack's config is written afresh each start (ports move), so the dev stack is the one place
  // that applies it on start: elsewhere a running pool's settings change only by `marina pool apply`.
  for (const p of stack.config.pools) {
    const r = await applyPoolSettings(worker.client, stack.config, p.name, 'marina dev');
    if (r.changes.length > 0)
      log(`pool ${p.name}: settings v${r.version.version} applied (${r.changes.length} change(s))`);
  }
  if (stack.uiUrl) log(`Temporal Web UI: ${stack.uiUrl}`);
  const shutdown = async () => {
    disposeSignals();
    await stopAll();
  };
  if (!o.demo) {
    log(
      `ready. In another terminal: npx marina --config ${stack.configPath} run --pool local --image ${SEED_IMAGE} --script 'echo hi'`,
    );
    // Ends through the signal handler, which exits once everything is stopped.
    return new Promise<number>(() => undefined);
  }
  let code = 1;
  try {
    const id = `demo-${Date.now().toString(36)}`;
    const handle = await startJob(w.client, stack.config, {
      id,
      pool: 'local',
      image: SEED_IMAGE,
      script: DEMO_SCRIPT,
      timeoutSeconds: 300,
      secrets: { DEMO_TOKEN: 'demo-token' },
      client: 'marina-dev',
    });
    log(`started ${handle.workflowId}; output follows`);
    const result = handle.result();
    await followLog(
      stack.config,
      { jobId: id, runId: handle.firstExecutionRunId },
      (b) => process.stdout.write(b),
      result,
    );
    const r = await result;
    log(
      `job ${r.jobId} ${r.state} with exit code ${r.exitCode} on ${r.host}; stages (ms): ${JSON.stringify(r.stages)}`,
    );
    log(`log at s3://${r.log.bucket}/${r.log.key}`);
    code = r.exitCode;
  } catch (e) {
    log(`demo job failed: ${e instanceof WorkflowFailedError ? (e.cause?.message ?? e.message) : String(e)}`);
  } finally {
    await shutdown();
  }
  return code;
}
