/** The custom executor's pure parts: what a call reads from gitlab-runner's environment, ids, session specs. */
import { describe, expect, it } from 'vitest';
import { configJson, gitlabJobId, readGitlabCall } from '../src/gitlab/executor';
import { isSessionSpec, normalizeSessionSpec, stepId, validateSessionSpec } from '../src/domain/session';

describe('gitlab executor calls', () => {
  it('reads the job and the exit codes the runner gives, never assuming them when given', () => {
    const call = readGitlabCall({
      CUSTOM_ENV_CI_JOB_ID: '4711',
      CUSTOM_ENV_CI_JOB_IMAGE: 'macos-xcode:16',
      CUSTOM_ENV_CI_JOB_TIMEOUT: '1800',
      CUSTOM_ENV_CI_PROJECT_PATH: 'group/app',
      BUILD_FAILURE_EXIT_CODE: '7',
      SYSTEM_FAILURE_EXIT_CODE: '9',
      BUILD_EXIT_CODE_FILE: '/tmp/x/code',
    });
    expect(call).toEqual({
      ciJobId: '4711',
      image: 'macos-xcode:16',
      timeoutSeconds: 1800,
      project: 'group/app',
      buildFailure: 7,
      systemFailure: 9,
      buildExitCodeFile: '/tmp/x/code',
    });
    // Without them, the documented current values.
    expect(readGitlabCall({ CUSTOM_ENV_CI_JOB_ID: '1' })).toEqual({ ciJobId: '1', buildFailure: 1, systemFailure: 2 });
  });

  it('says it must be run by gitlab-runner when there is no job id', () => {
    expect(() => readGitlabCall({})).toThrow(/CUSTOM_ENV_CI_JOB_ID is not set: .*run by gitlab-runner/);
    expect(() => readGitlabCall({ CUSTOM_ENV_CI_JOB_ID: '12; rm -rf /' })).toThrow(/not a job id/);
  });

  it('makes one Marina job id per GitLab job, refusing a prefix that cannot be one', () => {
    expect(gitlabJobId('gitlab', '4711')).toBe('gitlab-4711');
    expect(() => gitlabJobId('git lab', '1')).toThrow(/--id-prefix "git lab"/);
    expect(stepId('gitlab-4711', 'build_script', 1)).toBe('gitlab-4711.build_script.1');
  });

  it('answers config_exec with the documented keys', () => {
    expect(
      configJson({ buildsDir: '/var/tmp/builds', cacheDir: '/var/tmp/cache', hostname: 'h', version: '1' }),
    ).toEqual({
      builds_dir: '/var/tmp/builds',
      cache_dir: '/var/tmp/cache',
      builds_dir_is_shared: false,
      hostname: 'h',
      driver: { name: 'marina', version: '1' },
      job_env: {},
    });
  });
});

describe('session specs', () => {
  const good = {
    id: 'gitlab-1',
    pool: 'ci',
    image: 'macos-base',
    session: { idleTimeoutSeconds: 900, stepTimeoutSeconds: 3600, queueTimeoutSeconds: 3600 },
  };
  it('tells a session from a job, and fills defaults', () => {
    expect(isSessionSpec(good)).toBe(true);
    expect(isSessionSpec({ id: 'x', pool: 'ci', image: 'a:1', script: 'echo', timeoutSeconds: 1 })).toBe(false);
    expect(normalizeSessionSpec(good)).toMatchObject({ image: 'macos-base:latest', resources: { vm: 1 }, labels: {} });
  });
  it('names every bad field with its fix', () => {
    const fields = validateSessionSpec({
      ...good,
      id: '-bad',
      session: { idleTimeoutSeconds: 0, stepTimeoutSeconds: 1 },
    }).map((e) => e.field);
    expect(fields).toEqual(['id', 'session.idleTimeoutSeconds', 'session.queueTimeoutSeconds']);
  });
});
