/**
 * What a job workflow knows of the GitHub Actions job it serves: ids, where its runner registers, under which
 * name and labels. Nothing secret: this rides in the job spec (workflow history). Pure, for the workflow bundle.
 */

/** Where a JIT runner registers: a repository or an organisation (config `github.targets`). */
export type GithubScope = { repository: string } | { organization: string };

export interface GithubJobRef {
  /** GitHub's workflow_job id; Marina's job id is `gh-<jobId>`. */
  jobId: number;
  runId: number;
  /** The job's repository, `owner/name`. */
  repository: string;
  scope: GithubScope;
  runnerGroupId: number;
  /** Deterministic per job (`marina-gh-<jobId>`): a retried step finds the registration an earlier try made. */
  runnerName: string;
  /** The pool's label set: what the runner registers with. */
  labels: string[];
}

/** A queued job as a webhook or the REST listing tells of it. */
export interface GithubJobEvent {
  action: string;
  jobId: number;
  runId: number;
  repository: string;
  labels: string[];
}

export const githubMarinaJobId = (githubJobId: number): string => `gh-${githubJobId}`;
export const githubRunnerName = (githubJobId: number): string => `marina-gh-${githubJobId}`;
export const scopeKey = (s: GithubScope): string =>
  'repository' in s ? `repo/${s.repository}` : `org/${s.organization}`;

/** Checks a job spec's `github` field (it reaches activities and shell words); returns problems by field. */
export function githubJobRefErrors(v: unknown): Array<{ field: string; message: string }> {
  if (v === undefined) return [];
  const errs: Array<{ field: string; message: string }> = [];
  const g = v as Partial<GithubJobRef> | null;
  if (typeof g !== 'object' || g === null) return [{ field: 'github', message: 'must be a GitHub job reference' }];
  if (!Number.isSafeInteger(g.jobId) || (g.jobId ?? 0) <= 0)
    errs.push({ field: 'github.jobId', message: 'a positive integer' });
  if (!Number.isSafeInteger(g.runId) || (g.runId ?? 0) < 0) errs.push({ field: 'github.runId', message: 'an integer' });
  if (typeof g.repository !== 'string' || !/^[A-Za-z0-9-]{1,39}\/[A-Za-z0-9._-]{1,100}$/.test(g.repository))
    errs.push({ field: 'github.repository', message: 'an "owner/name" repository' });
  if (typeof g.runnerName !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(g.runnerName))
    errs.push({ field: 'github.runnerName', message: 'letters, digits, ".", "_" or "-"' });
  if (!Array.isArray(g.labels) || g.labels.length === 0 || g.labels.some((l) => typeof l !== 'string'))
    errs.push({ field: 'github.labels', message: 'a non-empty list of labels' });
  if (!Number.isSafeInteger(g.runnerGroupId)) errs.push({ field: 'github.runnerGroupId', message: 'an integer' });
  const s = g.scope as Record<string, unknown> | undefined;
  if (typeof s !== 'object' || s === null || (typeof s.repository !== 'string' && typeof s.organization !== 'string'))
    errs.push({ field: 'github.scope', message: '{ repository } or { organization }' });
  return errs;
}
