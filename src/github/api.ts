/**
 * The GitHub REST calls Marina makes, as the GitHub App (`@octokit/auth-app`, `@octokit/rest`): find the
 * installation of a target, mint JIT runner configs, find and delete runners, read and list jobs.
 * Runs only in activities: the App's private key is read here, by reference, and goes nowhere else.
 * Octokit's packages are ES modules only, so they are loaded with import().
 */
import type { Octokit } from '@octokit/rest';
import type { GithubConfig } from '../config/schema';
import { scopeKey, type GithubScope } from './types';

export interface GithubRunner {
  id: number;
  name: string;
  status: string;
  busy: boolean;
  labels: string[];
}

export interface ListedJob {
  id: number;
  runId: number;
  status: string;
  labels: string[];
  repository: string;
}

const split = (repository: string) => {
  const [owner, repo] = repository.split('/') as [string, string];
  return { owner, repo };
};

/** The path prefix of a scope's runner endpoints (repository or organisation level). */
function runnersRoute(scope: GithubScope): { prefix: string; params: Record<string, string> } {
  return 'repository' in scope
    ? { prefix: '/repos/{owner}/{repo}/actions/runners', params: split(scope.repository) }
    : { prefix: '/orgs/{org}/actions/runners', params: { org: scope.organization } };
}

const statusOf = (e: unknown): number | undefined => (e as { status?: number }).status;

export class GithubApi {
  /** One installation client per target: Octokit refreshes its installation token itself (1 h tokens). */
  private readonly clients = new Map<string, Promise<Octokit>>();

  constructor(
    private readonly gh: GithubConfig,
    /** Reads the App's PEM key when first needed (a secret reference, resolved on the worker). */
    private readonly privateKey: () => string,
  ) {}

  private async appClient(): Promise<Octokit> {
    const [{ Octokit }, { createAppAuth }] = await Promise.all([import('@octokit/rest'), import('@octokit/auth-app')]);
    return new Octokit({
      baseUrl: this.gh.apiUrl,
      authStrategy: createAppAuth,
      auth: { appId: this.gh.app.appId, privateKey: this.privateKey() },
      // Octokit's default logger prints request failures; they hold no secret, but keep the worker's log ours.
      log: { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined },
    });
  }

  /** The installation client for a scope: the App's installation on that repository or organisation. */
  client(scope: GithubScope): Promise<Octokit> {
    const key = scopeKey(scope);
    let c = this.clients.get(key);
    if (!c) {
      c = (async () => {
        const app = await this.appClient();
        const { data } =
          'repository' in scope
            ? await app.request('GET /repos/{owner}/{repo}/installation', split(scope.repository))
            : await app.request('GET /orgs/{org}/installation', { org: scope.organization });
        const [{ Octokit }, { createAppAuth }] = await Promise.all([
          import('@octokit/rest'),
          import('@octokit/auth-app'),
        ]);
        return new Octokit({
          baseUrl: this.gh.apiUrl,
          authStrategy: createAppAuth,
          auth: { appId: this.gh.app.appId, privateKey: this.privateKey(), installationId: data.id },
          log: { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined },
        });
      })();
      // A failed lookup is not kept: the next call asks again.
      c.catch(() => this.clients.delete(key));
      this.clients.set(key, c);
    }
    return c;
  }

  /** `POST …/actions/runners/generate-jitconfig`. The answer's config is a credential: the caller keeps it in memory. */
  async generateJitConfig(
    scope: GithubScope,
    runner: { name: string; labels: string[]; runnerGroupId: number },
  ): Promise<{ runnerId: number; encodedJitConfig: string }> {
    const octokit = await this.client(scope);
    const { prefix, params } = runnersRoute(scope);
    const { data } = await octokit.request(`POST ${prefix}/generate-jitconfig`, {
      ...params,
      name: runner.name,
      labels: runner.labels,
      runner_group_id: runner.runnerGroupId,
      work_folder: '_work',
    });
    const d = data as { runner: { id: number }; encoded_jit_config: string };
    return { runnerId: d.runner.id, encodedJitConfig: d.encoded_jit_config };
  }

  /** The runner registered under `name`, if any (`GET …/actions/runners?name=`). */
  async findRunner(scope: GithubScope, name: string): Promise<GithubRunner | undefined> {
    const octokit = await this.client(scope);
    const { prefix, params } = runnersRoute(scope);
    const { data } = await octokit.request(`GET ${prefix}`, { ...params, name, per_page: 100 });
    type Listed = Omit<GithubRunner, 'labels'> & { labels: Array<{ name: string } | string> };
    const r = (data as { runners: Listed[] }).runners.find((x) => x.name === name);
    return r ? { ...r, labels: r.labels.map((l) => (typeof l === 'string' ? l : l.name)) } : undefined;
  }

  /** `DELETE …/actions/runners/{id}`; false if it was gone already. */
  async deleteRunner(scope: GithubScope, id: number): Promise<boolean> {
    const octokit = await this.client(scope);
    const { prefix, params } = runnersRoute(scope);
    try {
      await octokit.request(`DELETE ${prefix}/{runner_id}`, { ...params, runner_id: id });
      return true;
    } catch (e) {
      if (statusOf(e) === 404) return false;
      throw e;
    }
  }

  /** `GET /repos/{owner}/{repo}/actions/jobs/{job_id}`: its status (queued, in_progress, completed…). */
  async jobStatus(scope: GithubScope, repository: string, jobId: number): Promise<string | undefined> {
    const octokit = await this.client(scope);
    try {
      const { data } = await octokit.request('GET /repos/{owner}/{repo}/actions/jobs/{job_id}', {
        ...split(repository),
        job_id: jobId,
      });
      return data.status;
    } catch (e) {
      if (statusOf(e) === 404) return undefined;
      throw e;
    }
  }

  /**
   * Queued jobs of a target: its queued runs, then their jobs still queued. An organisation's are its
   * installation's repositories' (there is no organisation-wide runs listing).
   */
  async listQueuedJobs(scope: GithubScope): Promise<ListedJob[]> {
    const octokit = await this.client(scope);
    let repositories: string[];
    if ('repository' in scope) repositories = [scope.repository];
    else {
      const repos = await octokit.paginate('GET /installation/repositories', { per_page: 100 });
      repositories = (repos as Array<{ full_name: string }>).map((r) => r.full_name);
    }
    const out: ListedJob[] = [];
    for (const repository of repositories) {
      const runs = await octokit.paginate('GET /repos/{owner}/{repo}/actions/runs', {
        ...split(repository),
        status: 'queued',
        per_page: 100,
      });
      for (const run of runs as Array<{ id: number }>) {
        const jobs = await octokit.paginate('GET /repos/{owner}/{repo}/actions/runs/{run_id}/jobs', {
          ...split(repository),
          run_id: run.id,
          filter: 'latest',
          per_page: 100,
        });
        for (const j of jobs as Array<{ id: number; run_id: number; status: string; labels: string[] }>)
          if (j.status === 'queued')
            out.push({ id: j.id, runId: j.run_id, status: j.status, labels: j.labels, repository });
      }
    }
    return out;
  }
}
