/** `marina dev`: the whole stack on one machine, and the demo job that proves it. */
import { startDevStack } from '../emulator/dev-stack';
import { createMarinaWorker } from '../worker';
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
  temporalPort: number;
  uiPort: number;
  demo: boolean;
}): Promise<number> {
  const log = (l: string) => console.error(`marina dev: ${l}`);
  // Keep the terminal for the job's output: the worker's own logs only when something goes wrong.
  Runtime.install({ logger: new DefaultLogger((process.env.MARINA_LOG_LEVEL as 'WARN' | undefined) ?? 'WARN') });
  const stack = await startDevStack({ ...o, log });
  let w;
  try {
    w = await createMarinaWorker(stack.config);
  } catch (e) {
    await stack.stop();
    throw e;
  }
  const running = w.worker.run();
  log(`worker up; config ${stack.configPath}`);
  if (stack.uiUrl) log(`Temporal Web UI: ${stack.uiUrl}`);
  const shutdown = async () => {
    // The SDK's own signal hook may have begun the shutdown already (Ctrl-C): a second call throws.
    if (w.worker.getState() === 'RUNNING') w.worker.shutdown();
    await running.catch(() => undefined);
    await w.close();
    await stack.stop();
  };
  if (!o.demo) {
    log(
      `ready. In another terminal: npx marina --config ${stack.configPath} run --pool local --image ${SEED_IMAGE} --script 'echo hi'`,
    );
    await new Promise<void>((resolve) => {
      process.once('SIGINT', () => resolve());
      process.once('SIGTERM', () => resolve());
    });
    log('stopping');
    await shutdown();
    return 0;
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
