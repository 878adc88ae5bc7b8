/** The on-prem pool workflow: health-check cordoning on the real stack, and replay determinism. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Worker } from '@temporalio/worker';
import { startJob } from '../src/client/jobs';
import type { LoadedConfig } from '../src/config/load';
import { SEED_IMAGE } from '../src/emulator/seed-image';
import { poolStateQuery, poolWorkflowId } from '../workflows/definitions';
import { eventually, fileConfig, stack, startWorker, uniqueId } from './helpers';
import type { Client } from '@temporalio/client';
import { freePort } from '../src/emulator/processes';

let config: LoadedConfig;
let client: Client;
let stop: () => Promise<void>;

beforeAll(async () => {
  const deadPort = await freePort(); // nothing listens here: the host is down
  config = fileConfig('health', (raw) => {
    raw.pools[0].hosts = [
      raw.pools[0].hosts[0],
      { name: 'mac-dead', address: '127.0.0.1', ssh: { port: deadPort }, labels: { os: 'macos', arch: 'arm64' } },
    ];
  });
  const w = await startWorker(config);
  client = w.w.client;
  stop = w.stop;
});

afterAll(async () => {
  await stop?.();
});

describe('pool', () => {
  it('cordons a host that fails its health check repeatedly and places jobs elsewhere', async () => {
    const pool = client.workflow.getHandle(poolWorkflowId('health'));
    const state = await eventually(
      'dead host cordoned',
      async () => {
        const s = await pool.query(poolStateQuery);
        return s.hosts.find((h) => h.name === 'mac-dead')?.cordoned === 'health' ? s : undefined;
      },
      60_000,
    );
    const dead = state.hosts.find((h) => h.name === 'mac-dead')!;
    expect(dead.consecutiveHealthFailures).toBeGreaterThanOrEqual(3);
    expect(dead.lastHealthError).toMatch(/ssh to host health\/mac-dead/);
    expect(state.hosts.find((h) => h.name === 'mac-1')?.cordoned).toBeUndefined();

    const results = await Promise.all(
      [0, 1, 2].map(async (i) =>
        (
          await startJob(client, config, {
            id: uniqueId(`h${i}`),
            pool: 'health',
            image: SEED_IMAGE,
            script: 'echo ok',
            timeoutSeconds: 60,
          })
        ).result(),
      ),
    );
    expect(results.map((r) => r.host)).toEqual(['mac-1', 'mac-1', 'mac-1']);
  });

  it('replays recorded job and pool histories deterministically', async () => {
    const handle = await startJob(client, config, {
      id: uniqueId('replay'),
      pool: 'health',
      image: SEED_IMAGE,
      script: 'echo replay; exit 7',
      timeoutSeconds: 60,
    });
    expect((await handle.result()).exitCode).toBe(7);
    const histories = [
      { workflowId: handle.workflowId, history: await handle.fetchHistory() },
      {
        workflowId: poolWorkflowId('health'),
        history: await client.workflow.getHandle(poolWorkflowId('health')).fetchHistory(),
      },
    ];
    for (const h of histories) {
      await Worker.runReplayHistory({ workflowBundle: { codePath: stack().bundlePath } }, h.history, h.workflowId);
    }
  });
});
