#!/usr/bin/env node
/**
 * `marina gitlab …` alone: the same commands as in src/cli/main.ts, without loading the worker, the
 * emulators and the simulator. gitlab-runner starts one process per stage (a dozen a job), so start-up
 * time is paid a dozen times; bin/marina sends `gitlab` calls here.
 */
import { Command } from 'commander';
import { loadConfig, type LoadedConfig } from '../config/load';
import { registerGitlabCommands } from './gitlab';

const program = new Command('marina')
  .description('Durable CI on macOS fleets, on Temporal')
  .option('-c, --config <file>', 'config file (default: $MARINA_CONFIG or ./marina.yaml)');
const config = (): LoadedConfig => loadConfig(program.opts<{ config?: string }>().config);
registerGitlabCommands(program, config);
program.parseAsync(process.argv).catch((e: unknown) => {
  // The commands map their own failures to the runner's exit codes; this is a usage error (a bad flag).
  console.error(`marina: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = Number(process.env.SYSTEM_FAILURE_EXIT_CODE ?? 2) || 2;
});
