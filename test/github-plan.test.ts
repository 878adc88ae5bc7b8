/** GitHub jobs to Marina jobs (pure): label matching, targets, fair-share client, config refusals. */
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../src/config/load';
import { planGithubJob } from '../src/github/plan';
import { eventFromPayload } from '../src/github/intake';

const yaml = (poolLabels: string, targets = '[{ repository: acme/app }, { organization: labs }]') => `
imageStore: { bucket: marina }
github:
  app: { appId: 1, privateKey: { file: key.pem } }
  webhookSecret: { env: HOOK_SECRET }
  targets: ${targets}
pools:
  - name: linux
    github: { labels: [self-hosted, linux-big], image: "ubuntu:24" }
  - name: mac
    github: { labels: ${poolLabels}, image: "macos-xcode:16" }
`;
const config = () => parseConfig(yaml('[self-hosted, macOS, ARM64, marina-xcode]'), '/etc/marina/marina.yaml');
const ev = (labels: string[], repository = 'acme/app') => ({
  action: 'queued',
  jobId: 42,
  runId: 7,
  repository,
  labels,
});

describe('GitHub job planning', () => {
  it('a job runs in the first pool whose labels hold all of its labels (case-insensitive)', () => {
    const p = planGithubJob(config(), ev(['self-hosted', 'macos', 'marina-xcode']));
    expect('spec' in p && p.spec).toMatchObject({
      id: 'gh-42',
      pool: 'mac',
      image: 'macos-xcode:16',
      client: 'acme/app',
      github: { jobId: 42, runnerName: 'marina-gh-42', scope: { repository: 'acme/app' }, runnerGroupId: 1 },
    });
    // The runner registers with the pool's labels, not the job's.
    expect('spec' in p && p.spec.github.labels).toEqual(['self-hosted', 'macOS', 'ARM64', 'marina-xcode']);
  });

  it('a label the pool lacks means no match; the reason is given', () => {
    const p = planGithubJob(config(), ev(['self-hosted', 'marina-xcode', 'gpu']));
    expect(p).toEqual({ ignored: "no pool's github.labels hold all of [self-hosted, marina-xcode, gpu]" });
  });

  it('a repository outside the targets is ignored; an organisation target covers its repositories', () => {
    expect(planGithubJob(config(), ev(['marina-xcode'], 'other/app'))).toEqual({
      ignored: 'repository other/app is not under github.targets',
    });
    const p = planGithubJob(config(), ev(['marina-xcode'], 'labs/tool'));
    expect('spec' in p && p.spec.github.scope).toEqual({ organization: 'labs' });
  });

  it('refuses a pool whose labels are all generic, naming the field and the fix', () => {
    expect(() => parseConfig(yaml('[self-hosted, macOS]'), '/x.yaml')).toThrow(ConfigError);
    expect(() => parseConfig(yaml('[self-hosted, macOS]'), '/x.yaml')).toThrow(/pools\.1\.github.*marina-xcode/s);
  });

  it('refuses an inline App key', () => {
    const text = yaml('[marina-xcode]').replace('privateKey: { file: key.pem }', 'privateKey: "-----BEGIN"');
    expect(() => parseConfig(text, '/x.yaml')).toThrow(/github\.app\.privateKey: must be a reference/);
  });

  it('reads a recorded queued payload', async () => {
    const examples = (await import('@octokit/webhooks-examples')).default as unknown as Array<{
      name: string;
      examples: Array<{ action: string }>;
    }>;
    const queued = examples.find((e) => e.name === 'workflow_job')!.examples.find((p) => p.action === 'queued')!;
    expect(eventFromPayload(queued)).toMatchObject({
      action: 'queued',
      jobId: expect.any(Number),
      labels: expect.any(Array),
    });
    expect(eventFromPayload({ action: 'queued' })).toBe('not a workflow_job payload');
  });
});
