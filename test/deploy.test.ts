/**
 * The steps the Docker image and docker-compose.yml run, run here for real (these machines have no Docker engine):
 * the image's workflow bundle step, a `marina worker` process started from that bundle, the bucket step against a
 * real S3 server (moto), and the namespace step against a real Temporal server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { HeadBucketCommand } from '@aws-sdk/client-s3';
import { startJob } from '../src/client/jobs';
import { loadConfig, type LoadedConfig } from '../src/config/load';
import { s3ClientFor } from '../src/config/s3';
import { SEED_IMAGE } from '../src/emulator/seed-image';
import { temporalCli } from '../src/tools/binaries';
import { SEARCH_ATTRIBUTES } from '../workflows/definitions';
import { eventually, fileConfig, readJobLog, uniqueId } from './helpers';

const ROOT = resolve(__dirname, '..');
const POOL = 'deploy';
const run = promisify(execFile);
let config: LoadedConfig;
let client: Client;
const bundle = join(mkdtempSync(join(tmpdir(), 'marina-bundle-')), 'dist', 'workflow-bundle.js');
const children: ChildProcess[] = [];

const tsNode = (script: string, env: NodeJS.ProcessEnv, args: string[] = []) =>
  spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, script), ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 120_000,
  });

beforeAll(async () => {
  config = fileConfig(POOL);
  client = new Client({ connection: await Connection.connect({ address: config.temporal.address }) });
});

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await client?.connection.close();
});

describe('the Docker image', () => {
  it('builds the workflow bundle with scripts/bundle-workflows.ts under node', () => {
    const r = tsNode('scripts/bundle-workflows.ts', {}, [bundle]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`workflow bundle: ${bundle}`);
    const code = readFileSync(bundle, 'utf8');
    expect(code).toContain('jobWorkflow');
    expect(code).toContain('poolWorkflow');
    expect(statSync(bundle).size).toBeGreaterThan(100_000);
  });

  it('runs a job on a `marina worker` process that loads that bundle instead of bundling', async () => {
    let stderr = '';
    const worker = spawn(
      process.execPath,
      ['--import', 'tsx', join(ROOT, 'src/cli/main.ts'), '--config', config.path, 'worker'],
      {
        cwd: ROOT,
        stdio: ['ignore', 'ignore', 'pipe'],
        env: { ...process.env, MARINA_WORKFLOW_BUNDLE: bundle, MARINA_LOG_LEVEL: 'ERROR' },
      },
    );
    children.push(worker);
    worker.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    await eventually('the worker announcing its bundle', async () =>
      stderr.includes(`workflows: prebuilt bundle ${bundle}`),
    );
    const handle = await startJob(client, config, {
      id: uniqueId('deploy-bundle'),
      pool: POOL,
      image: SEED_IMAGE,
      script: 'echo ran from the prebuilt bundle',
      timeoutSeconds: 120,
    });
    const r = await handle.result();
    expect(r.state).toBe('succeeded');
    expect(await readJobLog(config, r.log.key)).toBe('ran from the prebuilt bundle\n');
    worker.kill('SIGTERM');
    const code = await new Promise<number | null>((res) => worker.once('exit', res));
    expect(code).toBe(0);
  });

  it('refuses a MARINA_WORKFLOW_BUNDLE that does not exist, naming the variable and the fix', () => {
    const missing = join(dirname(bundle), 'nope.js');
    const r = tsNode('src/cli/main.ts', { MARINA_WORKFLOW_BUNDLE: missing }, ['--config', config.path, 'worker']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain(`MARINA_WORKFLOW_BUNDLE=${missing}: no such file`);
    expect(r.stderr).toContain('scripts/bundle-workflows.ts');
  });
});

describe('docker-compose.yml steps', () => {
  it('deploy/marina.yaml is a valid Marina config', () => {
    const c = loadConfig(join(ROOT, 'deploy/marina.yaml'));
    expect(c.imageStore.endpoint).toBe('http://s3:7070');
  });

  it('the bucket step creates the configured bucket, and passes again once it exists', async () => {
    const bucket = uniqueId('deploy').toLowerCase();
    const c = fileConfig(`${POOL}-bucket`, (raw) => {
      raw.imageStore.bucket = bucket;
    });
    const first = tsNode('scripts/ensure-bucket.ts', { MARINA_CONFIG: c.path });
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toContain(`bucket ${bucket}: created`);
    const again = tsNode('scripts/ensure-bucket.ts', { MARINA_CONFIG: c.path });
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toContain(`bucket ${bucket}: exists`);
    const s3 = s3ClientFor(c, c.imageStore);
    try {
      await s3.send(new HeadBucketCommand({ Bucket: bucket }));
    } finally {
      s3.destroy();
    }
  });

  it('scripts/check-s3.ts finds every S3 operation Marina uses working on a real S3 server (moto)', () => {
    const r = tsNode('scripts/check-s3.ts', { MARINA_CONFIG: config.path });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('ok    presigned GET with Range');
    expect(r.stdout).toContain('10/10 checks passed');
  });

  it("the namespace step registers the namespace and every one of Marina's search attributes, and runs again", async () => {
    const namespace = uniqueId('deploy-ns');
    const env = {
      ...process.env,
      PATH: `${dirname(temporalCli())}:${process.env.PATH ?? ''}`,
      TEMPORAL_ADDRESS: config.temporal.address,
      MARINA_NAMESPACE: namespace,
      MARINA_NAMESPACE_RETENTION: '1d',
    };
    const script = join(ROOT, 'deploy/temporal/setup-namespace.sh');
    const first = await run('sh', [script], { env, timeout: 60_000 });
    expect(first.stdout).toContain(`namespace ${namespace}: created`);
    const again = await run('sh', [script], { env, timeout: 60_000 });
    expect(again.stdout).toContain(`namespace ${namespace}: exists`);
    const listed = await client.connection.operatorService.listSearchAttributes({ namespace });
    for (const name of Object.keys(SEARCH_ATTRIBUTES)) {
      expect(listed.customAttributes?.[name], name).toBe(2 /* INDEXED_VALUE_TYPE_KEYWORD */);
    }
  });
});
