/**
 * GitLab Runner's custom executor protocol (docs.gitlab.com/runner/executors/custom), as Marina
 * answers it: what the runner gives each call (variables, exit codes) and what Marina makes of it.
 * No I/O but reading the given environment; the CLI (src/cli/gitlab.ts) does the calls.
 */
import { JOB_ID_PATTERN } from '../domain/job';

/** What every executable gets from gitlab-runner (CUSTOM_ENV_* are the job's variables). */
export interface GitlabCall {
  /** The CI job id (`CUSTOM_ENV_CI_JOB_ID`). */
  ciJobId: string;
  /** `image:` of the job (`CUSTOM_ENV_CI_JOB_IMAGE`), if it names one. */
  image?: string;
  /** The job's timeout in seconds (`CUSTOM_ENV_CI_JOB_TIMEOUT`), if given. */
  timeoutSeconds?: number;
  /** The project's path (`CUSTOM_ENV_CI_PROJECT_PATH`): the fair-share client. */
  project?: string;
  /** Exit with this when the job's script failed (`BUILD_FAILURE_EXIT_CODE`; read, never hard-coded). */
  buildFailure: number;
  /** Exit with this when Marina or its hosts failed (`SYSTEM_FAILURE_EXIT_CODE`). */
  systemFailure: number;
  /** Where the script's real exit code goes, for `allow_failure: exit_codes` (`BUILD_EXIT_CODE_FILE`). */
  buildExitCodeFile?: string;
}

export class GitlabCallError extends Error {
  override name = 'GitlabCallError';
}

const exitCode = (env: NodeJS.ProcessEnv, name: string, fallback: number): number => {
  const v = env[name];
  return v !== undefined && /^\d{1,3}$/.test(v) ? Number(v) : fallback;
};

/** Reads the call's environment; a missing job id means we were not called by gitlab-runner. */
export function readGitlabCall(env: NodeJS.ProcessEnv): GitlabCall {
  // The documented current values, used only if the runner did not set them.
  const buildFailure = exitCode(env, 'BUILD_FAILURE_EXIT_CODE', 1);
  const systemFailure = exitCode(env, 'SYSTEM_FAILURE_EXIT_CODE', 2);
  const ciJobId = env.CUSTOM_ENV_CI_JOB_ID;
  if (!ciJobId || !/^\d{1,19}$/.test(ciJobId))
    throw new GitlabCallError(
      `CUSTOM_ENV_CI_JOB_ID is ${ciJobId === undefined ? 'not set' : `"${ciJobId}", not a job id`}: ` +
        'marina gitlab prepare|run|cleanup are meant to be run by gitlab-runner as its custom executor (README: GitLab CI)',
    );
  const timeout = Number(env.CUSTOM_ENV_CI_JOB_TIMEOUT);
  return {
    ciJobId,
    ...(env.CUSTOM_ENV_CI_JOB_IMAGE ? { image: env.CUSTOM_ENV_CI_JOB_IMAGE } : {}),
    ...(Number.isFinite(timeout) && timeout > 0 ? { timeoutSeconds: timeout } : {}),
    ...(env.CUSTOM_ENV_CI_PROJECT_PATH ? { project: env.CUSTOM_ENV_CI_PROJECT_PATH } : {}),
    buildFailure,
    systemFailure,
    ...(env.BUILD_EXIT_CODE_FILE ? { buildExitCodeFile: env.BUILD_EXIT_CODE_FILE } : {}),
  };
}

/** The exit codes alone, for failures before the call could be read. */
export const failureCodes = (env: NodeJS.ProcessEnv) => ({
  buildFailure: exitCode(env, 'BUILD_FAILURE_EXIT_CODE', 1),
  systemFailure: exitCode(env, 'SYSTEM_FAILURE_EXIT_CODE', 2),
});

/**
 * Marina's job id for a GitLab job: `<prefix>-<CI_JOB_ID>`. One id per GitLab job, so every call of
 * that job (and a call run again) finds the same session; the prefix tells GitLab instances apart.
 */
export function gitlabJobId(prefix: string, ciJobId: string): string {
  const id = `${prefix}-${ciJobId}`;
  if (!JOB_ID_PATTERN.test(id))
    throw new GitlabCallError(
      `--id-prefix "${prefix}": the job id "${id}" must be letters, digits, ".", "_" or "-" (at most 63), e.g. --id-prefix gitlab`,
    );
  return id;
}

/** `config_exec`'s answer (docs: "Config"): every key optional, unknown ones ignored by the runner. */
export function configJson(o: {
  buildsDir: string;
  cacheDir: string;
  hostname: string;
  version: string;
}): Record<string, unknown> {
  return {
    builds_dir: o.buildsDir,
    cache_dir: o.cacheDir,
    // One VM per job: nothing in the builds directory is shared with another job.
    builds_dir_is_shared: false,
    hostname: o.hostname,
    driver: { name: 'marina', version: o.version },
    job_env: {},
  };
}
