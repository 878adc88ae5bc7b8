/**
 * The stack for `npm run test:cluster`: a real Temporal cluster (the Temporal server on PostgreSQL) in place of
 * the dev server, and the rest of the local stack as usual (S3, emulated hosts). Test files read it through
 * the same `stack` the main suite provides, plus `cluster` (its directory) to kill and restart the server.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { startDevStack, type DevStack } from '../../src/emulator/dev-stack';
import { startCluster, stopCluster } from '../../src/emulator/temporal-cluster';
import { bundleWorkflows } from '../../src/workflow-bundle';

export default async function setup(project: TestProject) {
  const stateDir = mkdtempSync(join(tmpdir(), 'marina-cluster-test-'));
  const clusterDir = join(stateDir, 'cluster');
  let stack: DevStack | undefined;
  const teardown = async () => {
    await stack?.stop();
    await stopCluster(clusterDir, !process.env.MARINA_KEEP_TEST_STATE);
    if (process.env.MARINA_KEEP_TEST_STATE) console.log(`test state kept in ${stateDir}`);
    else rmSync(stateDir, { recursive: true, force: true });
  };
  try {
    const t0 = Date.now();
    const cluster = await startCluster(clusterDir, (l) => console.log(`cluster: ${l}`));
    console.log(`cluster: up in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    stack = await startDevStack({
      stateDir,
      hosts: 3,
      headless: true,
      vmBootSeconds: 1,
      healthCheckSeconds: 2,
      leaseCheckSeconds: 2,
      temporalAddress: cluster.address,
    });
    const bundle = await bundleWorkflows({ logger: quietLogger });
    const bundlePath = join(stateDir, 'workflow-bundle.js');
    writeFileSync(bundlePath, bundle.code);
    project.provide('stack', { stateDir, configPath: stack.configPath, bundlePath, address: cluster.address });
    project.provide('clusterDir', clusterDir);
  } catch (e) {
    await teardown();
    throw e;
  }
  return teardown;
}

const noop = () => undefined;
const quietLogger = { trace: noop, debug: noop, info: noop, warn: noop, error: console.error, log: noop };

declare module 'vitest' {
  export interface ProvidedContext {
    clusterDir: string;
  }
}
