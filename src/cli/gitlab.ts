/**
 * `marina gitlab config|prepare|run|cleanup`: GitLab Runner's custom executor (README: "GitLab CI").
 * Each call is one process run by gitlab-runner; the job workflow in session mode holds the lease and
 * the VM between them. Exit codes are the protocol's: BUILD_FAILURE_EXIT_CODE when the job's script
 * failed (or the job asked for what the pool refuses), SYSTEM_FAILURE_EXIT_CODE when Marina or its
 * hosts failed. Nothing here throws to the CLI's generic handler, whose exit code would mean nothing
 * to the runner.
 */
import { withClient } from '../client/with-client';
import { failureText } from '../client/failure-text';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { LoadedConfig } from '../config/load';
import {
  SessionFailed,
  SessionRefused,
  closeSession,
  openSession,
  runSessionStep,
  unhealthyHosts,
  waitReady,
} from '../client/sessions';
import { STAGE_PATTERN } from '../domain/session';
import { collect, parseDuration, parseNumberPairs, parsePairs } from './args';
import { configJson, failureCodes, gitlabJobId, readGitlabCall, type GitlabCall } from '../gitlab/executor';

const version = (): string =>
  (JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version;

const say = (line: string) => process.stdout.write(`marina: ${line}\n`);
const warn = (line: string) => process.stderr.write(`marina: ${line}\n`);

/** Runs one executor call; every way out is an exit code the runner understands. */
async function call(fn: (codes: ReturnType<typeof failureCodes>) => Promise<number>): Promise<void> {
  const codes = failureCodes(process.env);
  try {
    process.exitCode = await fn(codes);
  } catch (e) {
    if (e instanceof SessionRefused) {
      // The job asked for what the pool will not run: retrying the same job fails the same way.
      warn(`refused: ${e.message}`);
      process.exitCode = codes.buildFailure;
    } else {
      warn(`system failure: ${failureText(e)}`);
      process.exitCode = codes.systemFailure;
    }
  }
}

export function registerGitlabCommands(program: Command, config: () => LoadedConfig): void {
  const gitlab = program
    .command('gitlab')
    .description(
      "GitLab Runner's custom executor: config_exec, prepare_exec, run_exec, cleanup_exec (README: GitLab CI)",
    );
  const idPrefix = [
    '--id-prefix <prefix>',
    'Marina job ids are <prefix>-<CI_JOB_ID>; one prefix per GitLab instance',
    'gitlab',
  ] as const;

  gitlab
    .command('config')
    .description('config_exec: print the executor config (builds_dir, cache_dir, hostname, driver) as JSON')
    .option('--builds-dir <dir>', 'where jobs check out inside the VM (absolute)', '/var/tmp/builds')
    .option('--cache-dir <dir>', 'the cache directory inside the VM (absolute)', '/var/tmp/cache')
    .option(...idPrefix)
    .action((o: { buildsDir: string; cacheDir: string; idPrefix: string }) =>
      call(async (codes) => {
        for (const [flag, dir] of [
          ['--builds-dir', o.buildsDir],
          ['--cache-dir', o.cacheDir],
        ] as const)
          // gitlab-runner mishandles relative paths here (gitlab-runner#31003).
          if (!dir.startsWith('/')) {
            warn(`${flag} "${dir}" must be an absolute path, e.g. /var/tmp/builds`);
            return codes.systemFailure;
          }
        const ciJobId = process.env.CUSTOM_ENV_CI_JOB_ID;
        const hostname = ciJobId ? `marina-${gitlabJobId(o.idPrefix, ciJobId)}` : 'marina';
        process.stdout.write(
          `${JSON.stringify(configJson({ buildsDir: o.buildsDir, cacheDir: o.cacheDir, hostname, version: version() }))}\n`,
        );
        return 0;
      }),
    );

  gitlab
    .command('prepare')
    .description("prepare_exec: lease a slot, fetch the job's image (CUSTOM_ENV_CI_JOB_IMAGE), boot the VM")
    .requiredOption('--pool <name>', 'the pool this runner sends jobs to')
    .option('--default-image <ref>', 'the image for jobs that name none (image: in .gitlab-ci.yml)')
    .option('--idle-timeout <duration>', 'destroy the VM when no stage came for this long (the runner died)', '15m')
    .option('--queue-timeout <duration>', 'give up (system failure) when no slot came within this', '1h')
    .option('--step-timeout <duration>', "a stage's limit when the job sets no CI_JOB_TIMEOUT", '1h')
    .option('--label <key=value>', 'host labels required (repeatable)', collect)
    .option('--resource <name=amount>', 'resources, e.g. vm=1 cpu=4 (repeatable)', collect)
    .option(...idPrefix)
    .action(
      (o: {
        pool: string;
        defaultImage?: string;
        idleTimeout: string;
        queueTimeout: string;
        stepTimeout: string;
        label?: string[];
        resource?: string[];
        idPrefix: string;
      }) =>
        call(async () => {
          const job: GitlabCall = readGitlabCall(process.env);
          const image = job.image ?? o.defaultImage;
          if (!image)
            throw new SessionRefused(
              "the job names no image (image: in .gitlab-ci.yml) and prepare has no --default-image; name one of the pool's images",
            );
          const id = gitlabJobId(o.idPrefix, job.ciJobId);
          return withClient(config, async (client, cfg) => {
            const { handle, started } = await openSession(client, cfg, {
              id,
              pool: o.pool,
              image,
              ...(job.project ? { client: `gitlab:${job.project}`.slice(0, 64) } : {}),
              labels: parsePairs('--label', o.label),
              resources: parseNumberPairs('--resource', o.resource),
              session: {
                idleTimeoutSeconds: parseDuration('--idle-timeout', o.idleTimeout),
                queueTimeoutSeconds: parseDuration('--queue-timeout', o.queueTimeout),
                // The job's own timeout bounds each stage; the runner enforces it over the whole job too.
                stepTimeoutSeconds: job.timeoutSeconds ?? parseDuration('--step-timeout', o.stepTimeout),
              },
            });
            say(
              `${started ? 'opened' : 'attached to'} session ${id} (workflow ${handle.workflowId}) for ${image} on pool ${o.pool}`,
            );
            const v = await waitReady(handle, (phase) => say(phase)).catch(async (e: unknown) => {
              // No slot in time: say which hosts are down, so the job log points at the cause.
              if (e instanceof SessionFailed && /no slot in pool/.test(e.message)) {
                const down = await unhealthyHosts(client, o.pool);
                if (down.length) throw new SessionFailed(`${e.message}; hosts not serving: ${down.join('; ')}`);
              }
              throw e;
            });
            say(`VM ${v.vm} on ${v.host} is ready`);
            return 0;
          });
        }),
    );

  gitlab
    .command('run <script> <stage>')
    .description("run_exec: run the stage's script file in the session's VM, streaming its output")
    .option(...idPrefix)
    .action((script: string, stage: string, o: { idPrefix: string }) =>
      call(async (codes) => {
        const job = readGitlabCall(process.env);
        if (!STAGE_PATTERN.test(stage)) {
          warn(`stage "${stage}": not a stage name gitlab-runner sends (lower-case letters, digits, "_")`);
          return codes.systemFailure;
        }
        const body = readFileSync(script);
        const id = gitlabJobId(o.idPrefix, job.ciJobId);
        return withClient(config, async (client, cfg) => {
          const r = await runSessionStep(client, cfg, id, stage, body, (b) => process.stdout.write(b));
          if (r.systemError !== undefined) throw new SessionFailed(`${stage}: ${r.systemError}`);
          if (r.exitCode === 0 && !r.timedOut) return 0;
          // The real code for allow_failure: exit_codes; the runner reads only the integer.
          if (job.buildExitCodeFile) writeFileSync(job.buildExitCodeFile, String(r.exitCode ?? 1));
          warn(`${stage} ${r.timedOut ? 'timed out' : `failed with exit code ${r.exitCode}`}`);
          return codes.buildFailure;
        });
      }),
    );

  gitlab
    .command('cleanup')
    .description('cleanup_exec: stop what still runs, destroy the VM, return the lease')
    .option('--reason <text>', 'recorded as why the session closed', 'cleanup')
    .option('--wait <duration>', 'wait at most this long for the VM to be destroyed (it goes on after)', '10m')
    .option(...idPrefix)
    .action((o: { reason: string; wait: string; idPrefix: string }) =>
      call(async () => {
        const job = readGitlabCall(process.env);
        const id = gitlabJobId(o.idPrefix, job.ciJobId);
        const waitMs = parseDuration('--wait', o.wait) * 1000;
        return withClient(config, async (client) => {
          let timer: NodeJS.Timeout | undefined;
          const gaveUp = new Promise<'waiting'>((r) => (timer = setTimeout(() => r('waiting'), waitMs)));
          const v = await Promise.race([closeSession(client, id, o.reason), gaveUp]).finally(() => clearTimeout(timer));
          if (v === 'waiting') {
            // cleanup's result never changes the job's; the session finishes its cleanup by itself.
            say(`session ${id} still cleaning up after ${o.wait}; it goes on (marina job show ${id})`);
            return 0;
          }
          say(
            v
              ? `session ${id} closed: ${v.vm ?? 'no VM'} destroyed, lease returned`
              : `no open session ${id}; nothing to clean`,
          );
          return 0;
        });
      }),
    );
}
