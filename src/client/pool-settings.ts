/**
 * `marina pool apply`: the one writer of a running pool's settings. It reads the pool's current settings
 * and version, shows the difference from the config file, and sends the file's settings as an update that
 * the pool refuses if its version moved in between (two operators applying at once: the second is told to
 * look again). A pool that is not running is started with the file's settings as version 1.
 */
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { LoadedConfig } from '../config/load';
import { poolSettings, poolStartOptions } from '../config/pool-settings';
import {
  applySettingsUpdate,
  poolSettingsQuery,
  poolWorkflowId,
  type PoolSettingsVersion,
  type PoolSettingsView,
} from '../../workflows/definitions';
import type { poolWorkflow } from '../../workflows/pool';
import { settingsDiff, type SettingsChange } from './settings-diff';

export interface ApplyPlan {
  pool: string;
  /** What the pool runs now; undefined: the pool is not running (it will be started). */
  current?: PoolSettingsView;
  changes: SettingsChange[];
}

export class PoolSettingsError extends Error {}

async function currentSettings(client: Client, pool: string): Promise<PoolSettingsView | undefined> {
  const handle = client.workflow.getHandle<typeof poolWorkflow>(poolWorkflowId(pool));
  try {
    const { status } = await handle.describe();
    if (status.name !== 'RUNNING') return undefined;
    return await handle.query(poolSettingsQuery);
  } catch (e) {
    if (e instanceof WorkflowNotFoundError) return undefined;
    throw e;
  }
}

function poolOf(config: LoadedConfig, name: string): LoadedConfig['pools'][number] {
  const p = config.pools.find((x) => x.name === name);
  if (!p)
    throw new PoolSettingsError(
      `--pool: no pool "${name}" in ${config.path} (pools: ${config.pools.map((x) => x.name).join(', ')})`,
    );
  return p;
}

export async function planApply(client: Client, config: LoadedConfig, pool: string): Promise<ApplyPlan> {
  const next = poolSettings(poolOf(config, pool));
  const current = await currentSettings(client, pool);
  return { pool, ...(current ? { current } : {}), changes: current ? settingsDiff(current.settings, next) : [] };
}

/**
 * Sends the config's settings to the pool, as a change of the version the plan was made against. Answers
 * the version the pool now runs; unchanged settings send nothing.
 */
export async function applyPlan(
  client: Client,
  config: LoadedConfig,
  plan: ApplyPlan,
  by: string,
): Promise<{ version: PoolSettingsVersion; started: boolean; changed: boolean }> {
  const p = poolOf(config, plan.pool);
  if (!plan.current) {
    const options = poolStartOptions(config, p, by);
    try {
      await client.workflow.start<typeof poolWorkflow>('poolWorkflow', options);
      return { version: options.args[0].settingsVersion!, started: true, changed: true };
    } catch (e) {
      if (!(e instanceof WorkflowExecutionAlreadyStartedError)) throw e;
      throw new PoolSettingsError(
        `pool ${plan.pool} was started by someone else while this ran: run marina pool apply again to see the difference`,
      );
    }
  }
  if (plan.changes.length === 0 && plan.current.version)
    return { version: plan.current.version, started: false, changed: false };
  try {
    const version = await client.workflow.getHandle(poolWorkflowId(plan.pool)).executeUpdate(applySettingsUpdate, {
      args: [{ settings: poolSettings(p), by, source: config.path, basedOn: plan.current.version?.version ?? 0 }],
    });
    return { version, started: false, changed: true };
  } catch (e) {
    // The pool refused (stale version, bad settings) and changed nothing: its message names the fix.
    const cause = (e as { cause?: { message?: string } }).cause?.message;
    if (cause) throw new PoolSettingsError(`pool ${plan.pool}: ${cause}`);
    throw e;
  }
}

/** Plan and apply in one step (tests, `marina dev`). */
export async function applyPoolSettings(
  client: Client,
  config: LoadedConfig,
  pool: string,
  by: string,
): Promise<{ version: PoolSettingsVersion; changes: SettingsChange[]; started: boolean }> {
  const plan = await planApply(client, config, pool);
  const r = await applyPlan(client, config, plan, by);
  return { version: r.version, changes: plan.changes, started: r.started };
}
