/** `marina pool apply`: validate a config file, show what it changes in each pool, and send it. */
import { hostname, userInfo } from 'node:os';
import type { Command } from 'commander';
import { loadConfig } from '../config/load';
import { connectClient } from '../client/jobs';
import { applyPlan, planApply, PoolSettingsError } from '../client/pool-settings';
import { formatChange } from '../client/settings-diff';
import { UsageError } from './args';

function whoAmI(): string {
  try {
    return `${userInfo().username}@${hostname()}`;
  } catch {
    return `uid ${process.getuid?.() ?? '?'}@${hostname()}`;
  }
}

export function registerPoolApplyCommand(pool: Command, configPath: () => string | undefined): void {
  pool
    .command('apply')
    .description(
      "set running pools' settings from a config file (the only way a running pool's settings change): validates, shows the difference, sends it",
    )
    .option('-f, --file <file>', 'config file (default: the global --config)')
    .option('--pool <name>', 'only this pool (default: every pool in the file)')
    .option('--dry-run', 'show the difference and send nothing')
    .option('--by <who>', 'who applies, recorded with the version', whoAmI())
    .action(async (o: { file?: string; pool?: string; dryRun?: boolean; by: string }) => {
      const config = loadConfig(o.file ?? configPath());
      const pools = o.pool ? [o.pool] : config.pools.map((p) => p.name);
      const client = await connectClient(config);
      try {
        for (const name of pools) {
          const plan = await planApply(client, config, name);
          const from = plan.current?.version;
          if (!plan.current)
            console.log(
              `pool ${name}: not running; ${o.dryRun ? 'would start' : 'starting'} it with these settings as v1`,
            );
          else if (plan.changes.length === 0)
            console.log(`pool ${name}: no change (v${from?.version ?? 0}${from ? ` by ${from.by}, ${from.at}` : ''})`);
          else {
            console.log(
              `pool ${name}: ${plan.changes.length} change(s) to v${from?.version ?? 0}${from ? ` (by ${from.by}, ${from.at})` : ' (set by a worker before settings were versioned)'}:`,
            );
            for (const c of plan.changes) console.log(`  ${formatChange(c)}`);
          }
          if (o.dryRun) continue;
          const r = await applyPlan(client, config, plan, o.by);
          if (r.changed) console.log(`pool ${name}: now runs settings v${r.version.version}, set by ${r.version.by}`);
        }
      } catch (e) {
        if (e instanceof PoolSettingsError) throw new UsageError(e.message);
        throw e;
      } finally {
        await client.connection.close();
      }
    });
}
