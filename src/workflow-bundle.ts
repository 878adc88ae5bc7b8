/**
 * The workflow code a worker runs: bundled from source when the worker starts, or a bundle built ahead of time by
 * `scripts/bundle-workflows.ts` and named by MARINA_WORKFLOW_BUNDLE (the Docker image builds it at image build time,
 * so a worker starts without webpack and every replica of one image runs byte-identical workflow code).
 */
import { existsSync, mkdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { bundleWorkflowCode, type BundleOptions } from '@temporalio/worker';

export const WORKFLOWS_PATH = resolve(__dirname, '../workflows/index.ts');
/**
 * Workflow interceptors in every bundle, traced or not: they pass a job's trace on to its activities and
 * draw nothing from the workflow's random numbers, so histories replay the same either way.
 */
export const WORKFLOW_INTERCEPTOR_MODULES = [resolve(__dirname, '../workflows/trace-propagation.ts')];
export const WORKFLOW_BUNDLE_ENV = 'MARINA_WORKFLOW_BUNDLE';

/** The workflow bundle a worker runs, interceptors included (built ahead: tests, the Docker image). */
export function bundleWorkflows(options: Omit<BundleOptions, 'workflowsPath' | 'workflowInterceptorModules'> = {}) {
  return bundleWorkflowCode({
    ...options,
    workflowsPath: WORKFLOWS_PATH,
    workflowInterceptorModules: WORKFLOW_INTERCEPTOR_MODULES,
  });
}

/** Bundles the workflows and writes the bundle to `out`; the bundle's size in bytes. */
export async function writeWorkflowBundle(out: string): Promise<number> {
  const noop = () => undefined;
  const logger = { trace: noop, debug: noop, info: noop, warn: console.warn, error: console.error, log: noop };
  const { code } = await bundleWorkflows({ logger });
  const path = resolve(out);
  mkdirSync(dirname(path), { recursive: true });
  // Written aside, then renamed: a worker must never load a half-written bundle.
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, code);
  renameSync(tmp, path);
  return statSync(path).size;
}

/**
 * The prebuilt bundle MARINA_WORKFLOW_BUNDLE names, or undefined (bundle from source at start). Only an explicit
 * path counts: a bundle found lying in a checkout could be older than the workflows beside it, and the worker
 * would run stale workflow code without a word.
 */
export function prebuiltWorkflowBundle(env: NodeJS.ProcessEnv = process.env): { codePath: string } | undefined {
  const p = env[WORKFLOW_BUNDLE_ENV];
  if (!p) return undefined;
  if (!existsSync(p) || !statSync(p).isFile()) {
    throw new Error(
      `${WORKFLOW_BUNDLE_ENV}=${p}: no such file. Build it with \`node --import tsx scripts/bundle-workflows.ts ${p}\`, ` +
        `or unset ${WORKFLOW_BUNDLE_ENV} to bundle the workflows from source when the worker starts`,
    );
  }
  return { codePath: resolve(p) };
}
