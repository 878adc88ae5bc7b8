/**
 * What no orchestration of a job can beat on this machine, measured beside the figures: an empty workflow's
 * round trip and one activity's on the same Temporal server, one SSH command on an open connection to a host,
 * and one small S3 PUT then GET.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { NativeConnection, Worker } from '@temporalio/worker';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { DevStack } from '../../src/emulator/dev-stack';
import { logsLocation, type LoadedConfig } from '../../src/config/load';
import { s3ClientFor } from '../../src/config/s3';
import { connectClient } from '../../src/client/jobs';
import { SshConnection } from '../../activities/ssh/connection';
import { pct } from '../stats';

export interface Floor {
  name: string;
  ms: number;
  n: number;
}

const N = 30;

async function p50(n: number, fn: () => Promise<unknown>): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn();
    xs.push(performance.now() - t);
  }
  return pct(xs, 50);
}

export async function measureFloors(stack: DevStack, config: LoadedConfig): Promise<Record<string, Floor>> {
  const client = await connectClient(config);
  const taskQueue = `bench-floor-${randomUUID().slice(0, 8)}`;
  const connection = await NativeConnection.connect({ address: config.temporal.address });
  const worker = await Worker.create({
    connection,
    namespace: config.temporal.namespace,
    taskQueue,
    workflowsPath: require.resolve('./floor-workflows'),
    activities: { noop: async () => undefined },
  });
  const running = worker.run();
  const floors: Record<string, Floor> = {};
  try {
    const run = (type: string) => () =>
      client.workflow.execute(type, { taskQueue, workflowId: `floor-${randomUUID()}`, args: [] });
    await run('emptyWorkflow')();
    floors.workflow = { name: 'empty workflow start -> result', ms: await p50(N, run('emptyWorkflow')), n: N };
    floors.activity = {
      name: 'one-activity workflow start -> result',
      ms: await p50(N, run('oneActivityWorkflow')),
      n: N,
    };
  } finally {
    worker.shutdown();
    await running.catch(() => undefined);
    await connection.close();
    await client.connection.close();
  }
  const host = stack.hosts[0]!;
  const ssh = await SshConnection.connect({
    label: 'floor',
    host: '127.0.0.1',
    port: host.port,
    username: 'root',
    privateKey: readFileSync(join(config.path, '..', 'keys', 'worker_ed25519'), 'utf8'),
  });
  try {
    floors.ssh = { name: 'SSH command on an open connection', ms: await p50(N, () => ssh.run('true')), n: N };
  } finally {
    ssh.end();
  }
  const loc = logsLocation(config);
  const s3 = s3ClientFor(config, loc);
  try {
    const key = `${loc.prefix}bench-floor/${randomUUID()}`;
    floors.s3 = {
      name: 'S3 PUT then GET of 40 bytes',
      ms: await p50(N, async () => {
        await s3.send(new PutObjectCommand({ Bucket: loc.bucket, Key: key, Body: 'x'.repeat(40) }));
        await (await s3.send(new GetObjectCommand({ Bucket: loc.bucket, Key: key }))).Body!.transformToByteArray();
      }),
      n: N,
    };
  } finally {
    s3.destroy();
  }
  return floors;
}
