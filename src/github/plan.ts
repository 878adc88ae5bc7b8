/**
 * From a GitHub job to a Marina job spec: which pool its labels match, where its runner registers, who
 * it counts against for fair share. Pure.
 */
import type { LoadedConfig } from '../config/load';
import type { GithubConfig, PoolConfig } from '../config/schema';
import type { JobSpec } from '../domain/job';
import { githubMarinaJobId, githubRunnerName, type GithubJobEvent, type GithubScope } from './types';

export type GithubPlan = { spec: JobSpec & { github: NonNullable<JobSpec['github']> } } | { ignored: string };

/** The environment variable the runner script reads its JIT config from (filled in inside the activity only). */
export const JIT_ENV = 'MARINA_GITHUB_JITCONFIG';

const lower = (labels: string[]) => labels.map((l) => l.toLowerCase());

/**
 * The first pool whose GitHub label set holds every label the job asks for (GitHub's own rule for a
 * runner: all of `runs-on`, case-insensitive). Pools are tried in config order.
 */
export function matchPool(config: LoadedConfig, labels: string[]): PoolConfig | undefined {
  const wanted = lower(labels);
  if (wanted.length === 0) return undefined;
  return config.pools.find((p) => {
    if (!p.github) return false;
    const offered = new Set(lower(p.github.labels));
    return wanted.every((l) => offered.has(l));
  });
}

/** The configured target a repository's runners register at: the repository itself, else its owner. */
export function targetFor(
  gh: GithubConfig,
  repository: string,
): { scope: GithubScope; runnerGroupId: number } | undefined {
  const repo = repository.toLowerCase();
  const owner = repo.split('/')[0];
  for (const t of gh.targets)
    if ('repository' in t && t.repository.toLowerCase() === repo)
      return { scope: { repository: t.repository }, runnerGroupId: t.runnerGroupId };
  for (const t of gh.targets)
    if ('organization' in t && t.organization.toLowerCase() === owner)
      return { scope: { organization: t.organization }, runnerGroupId: t.runnerGroupId };
  return undefined;
}

/** A fair-share client name fits in 64 characters; a long repository name keeps its start and a hash. */
function clientName(name: string): string {
  if (name.length <= 64) return name;
  let h = 0;
  for (const c of name) h = (Math.imul(h, 31) + c.charCodeAt(0)) >>> 0;
  return `${name.slice(0, 55)}~${h.toString(16).padStart(8, '0')}`;
}

export function planGithubJob(config: LoadedConfig, ev: GithubJobEvent): GithubPlan {
  const gh = config.github;
  if (!gh) return { ignored: 'no github: section in the config' };
  const target = targetFor(gh, ev.repository);
  if (!target) return { ignored: `repository ${ev.repository} is not under github.targets` };
  const pool = matchPool(config, ev.labels);
  if (!pool?.github) return { ignored: `no pool's github.labels hold all of [${ev.labels.join(', ')}]` };
  const p = pool.github;
  const id = githubMarinaJobId(ev.jobId);
  // Plain text: the JIT config arrives as ${JIT_ENV} from the activity, is taken out of the environment,
  // and handed to the runner as run.sh --jitconfig (README, GitHub Actions).
  const script = [
    `# GitHub Actions job ${ev.jobId} of ${ev.repository} (run ${ev.runId}): an ephemeral JIT runner`,
    'cfg="$' + JIT_ENV + '"; unset ' + JIT_ENV,
    `cd "$HOME"/'${p.runnerDir}'`,
    `exec ./run.sh --jitconfig "$cfg"`,
  ].join('\n');
  return {
    spec: {
      id,
      pool: pool.name,
      image: p.image,
      script,
      timeoutSeconds: p.timeoutSeconds,
      ...(p.resources ? { resources: p.resources } : {}),
      client: clientName(gh.clientBy === 'owner' ? ev.repository.split('/')[0]! : ev.repository),
      github: {
        jobId: ev.jobId,
        runId: ev.runId,
        repository: ev.repository,
        scope: target.scope,
        runnerGroupId: target.runnerGroupId,
        runnerName: githubRunnerName(ev.jobId),
        labels: p.labels,
      },
    },
  };
}
