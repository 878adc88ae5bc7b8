/** The GitHub tests' fixtures: an image holding the runner stand-in, an App key, signed recorded payloads. */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LoadedConfig } from '../../src/config/load';
import { s3ClientFor } from '../../src/config/s3';
import { ChunkedStore } from '../../src/images/chunked/store';
import { pushVmArchive } from '../../src/images/chunked/vm-files';
import { buildSeedImage, publicKeyOf, vmHostKeyOfArchive } from '../../src/emulator/seed-image';

/**
 * The stack's seed image plus the runner stand-in under ~/actions-runner, pushed as `<name>:1`.
 * `vmKey`: the stack's VM private key file (its public half is baked in). No vitest here: the benchmark uses it.
 */
export async function runnerImage(config: LoadedConfig, name: string, vmKey: string): Promise<string> {
  const work = mkdtempSync(join(tmpdir(), 'marina-ghimg-'));
  try {
    const seed = join(work, 'seed.tgz');
    buildSeedImage(seed, publicKeyOf(vmKey), 4);
    const dir = join(work, 'vm');
    mkdirSync(dir);
    execFileSync('tar', ['-xzf', seed, '-C', dir]);
    mkdirSync(join(dir, 'root', 'actions-runner'), { recursive: true });
    cpSync(join(__dirname, 'runner'), join(dir, 'root', 'actions-runner'), { recursive: true });
    const archive = join(work, 'image.tgz');
    execFileSync('tar', ['-czf', archive, '-C', dir, '.']);
    const s3 = s3ClientFor(config, config.imageStore);
    try {
      await pushVmArchive(new ChunkedStore(s3, config.imageStore), `${name}:1`, archive, {
        vmHostKey: vmHostKeyOfArchive(archive),
      });
    } finally {
      s3.destroy();
    }
    return `${name}:1`;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

export function appKeyPair(): { privateKey: string; publicKey: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    privateKey: privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(),
    publicKey: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

type Payload = { action: string; workflow_job: { id: number; run_id: number; labels: string[] } } & Record<
  string,
  unknown
>;

/** A recorded workflow_job payload from @octokit/webhooks-examples, by action, with this test's job ids. */
export async function recordedPayload(action: 'queued' | 'completed', jobId: number, runId: number): Promise<string> {
  const examples = (await import('@octokit/webhooks-examples')).default as unknown as Array<{
    name: string;
    examples: Payload[];
  }>;
  const all = examples.find((e) => e.name === 'workflow_job')!.examples;
  // The plain recordings of Codertocat/Hello-World (labels [ubuntu-latest]).
  const base = all.find(
    (p) => p.action === action && (p.repository as { full_name: string }).full_name === 'Codertocat/Hello-World',
  )!;
  const p = structuredClone(base);
  p.workflow_job.id = jobId;
  p.workflow_job.run_id = runId;
  return JSON.stringify(p);
}

/** POSTs a delivery as GitHub does (headers per docs.github.com, webhook-events-and-payloads). */
export async function deliver(
  url: string,
  body: string,
  signature: string | undefined,
  delivery: string = randomUUID(),
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'user-agent': 'GitHub-Hookshot/marina-test',
      'x-github-event': 'workflow_job',
      'x-github-delivery': delivery,
      ...(signature ? { 'x-hub-signature-256': signature } : {}),
    },
    body,
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}
