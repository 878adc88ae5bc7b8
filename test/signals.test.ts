/**
 * Signals, as a CI runner or an init system sends them: real processes, spawned and signalled.
 * (`marina worker` under SIGTERM mid-script, handing the script over: test/rolling.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import type { LoadedConfig } from '../src/config/load';
import { SEED_IMAGE } from '../src/emulator/seed-image';
import { jobWorkflowId } from '../src/domain/job';
import { freePort } from '../src/emulator/processes';
import {
  cliOutcome,
  eventually,
  fileConfig,
  leftoverVms,
  spawnCli,
  startWorker,
  uniqueId,
  vmProcesses,
} from './helpers';

const POOL = 'signals';
let config: LoadedConfig;
let client: Client;
let stopWorker: () => Promise<void>;

beforeAll(async () => {
  config = fileConfig(POOL);
  const started = await startWorker(config);
  client = started.w.client;
  stopWorker = started.stop;
});

afterAll(async () => {
  await stopWorker?.();
});

/** Every live descendant of a process (children first found through /proc's parent links). */
function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      parent.set(Number(p), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      /* gone */
    }
  }
  const out: number[] = [];
  const walk = (pid: number) => {
    for (const [child, ppid] of parent) {
      if (ppid !== pid) continue;
      out.push(child);
      walk(child);
    }
  };
  walk(root);
  return out;
}

const alive = (pid: number): boolean => {
  try {
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];
    return state !== 'Z';
  } catch {
    return false;
  }
};

describe('signals', () => {
  it('SIGTERM to `marina run`: the job is cancelled, its VM cleaned up, and the client exits 143', async () => {
    const id = uniqueId('sigrun');
    const marker = join(mkdtempSync(join(tmpdir(), 'marina-sig-')), 'ticks');
    const child = spawnCli(config, [
      'run',
      ...['--pool', POOL, '--image', SEED_IMAGE, '--id', id, '--timeout', '10m'],
      ...['--script', `while true; do echo tick >> ${marker}; sleep 0.2; done`],
    ]);
    const outcome = cliOutcome(child);
    await eventually('script running in its VM', async () => existsSync(marker) && vmProcesses(id).length > 0, 90_000);

    child.kill('SIGTERM');
    const end = await outcome;
    expect(end.stderr).toMatch(new RegExp(`SIGTERM: cancelling job ${id}`));
    expect(end.stderr).toMatch(new RegExp(`job ${id} cancelled \\(SIGTERM\\); its VM is cleaned up`));
    expect([end.code, end.signal]).toEqual([143, null]);
    // It waited for the cleanup: by the time it exited, nothing of the job is left.
    expect(leftoverVms(id)).toEqual([]);
    expect(vmProcesses(id)).toEqual([]);
    expect((await client.workflow.getHandle(jobWorkflowId(id)).describe()).status.name).toBe('CANCELLED');
  });

  it('SIGTERM to `marina dev`: every process it started is gone, and it exits 143', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'marina-dev-sig-'));
    const child = spawnCli(undefined, [
      'dev',
      ...['--state-dir', stateDir, '--hosts', '1'],
      ...['--port', String(await freePort()), '--ui-port', String(await freePort())],
    ]);
    const outcome = cliOutcome(child);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    await eventually('marina dev ready', async () => stderr.includes('ready.'), 110_000);
    const started = descendants(child.pid!);
    // Temporal, moto and the emulated host's sshd, at least.
    expect(started.length).toBeGreaterThanOrEqual(3);
    const sshdPid = Number(readFileSync(join(stateDir, 'hosts', 'mac-1', 'sshd.pid'), 'utf8'));
    expect(started).toContain(sshdPid);

    const sent = Date.now();
    child.kill('SIGTERM');
    const end = await outcome;
    expect([end.code, end.signal]).toEqual([143, null]);
    expect(Date.now() - sent).toBeLessThan(60_000);
    expect(started.filter(alive)).toEqual([]);
  });
});
