/** One real local stack for the whole suite: Temporal dev server, S3 (moto), emulated Mac hosts. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { startDevStack, type DevStack } from '../src/emulator/dev-stack';
import { bundleWorkflows } from '../src/workflow-bundle';

let stack: DevStack | undefined;

export default async function setup(project: TestProject) {
  const stateDir = mkdtempSync(join(tmpdir(), 'marina-test-'));
  stack = await startDevStack({
    stateDir,
    hosts: 3,
    // A second pool, local-parallels: the job tests run on it as well (DRIVERS in helpers.ts).
    parallelsHosts: 2,
    headless: true,
    vmBootSeconds: 1,
    healthCheckSeconds: 2,
    leaseCheckSeconds: 2,
    // Low enough that a test can exhaust one workflow's signal budget for real (a message that keeps
    // failing); high enough that no pool run in the suite comes near it.
    temporalDynamicConfig: { 'history.maximumSignalsPerExecution': 1000 },
  });
  const bundle = await bundleWorkflows({ logger: quietLogger });
  const bundlePath = join(stateDir, 'workflow-bundle.js');
  writeFileSync(bundlePath, bundle.code);
  project.provide('stack', { stateDir, configPath: stack.configPath, bundlePath, address: stack.temporalAddress });
  return async () => {
    await stack?.stop();
    // About 140 MB a run (hosts, VMs, image caches, Temporal's database): kept only when asked for.
    if (process.env.MARINA_KEEP_TEST_STATE) console.log(`test state kept in ${stateDir}`);
    else rmSync(stateDir, { recursive: true, force: true });
  };
}

const noop = () => undefined;
const quietLogger = { trace: noop, debug: noop, info: noop, warn: noop, error: console.error, log: noop };

declare module 'vitest' {
  export interface ProvidedContext {
    stack: { stateDir: string; configPath: string; bundlePath: string; address: string };
  }
}
