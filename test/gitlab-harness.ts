/**
 * Calls `marina gitlab config|prepare|run|cleanup` as gitlab-runner's custom executor does
 * (executors/custom in gitlab-runner; docs.gitlab.com/runner/executors/custom): each call a process
 * of its own in the job's temp dir (`custom-executor*`, also its TMPDIR), the job's variables as
 * CUSTOM_ENV_*, BUILD_FAILURE_EXIT_CODE=1, SYSTEM_FAILURE_EXIT_CODE=2, BUILD_EXIT_CODE_FILE and
 * JOB_RESPONSE_FILE; `run` gets `<script file> <stage>` after its run_args, the script written 0700 to
 * `script<random>/script.`; prepare is retried on a system failure (3 attempts, 3 s apart); the stages in
 * the runner's order, after_script whatever the script did, then the success or failure variants of
 * archive_cache and upload_artifacts, cleanup_file_variables, and cleanup always.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { LoadedConfig } from '../src/config/load';
import { cliOutcome, stack, type CliOutcome } from './helpers';

const ROOT = resolve(__dirname, '..');

export const BUILD_FAILURE = 1;
export const SYSTEM_FAILURE = 2;

/** The stages gitlab-runner sends, in its order (the custom executor sends step_script as build_script). */
export const MAIN_STAGES = ['prepare_script', 'get_sources', 'restore_cache', 'download_artifacts', 'build_script'];

export interface GitlabJob {
  ciJobId: string;
  image?: string;
  /** Script body per stage; a stage without one gets a script that prints its name. */
  scripts?: Record<string, string>;
  /** Variables of the job (CUSTOM_ENV_<name>). */
  variables?: Record<string, string>;
}

export interface ExecutorCall extends CliOutcome {
  args: string[];
}

export class GitlabRunnerHarness {
  readonly calls: ExecutorCall[] = [];
  readonly tempDir: string;
  readonly buildExitCodeFile: string;

  constructor(
    private readonly config: LoadedConfig,
    private readonly job: GitlabJob,
    private readonly args: { prepare: string[]; run?: string[]; cleanup?: string[]; config?: string[] },
  ) {
    // os.MkdirTemp("", "custom-executor"), as the runner makes it.
    this.tempDir = mkdtempSync(join(tmpdir(), 'custom-executor'));
    this.buildExitCodeFile = join(this.tempDir, 'build-exit-code');
  }

  /** What every executable gets in its environment. */
  env(): NodeJS.ProcessEnv {
    const vars: Record<string, string> = {
      CI_JOB_ID: this.job.ciJobId,
      CI_JOB_TIMEOUT: '3600',
      CI_PROJECT_PATH: 'group/project',
      CI_BUILDS_DIR: '/var/tmp/builds',
      ...(this.job.image ? { CI_JOB_IMAGE: this.job.image } : {}),
      ...this.job.variables,
    };
    const responseFile = join(this.tempDir, 'response.json');
    if (!existsSync(responseFile))
      writeFileSync(responseFile, JSON.stringify({ id: Number(this.job.ciJobId) }), { mode: 0o600 });
    return {
      ...process.env,
      ...Object.fromEntries(Object.entries(vars).map(([k, v]) => [`CUSTOM_ENV_${k}`, v])),
      BUILD_FAILURE_EXIT_CODE: String(BUILD_FAILURE),
      SYSTEM_FAILURE_EXIT_CODE: String(SYSTEM_FAILURE),
      BUILD_EXIT_CODE_FILE: this.buildExitCodeFile,
      JOB_RESPONSE_FILE: responseFile,
      TMPDIR: this.tempDir,
      MARINA_LOG_LEVEL: 'ERROR',
    };
  }

  /** One executable call as a process of its own (which a test may kill). */
  spawn(args: string[]): ChildProcess {
    // bin/marina, as config.toml names it (README: GitLab CI), run from the job's temp dir.
    return spawn(join(ROOT, 'bin', 'marina'), ['--config', this.config.path, 'gitlab', ...args], {
      cwd: this.tempDir,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...this.env(), MARINA_WORKFLOW_BUNDLE: stack().bundlePath },
      // The runner starts each executable as a process group leader.
      detached: true,
    });
  }

  async exec(args: string[]): Promise<ExecutorCall> {
    const out = { ...(await cliOutcome(this.spawn(args))), args };
    this.calls.push(out);
    return out;
  }

  config_(): Promise<ExecutorCall> {
    return this.exec(['config', ...(this.args.config ?? [])]);
  }

  /** prepare_exec, retried on a system failure as the runner does (3 attempts, 3 s apart). */
  async prepare(attempts = 3): Promise<ExecutorCall> {
    for (let i = 1; ; i++) {
      const r = await this.exec(['prepare', ...this.args.prepare]);
      if (r.code !== SYSTEM_FAILURE || i >= attempts) return r;
      await new Promise((r) => setTimeout(r, 3000));
    }
  }

  /** Writes the stage's script as the runner does: `<tmp>/script<random>/script.`, mode 0700. */
  scriptFile(stage: string): string {
    const dir = mkdtempSync(join(this.tempDir, 'script'));
    const file = join(dir, 'script.');
    writeFileSync(file, this.job.scripts?.[stage] ?? generatedScript(stage, `echo "stage ${stage}"`), { mode: 0o700 });
    chmodSync(file, 0o700);
    return file;
  }

  spawnRun(stage: string): ChildProcess {
    return this.spawn(['run', ...(this.args.run ?? []), this.scriptFile(stage), stage]);
  }

  run(stage: string): Promise<ExecutorCall> {
    return this.exec(['run', ...(this.args.run ?? []), this.scriptFile(stage), stage]);
  }

  cleanup(): Promise<ExecutorCall> {
    return this.exec(['cleanup', ...(this.args.cleanup ?? [])]);
  }

  /** A whole job as the runner drives it; returns the job's outcome: 0, or the first failing exit code. */
  async runJob(): Promise<{ code: number; stages: Record<string, ExecutorCall> }> {
    const stages: Record<string, ExecutorCall> = {};
    let code = 0;
    try {
      const config = await this.config_();
      if (config.code !== 0) return { code: config.code ?? SYSTEM_FAILURE, stages };
      const prepare = await this.prepare();
      if (prepare.code !== 0) return { code: prepare.code ?? SYSTEM_FAILURE, stages };
      for (const stage of MAIN_STAGES) {
        const r = (stages[stage] = await this.run(stage));
        if (r.code !== 0) {
          code = r.code ?? SYSTEM_FAILURE;
          break;
        }
      }
      // after_script runs whatever the script did; its own failure does not change the job's result.
      stages.after_script = await this.run('after_script');
      const ok = code === 0;
      for (const stage of [
        ok ? 'archive_cache' : 'archive_cache_on_failure',
        ok ? 'upload_artifacts_on_success' : 'upload_artifacts_on_failure',
        'cleanup_file_variables',
      ]) {
        const r = (stages[stage] = await this.run(stage));
        if (ok && r.code !== 0) code = r.code ?? SYSTEM_FAILURE;
      }
      return { code, stages };
    } finally {
      // cleanup_exec always runs; its result never changes the job's.
      stages.cleanup = await this.cleanup();
    }
  }

  /** The real exit code the executor left for `allow_failure: exit_codes`, if any. */
  buildExitCode(): string | undefined {
    return existsSync(this.buildExitCodeFile) ? readFileSync(this.buildExitCodeFile, 'utf8') : undefined;
  }
}

/** A script shaped like the bash the runner generates: strict mode, the job's variables exported, then the commands. */
export function generatedScript(stage: string, commands: string, variables: Record<string, string> = {}): string {
  const exports = Object.entries(variables)
    .map(([k, v]) => `export ${k}='${v.replace(/'/g, `'\\''`)}'`)
    .join('\n');
  return `#!/usr/bin/env bash

set -eo pipefail
set +o noclobber
${exports}
echo "Running ${stage}"
${commands}
`;
}
