/**
 * GitHub Actions: webhook received -> JIT runner online in its VM (its first poll reaches the GitHub
 * stand-in), over N sequential jobs on the local stack, with the emulated VM boot (a fixed delay of the
 * Tart stand-in) shown separately, and the job's end-to-end time.
 *   node --import tsx bench/github.ts [jobs=30] [vmBootSeconds=1]
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify, parse } from 'yaml';
import { readFileSync } from 'node:fs';
import { Runtime, DefaultLogger } from '@temporalio/worker';
import { startDevStack } from '../src/emulator/dev-stack';
import { createMarinaWorker } from '../src/worker';
import { loadConfig } from '../src/config/load';
import { startWebhookServer } from '../src/github/server';
import { githubRunnerName } from '../src/github/types';
import type { JobResult } from '../workflows/definitions';
import { GithubStandIn } from '../test/github/stand-in';
import { appKeyPair, deliver, recordedPayload, runnerImage } from '../test/github/fixtures';
import { pct } from './stats';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const REPO = 'Codertocat/Hello-World';

async function main() {
  const n = Number(process.argv[2] ?? 30);
  const bootSeconds = Number(process.argv[3] ?? 1);
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  const stateDir = mkdtempSync(join(tmpdir(), 'marina-bench-gh-'));
  const stack = await startDevStack({ stateDir, hosts: 2, headless: true, vmBootSeconds: bootSeconds });
  const key = appKeyPair();
  writeFileSync(join(stateDir, 'app.pem'), key.privateKey, { mode: 0o600 });
  writeFileSync(join(stateDir, 'hook-secret'), 'bench-secret', { mode: 0o600 });
  const standIn = new GithubStandIn(1, key.publicKey, [{ id: 3456996, account: 'Codertocat', repositories: [REPO] }]);
  await standIn.start();
  const image = await runnerImage(stack.config, 'gh-bench-runner', join(stateDir, 'keys', 'vm_ed25519'));
  const raw = parse(readFileSync(stack.configPath, 'utf8')) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  raw.github = {
    apiUrl: standIn.url,
    app: { appId: 1, privateKey: { file: join(stateDir, 'app.pem') } },
    webhookSecret: { file: join(stateDir, 'hook-secret') },
    listen: { port: 0 },
    targets: [{ repository: REPO }],
    scanSeconds: 3600,
  };
  raw.pools[0].github = { labels: ['self-hosted', 'ubuntu-latest'], image, timeoutSeconds: 300 };
  const path = join(stateDir, 'github.yaml');
  writeFileSync(path, stringify(raw));
  const config = loadConfig(path);
  const w = await createMarinaWorker(config);
  const running = w.worker.run();
  const server = await startWebhookServer(w.client, config, { port: 0, log: () => undefined });
  const { Webhooks } = await import('@octokit/webhooks');
  const hooks = new Webhooks({ secret: 'bench-secret' });
  const runJob = async (id: number) => {
    standIn.addJob({ id, runId: id, repository: REPO, name: `job ${id}`, labels: ['ubuntu-latest'], steps: ['build'] });
    const body = await recordedPayload('queued', id, id);
    const t0 = Date.now();
    const res = await deliver(server.url, body, await hooks.sign(body));
    if (res.body.outcome !== 'started') throw new Error(`job ${id}: ${JSON.stringify(res.body)}`);
    const r = (await w.client.workflow.getHandle(`job/gh-${id}`).result()) as JobResult;
    const online = standIn.events.find((e) => e.kind === 'online' && e.runner === githubRunnerName(id))!.at;
    return { online: online - t0, total: Date.now() - t0, boot: r.stages.boot ?? 0, fetch: r.stages.fetch ?? 0 };
  };
  try {
    const base = 9_000_000_000 + (Date.now() % 1_000_000) * 100;
    // Warm both hosts' image caches: the figures are the runner path, not the first download.
    await Promise.all([runJob(base), runJob(base + 1)]);
    const xs: Array<Awaited<ReturnType<typeof runJob>>> = [];
    for (let i = 0; i < n; i++) xs.push(await runJob(base + 2 + i));
    const fmt = (v: number[]) => `p50 ${pct(v, 50).toFixed(0)} ms  p95 ${pct(v, 95).toFixed(0)} ms`;
    console.log(`jobs: ${n} sequential, 2 emulated hosts, emulated VM boot delay ${bootSeconds} s, image cached`);
    console.log(`webhook received -> runner online in VM: ${fmt(xs.map((x) => x.online))}`);
    console.log(`  of which emulated VM boot (stage boot): ${fmt(xs.map((x) => x.boot))}`);
    console.log(`  the rest (Marina, GitHub calls, SSH):   ${fmt(xs.map((x) => x.online - x.boot))}`);
    console.log(`webhook received -> job done, VM gone:   ${fmt(xs.map((x) => x.total))}`);
  } finally {
    await server.close();
    w.worker.shutdown();
    await running.catch(() => undefined);
    await w.close();
    await standIn.stop();
    await stack.stop();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
