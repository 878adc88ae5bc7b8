/**
 * The GitHub Actions integration's config: the App, the webhook, the repositories and organisations
 * Marina serves (top-level `github:`), and each pool's runner label set (`pools[].github:`).
 * Built from the schema's own secret reference (a factory, so schema.ts and this file import no cycle).
 */
import { z } from 'zod';

const REPOSITORY = /^[A-Za-z0-9-]{1,39}\/[A-Za-z0-9._-]{1,100}$/;
const ORGANIZATION = /^[A-Za-z0-9-]{1,39}$/;

/** Labels GitHub gives every runner of a kind: a job naming only these is not claimed by Marina (README). */
export const GENERIC_RUNNER_LABELS = ['self-hosted', 'macos', 'linux', 'windows', 'x64', 'arm64', 'arm'];

export function githubSchemas<S extends z.ZodType>(secretRef: S) {
  const target = z.union(
    [
      z
        .object({
          repository: z.string().regex(REPOSITORY, 'an "owner/name" repository, e.g. acme/app'),
          /** Runner group of the JIT registration; 1 is every repository's and organisation's Default group. */
          runnerGroupId: z.number().int().positive().default(1),
        })
        .strict(),
      z
        .object({
          organization: z.string().regex(ORGANIZATION, 'an organisation login, e.g. acme'),
          runnerGroupId: z.number().int().positive().default(1),
        })
        .strict(),
    ],
    { error: 'each target is { repository: owner/name } or { organization: login } (runners register there)' },
  );

  const github = z
    .object({
      /** REST API root: https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server. */
      apiUrl: z.url('a URL such as https://api.github.com').default('https://api.github.com'),
      app: z
        .object({
          /** The App's id (a number) or its Client ID (Iv1…): the JWT's issuer. */
          appId: z.union([z.number().int().positive(), z.string().min(1)]),
          /** The App's private key (PEM), by reference: it never leaves the worker and the intake. */
          privateKey: secretRef,
        })
        .strict(),
      /** The webhook secret GitHub signs deliveries with (X-Hub-Signature-256), by reference. */
      webhookSecret: secretRef,
      /** Where `marina github serve` listens. */
      listen: z
        .object({
          host: z.string().min(1).default('127.0.0.1'),
          port: z.number().int().min(0).max(65535).default(8780),
          path: z.string().startsWith('/', 'a URL path, e.g. /github/webhook').default('/github/webhook'),
        })
        .strict()
        .default({ host: '127.0.0.1', port: 8780, path: '/github/webhook' }),
      /** Repositories and organisations Marina runs jobs for; a job from anywhere else is ignored. */
      targets: z.array(target).min(1, 'list at least one target, e.g. [{ repository: acme/app }]'),
      /** How often a Temporal Schedule per target lists queued jobs and starts those the webhooks missed. */
      scanSeconds: z.number().int().min(1, 'at least 1 second').default(120),
      /** How often a runner that has not taken a job checks whether its GitHub job is still queued. */
      idleCheckSeconds: z.number().positive().default(15),
      /** The fair-share client of a GitHub job: its repository (default) or its owner. */
      clientBy: z.enum(['repository', 'owner']).default('repository'),
    })
    .strict();

  const pool = z
    .object({
      /** The runner's labels; a job whose `runs-on` labels are all among them runs here. */
      labels: z.array(z.string().min(1).max(100)).min(1).max(100),
      /** The image the runner's VM boots (it holds the actions runner under runnerDir). */
      image: z.string().regex(/^[\w][\w./-]*(:[\w][\w.-]*)?$/, 'an image reference, e.g. macos-xcode:16'),
      /** The actions runner's folder in the VM, relative to the home folder. */
      runnerDir: z
        .string()
        .regex(/^[\w][\w./-]*$/, 'a path relative to the VM home, e.g. actions-runner')
        .refine((p) => !p.split('/').includes('..'), 'no ".." segments')
        .default('actions-runner'),
      /** The runner's wall-clock limit (GitHub's own limit for a self-hosted job is 5 days). */
      timeoutSeconds: z
        .number()
        .positive()
        .default(6 * 3600),
      resources: z.record(z.string(), z.number().nonnegative()).optional(),
    })
    .strict()
    .refine(
      (p) => p.labels.some((l) => !GENERIC_RUNNER_LABELS.includes(l.toLowerCase())),
      'name at least one label of your own besides self-hosted/macOS/ARM64…, e.g. marina-xcode: a job asking only for generic labels is not claimed',
    );

  return { github, pool };
}
