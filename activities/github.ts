/**
 * GitHub Actions activities. `runGithubRunner` is a GitHub job's run step: it registers one JIT runner
 * for the job (App auth), hands the config to the VM and runs `run.sh --jitconfig` there as the job's
 * detached, re-attachable script, removes the runner if it never took a job, and deregisters it at the
 * end. The JIT config is generated and delivered inside this activity: it is in no input, no result,
 * no heartbeat, no log (masked), so never in workflow history.
 * `githubScanQueued` lists a target's queued jobs and starts those the webhooks missed.
 */
import { Context, CancelledFailure } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { ActivityContext, VmRef } from './context';
import { runActivities, jobDir, type RunRequest, type RunResult } from './run';
import { checkVmRef } from './inputs';
import { isWorkerShutdown } from './shutdown';
import { GithubApi } from '../src/github/api';
import { githubJobRefErrors, scopeKey, type GithubJobRef, type GithubScope } from '../src/github/types';
import { JIT_ENV } from '../src/github/plan';
import { handleGithubJobEvent, type IntakeOutcome } from '../src/github/intake';

/** A secret name the config cannot hold (names there are `[A-Za-z0-9_.-]+`): only this activity resolves it. */
const JIT_SECRET = '@github-jitconfig';

export interface GithubRunResult extends RunResult {
  /** The runner took a job (this one or another of the same labels: JIT does not pin a runner to a job). */
  tookJob: boolean;
  /** Stopped and removed because its job went elsewhere (cancelled, or taken by another runner) before it took one. */
  stoppedIdle: boolean;
}

const apis = new WeakMap<ActivityContext, GithubApi>();

export function githubApi(ctx: ActivityContext): GithubApi {
  let api = apis.get(ctx);
  if (!api) {
    const gh = ctx.config.github;
    if (!gh)
      throw ApplicationFailure.create({
        message: `this worker's config (${ctx.config.path}) has no github: section; a GitHub job needs one`,
        type: 'ConfigError',
        nonRetryable: true,
      });
    api = new GithubApi(gh, () => ctx.secret(gh.app.privateKey, 'github.app.privateKey'));
    apis.set(ctx, api);
  }
  return api;
}

/**
 * The worker's context, seeing one more secret: the JIT config, under a name only this activity uses. The run
 * step's own path then delivers it (over SSH stdin into a 0600 file the VM's runner script sources and deletes
 * before the script starts) and masks it in the log.
 */
function withJitSecret(ctx: ActivityContext, value: string): ActivityContext {
  const d = Object.create(ctx) as ActivityContext;
  Object.defineProperty(d, 'config', {
    value: { ...ctx.config, secrets: { ...ctx.config.secrets, [JIT_SECRET]: { env: JIT_SECRET } } },
  });
  d.secret = (ref, what) => ('env' in ref && ref.env === JIT_SECRET ? value : ctx.secret(ref, what));
  return d;
}

/** Removes the job's runner registration unless it is running a job; true if one was removed. */
async function deregister(api: GithubApi, scope: GithubScope, name: string): Promise<boolean> {
  const r = await api.findRunner(scope, name);
  if (!r || r.busy) return false;
  return api.deleteRunner(scope, r.id);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function githubActivities(ctx: ActivityContext) {
  return {
    async runGithubRunner(target: VmRef & { ip: string }, req: RunRequest, gh: GithubJobRef): Promise<GithubRunResult> {
      checkVmRef(target);
      const errs = githubJobRefErrors(gh);
      if (errs.length > 0)
        throw ApplicationFailure.create({
          message: `refused github: ${errs.map((e) => `${e.field} ${e.message}`).join('; ')}`,
          type: 'InvalidActivityInput',
          nonRetryable: true,
        });
      const actx = Context.current();
      const api = githubApi(ctx);
      const idleMs = (ctx.config.github?.idleCheckSeconds ?? 15) * 1000;
      const vm = await ctx.vmConnection(target, target.ip);
      const dir = jobDir(req.id);

      // A runner already started in this VM (an earlier attempt, before a worker died) is re-attached to;
      // its registration is the one it uses. Only one attempt runs at a time, so check-then-act is safe here.
      const started = (await vm.run(`[ -d ${dir}/started ] && echo yes || echo no`)).trim() === 'yes';
      let jit = '';
      if (!started) {
        actx.heartbeat({ step: 'register' });
        // A registration under this job's name that no runner process uses: an earlier attempt registered it
        // and died before the VM got the config (which GitHub shows only once). Remove it, register anew:
        // one runner per job, never two.
        const stale = await api.findRunner(gh.scope, gh.runnerName);
        if (stale) {
          if (stale.busy)
            throw ApplicationFailure.create({
              message: `runner ${gh.runnerName} is busy on ${scopeKey(gh.scope)} but no runner runs in ${target.vm}; waiting for it to finish`,
              type: 'GithubRunnerBusy',
            });
          await api.deleteRunner(gh.scope, stale.id);
        }
        jit = (
          await api.generateJitConfig(gh.scope, {
            name: gh.runnerName,
            labels: gh.labels,
            runnerGroupId: gh.runnerGroupId,
          })
        ).encodedJitConfig;
      }

      let tookJob = false;
      let stoppedIdle = false;
      let watching = true;
      // The watch sleeps between rounds; the step's end wakes it, so the step does not wait out a round.
      let wake = () => undefined as void;
      const woken = new Promise<void>((r) => (wake = r));
      const stopWatching = () => {
        watching = false;
        wake();
      };
      // While the runner has taken no job, it polls GitHub for ever: stop it once the job it was made for is
      // no longer queued (cancelled, or taken by another runner). Once busy, it ends by itself (ephemeral).
      const watch = (async () => {
        while (watching) {
          await Promise.race([sleep(idleMs), woken]);
          if (!watching) return;
          try {
            const r = await api.findRunner(gh.scope, gh.runnerName);
            if (r?.busy) {
              tookJob = true;
              return;
            }
            const status = await api.jobStatus(gh.scope, gh.repository, gh.jobId);
            if (r && status !== 'queued' && watching) {
              stoppedIdle = true;
              await api.deleteRunner(gh.scope, r.id);
              await vm.run(
                `p=$(cat ${dir}/pid 2>/dev/null) || exit 0; kill -TERM -- -$p 2>/dev/null; sleep 2; kill -KILL -- -$p 2>/dev/null; true`,
              );
              return;
            }
          } catch {
            // GitHub or the VM did not answer: ask again next round.
          }
        }
      })();

      let result: RunResult;
      try {
        result = await runActivities(withJitSecret(ctx, jit)).runScript(target, {
          ...req,
          secrets: { ...req.secrets, [JIT_ENV]: JIT_SECRET },
        });
      } catch (e) {
        stopWatching();
        // Cancelled, or a failure no retry fixes: the runner is gone with the VM, so is its registration.
        // A worker handing over (shutdown) or a retryable failure leaves both for the next attempt.
        const final =
          e instanceof CancelledFailure ? !isWorkerShutdown(actx) : e instanceof ApplicationFailure && e.nonRetryable;
        if (final) await deregister(api, gh.scope, gh.runnerName).catch(() => undefined);
        throw e;
      } finally {
        stopWatching();
      }
      await watch.catch(() => undefined);
      // Ephemeral runners that ran a job are removed by GitHub; one that never took a job is removed here.
      const removed = await deregister(api, gh.scope, gh.runnerName);
      return {
        ...result,
        // A runner stopped because its job went elsewhere did nothing wrong: the step succeeded.
        ...(stoppedIdle ? { exitCode: 0, timedOut: false } : {}),
        tookJob: tookJob || (!stoppedIdle && !removed),
        stoppedIdle,
      };
    },

    /** Lists a target's queued jobs and starts each one's job workflow (ids from job ids: none twice). */
    async githubScanQueued(target: string): Promise<{ listed: number; started: number; ignored: number }> {
      const gh = ctx.config.github;
      const scope = gh?.targets
        .map((t): GithubScope => ('repository' in t ? { repository: t.repository } : { organization: t.organization }))
        .find((s) => scopeKey(s) === target);
      if (!scope || !ctx.temporal)
        throw ApplicationFailure.create({
          message: `github target ${target} is not in this worker's config (${ctx.config.path})`,
          type: 'ConfigError',
          nonRetryable: true,
        });
      const jobs = await githubApi(ctx).listQueuedJobs(scope);
      const outcomes: IntakeOutcome[] = [];
      for (const j of jobs) {
        Context.current().heartbeat();
        outcomes.push(
          await handleGithubJobEvent(ctx.temporal, ctx.config, {
            action: 'queued',
            jobId: j.id,
            runId: j.runId,
            repository: j.repository,
            labels: j.labels,
          }),
        );
      }
      const started = outcomes.filter((o) => o.outcome === 'started');
      if (started.length > 0)
        Context.current().log.info('GitHub jobs the webhooks missed were started', {
          target,
          jobs: started.map((o) => ('jobId' in o ? o.jobId : '')),
        });
      return {
        listed: jobs.length,
        started: started.length,
        ignored: outcomes.filter((o) => o.outcome === 'ignored').length,
      };
    },
  };
}
