/** The job workflow end to end on the real stack: dev server, S3, emulated hosts over SSH. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WorkflowFailedError, type Client } from '@temporalio/client';
import { checkJobSpec, followLog, startJob } from '../src/client/jobs';
import { JobSpecError, jobWorkflowId } from '../src/domain/job';
import { poolStateQuery, poolWorkflowId } from '../workflows/definitions';
import type { LoadedConfig } from '../src/config/load';
import { SEED_IMAGE } from '../src/emulator/seed-image';
import { readSecret } from '../src/config/secrets';
import {
  DRIVERS,
  type Driver,
  eventually,
  fileConfig,
  hostDirs,
  leftoverVms,
  readJobLog,
  stack,
  startWorker,
  uniqueId,
  vmProcesses,
} from './helpers';

const POOL = 'jobs';
/** The same worker serves a Parallels pool too: the tests marked per driver run on both. */
const poolOf = (d: Driver) => `${POOL}${d.suffix}`;
let config: LoadedConfig;
let client: Client;
let stopWorker: () => Promise<void>;

beforeAll(async () => {
  config = fileConfig(
    POOL,
    (raw) => {
      raw.secrets['test-token'] = { file: 'secrets/test-token' };
      // The snapshot test below checks what is stripped from a VM that had a secret: the pools opt in.
      for (const p of raw.pools) p.security = { allowSnapshotWithSecrets: true };
    },
    { parallels: poolOf(DRIVERS[1]) },
  );
  writeFileSync(join(stack().stateDir, 'secrets', 'test-token'), 's3cr3t-VALUE-that-must-not-leak\n');
  const started = await startWorker(config);
  client = started.w.client;
  stopWorker = started.stop;
});

afterAll(async () => {
  await stopWorker?.();
});

const job = (over: Record<string, unknown> = {}) => ({
  id: uniqueId('j'),
  pool: POOL,
  image: SEED_IMAGE,
  script: 'echo hello',
  timeoutSeconds: 120,
  ...over,
});

describe.each(DRIVERS)('job workflow on $hypervisor', (d) => {
  const job = (over: Record<string, unknown> = {}) => ({
    id: uniqueId('j'),
    pool: poolOf(d),
    image: d.image,
    script: 'echo hello',
    timeoutSeconds: 120,
    ...over,
  });

  it('runs a script in a VM, streams and stores its output, and leaves no VM', async () => {
    const spec = job({
      script: 'echo "line 1"; echo "to stderr" >&2; for i in 2 3 4; do echo "line $i"; sleep 0.2; done',
    });
    const handle = await startJob(client, config, spec);
    const result = handle.result();
    const streamed: Buffer[] = [];
    await followLog(
      config,
      { jobId: spec.id, runId: handle.firstExecutionRunId },
      (b) => streamed.push(b),
      result,
      100,
    );
    const r = await result;
    expect(r.state).toBe('succeeded');
    expect(r.exitCode).toBe(0);
    const expected = 'line 1\nto stderr\nline 2\nline 3\nline 4\n';
    expect(Buffer.concat(streamed).toString()).toBe(expected);
    expect(await readJobLog(config, r.log.key)).toBe(expected);
    for (const stage of ['resolve', 'queue', 'fetch', 'boot', 'run', 'cleanup'] as const) {
      expect(r.stages[stage], stage).toBeGreaterThanOrEqual(0);
    }
    expect(leftoverVms(spec.id)).toEqual([]);
    const described = await handle.describe();
    expect(described.searchAttributes.MarinaJobState).toEqual(['succeeded']);
    expect(described.searchAttributes.MarinaHost).toEqual([r.host]);
    // On the pool's hypervisor: its hosts are this driver's.
    expect(config.pools.find((p) => p.name === poolOf(d))!.hosts.map((h) => h.name)).toContain(r.host);
  });

  it("propagates a failing script's exit code", async () => {
    const spec = job({ script: 'echo about to fail; exit 42' });
    const r = await (await startJob(client, config, spec)).result();
    expect(r.state).toBe('failed');
    expect(r.exitCode).toBe(42);
    expect(await readJobLog(config, r.log.key)).toBe('about to fail\n');
    expect(leftoverVms(spec.id)).toEqual([]);
  });

  it('stops the script and cleans the VM when the client cancels mid-run', async () => {
    const marker = join(mkdtempSync(join(tmpdir(), 'marina-cancel-')), 'ticks');
    const spec = job({ script: `while true; do echo tick >> ${marker}; sleep 0.2; done`, timeoutSeconds: 300 });
    const handle = await startJob(client, config, spec);
    await eventually('script running', async () => readFileSync(marker, 'utf8').length > 0);
    expect(vmProcesses(spec.id).length).toBeGreaterThan(0);
    await handle.cancel();
    const err = await handle.result().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    await eventually('VM destroyed', async () => leftoverVms(spec.id).length === 0, 30_000);
    expect(vmProcesses(spec.id)).toEqual([]);
    // The script no longer writes: it was stopped, not orphaned.
    const size = readFileSync(marker, 'utf8').length;
    await new Promise((r) => setTimeout(r, 1000));
    expect(readFileSync(marker, 'utf8').length).toBe(size);
    expect((await handle.describe()).searchAttributes.MarinaJobState).toEqual(['cancelled']);
  });

  it("snapshots a VM into a new image without the job's secrets, a later job boots from it, and no host ever sees an AWS credential", async () => {
    const snap = `ci/snap-${Date.now().toString(36)}:1`;
    // New bytes each run: a chunk another test (the other driver's run) already stored would upload nothing.
    const change = uniqueId('on-disk-change');
    // Every command the hosts run, with its environment and stdin, is recorded from here on.
    const sessions = hostDirs().map((h) => join(h, 'sessions'));
    for (const d of sessions) mkdirSync(d, { recursive: true });
    const first = job({
      // The emulated guest's disk (Tart: the VM's disk.img; Parallels: the bundle's .hds): the job changes one chunk of it.
      script:
        'echo built-by-first-job > "$HOME/artifact.txt"; echo "$TOKEN" > /dev/null; ' +
        `printf ${change} | dd of="$MARINA_EMU_DISK" bs=1 seek=5000000 conv=notrunc 2>/dev/null`,
      secrets: { TOKEN: 'test-token' },
      client: 'ci',
      snapshot: { image: snap },
    });
    const r1 = await (await startJob(client, config, first)).result();
    expect(r1.state).toBe('succeeded');
    expect(r1.snapshot?.image).toBe(snap);
    expect(r1.snapshot?.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(leftoverVms(first.id)).toEqual([]);
    const second = job({
      image: snap,
      // The secret's value is assembled at run time so the spec itself never contains it.
      script: `cat "$HOME/artifact.txt"; dd if="$MARINA_EMU_DISK" bs=1 skip=5000000 count=${change.length} 2>/dev/null; echo; ls "$HOME/.marina/jobs"; if grep -rqF "$(printf 's3cr3t-%s' VALUE)" "$HOME"; then echo LEAKED; else echo clean; fi`,
    });
    const r2 = await (await startJob(client, config, second)).result();
    expect(await readJobLog(config, r2.log.key)).toBe(`built-by-first-job\n${change}\n${second.id}\nclean\n`);
    for (const d of sessions) renameSync(d, `${d}-${snap.replace(/[:/]/g, '-')}`); // recording off

    const recorded = sessions.flatMap((d) =>
      readdirSync(`${d}-${snap.replace(/[:/]/g, '-')}`).map((f) =>
        readFileSync(join(`${d}-${snap.replace(/[:/]/g, '-')}`, f), 'latin1'),
      ),
    );
    const all = recorded.join('\n');
    // What the hosts got: the helper's orders (a pull of the snapshot, the snapshot's push) with presigned URLs.
    const orders = recorded.filter((t) => t.startsWith('{') && /"(ranges|packs)"/.test(t)).map((t) => JSON.parse(t));
    expect(orders.some((o) => o.ranges?.length > 0 && Object.keys(o.urls).length > 0)).toBe(true);
    expect(orders.some((o) => o.packs?.length > 0)).toBe(true);
    const urls = orders
      .flatMap((o) => [
        ...Object.values(o.urls ?? {}),
        ...(o.packs ?? []).map((p: { url: string }) => p.url),
        o.extras?.url,
      ])
      .filter(Boolean)
      .map((u) => new URL(u as string));
    expect(urls.length).toBeGreaterThan(0);
    for (const u of urls) {
      expect(u.pathname).toMatch(/\/v2\/(packs|blobs)\//); // only the objects the transfer needs
      expect(u.searchParams.get('X-Amz-Signature')).toMatch(/^[0-9a-f]{64}$/);
      expect(Number(u.searchParams.get('X-Amz-Expires'))).toBeLessThanOrEqual(6 * 3600);
    }
    // Never a credential: not the secret key, not a session token, not an AWS_ variable.
    const secretKey = readSecret(config, config.imageStore.credentials!.secretAccessKey, 'S3 secret access key');
    expect(all).not.toContain(secretKey);
    expect(all).not.toMatch(/X-Amz-Security-Token|^AWS_/m);
    // Nor in any file on the hosts (their homes, Tart's VMs and image cache): grep finds nothing (exit 1).
    const onDisk = spawnSync(
      'grep',
      ['-rlF', secretKey, ...hostDirs().flatMap((h) => [join(h, 'home'), join(h, 'tart')])],
      {
        encoding: 'utf8',
      },
    );
    expect([onDisk.status, onDisk.stdout]).toEqual([1, '']);
  });

  it('runs 5 jobs on 2 hosts x 2 slots: 4 at once, the 5th waits, then runs', async () => {
    const cfg5 = fileConfig(
      `five${d.suffix}`,
      (raw) => {
        raw.pools[0].hosts = raw.pools[0].hosts.slice(0, 2);
      },
      { hypervisor: d.hypervisor },
    );
    const w = await startWorker(cfg5);
    try {
      const timeline = join(mkdtempSync(join(tmpdir(), 'marina-five-')), 'timeline');
      const specs = Array.from({ length: 5 }, (_, i) => ({
        ...job({ pool: `five${d.suffix}` }),
        id: uniqueId(`five${i}`),
        // A barrier: each job waits (up to 30 s) until 4 have started, so 4 at once is observed, not hoped for.
        script: `echo "start $(date +%s.%N)" >> ${timeline}; for i in $(seq 300); do [ "$(grep -c start ${timeline})" -ge 4 ] && break; sleep 0.1; done; sleep 1; echo "end $(date +%s.%N)" >> ${timeline}`,
      }));
      const handles = [];
      for (const s of specs) handles.push(await startJob(w.w.client, cfg5, s));
      const pool = w.w.client.workflow.getHandle(poolWorkflowId(`five${d.suffix}`));
      const snapshot = await eventually('4 leases and 1 queued', async () => {
        const st = await pool.query(poolStateQuery);
        return st.leases.length === 4 && st.queue.length === 1 ? st : undefined;
      });
      // Two per host: the licence's limit of two macOS VMs per Mac, on either hypervisor.
      for (const host of cfg5.pools[0]!.hosts.map((h) => h.name))
        expect(snapshot.leases.filter((l) => l.host === host)).toHaveLength(2);
      const results = await Promise.all(handles.map((h) => h.result()));
      expect(results.map((r) => r.state)).toEqual(Array(5).fill('succeeded'));
      // Replay the timeline: never more than 4 running, and 5 ran in all.
      const events = readFileSync(timeline, 'utf8')
        .trim()
        .split('\n')
        .map((l) => {
          const [kind, t] = l.split(' ');
          return { kind, t: Number(t) };
        });
      events.sort((a, b) => a.t - b.t);
      let running = 0;
      let peak = 0;
      for (const e of events) {
        running += e.kind === 'start' ? 1 : -1;
        peak = Math.max(peak, running);
      }
      expect(events.filter((e) => e.kind === 'start')).toHaveLength(5);
      expect(peak).toBe(4);
      const st = await pool.query(poolStateQuery);
      expect(st.leases).toEqual([]);
      expect(st.queue).toEqual([]);
    } finally {
      await w.stop();
    }
  });
});
describe('job workflow', () => {
  it('kills a script that exceeds its timeout and reports timed_out', async () => {
    const spec = job({ script: 'echo start; sleep 30; echo never', timeoutSeconds: 2 });
    const r = await (await startJob(client, config, spec)).result();
    expect(r.state).toBe('timed_out');
    expect(r.exitCode).not.toBe(0);
    expect(await readJobLog(config, r.log.key)).toBe('start\n');
    expect(leftoverVms(spec.id)).toEqual([]);
  });

  it('gives the script a secret by reference that never appears in workflow history', async () => {
    const spec = job({
      // The script compares a hash, so the value itself appears nowhere in the job spec either.
      script: `if [ "$(printf %s "$TOKEN" | sha256sum | cut -c1-16)" = "${createHash('sha256').update('s3cr3t-VALUE-that-must-not-leak').digest('hex').slice(0, 16)}" ]; then echo secret-ok; fi; echo "len \${#TOKEN}"; echo "$PLAIN"`,
      secrets: { TOKEN: 'test-token' },
      env: { PLAIN: 'plain value' },
    });
    const handle = await startJob(client, config, spec);
    const r = await handle.result();
    expect(await readJobLog(config, r.log.key)).toBe('secret-ok\nlen 31\nplain value\n');
    const history = decodedHistory(await handle.fetchHistory());
    expect(history).toContain('test-token'); // the reference is there...
    expect(history).not.toContain('s3cr3t-VALUE'); // ...the value is not
    expect(leftoverVms(spec.id)).toEqual([]);
  });

  it('reclaims the lease and reaps the VM of a job that was terminated', async () => {
    const spec = job({ script: 'sleep 120', timeoutSeconds: 300 });
    const handle = await startJob(client, config, spec);
    const pool = client.workflow.getHandle(poolWorkflowId(POOL));
    await eventually('lease granted', async () =>
      (await pool.query(poolStateQuery)).leases.some((l) => l.jobWorkflowId === handle.workflowId),
    );
    await eventually(
      'script running in its VM',
      async () => leftoverVms(spec.id).length === 1 && vmProcesses(spec.id).length > 0,
    );
    await handle.terminate('test: simulate a job killed by an operator');
    await eventually(
      'lease reclaimed',
      async () => !(await pool.query(poolStateQuery)).leases.some((l) => l.jobWorkflowId === handle.workflowId),
      30_000,
    );
    // A terminated workflow runs no cleanup: the pool's health sweep finds the VM no lease owns and deletes it.
    await eventually('orphaned VM reaped', async () => leftoverVms(spec.id).length === 0, 30_000);
    expect(vmProcesses(spec.id)).toEqual([]);
  });
});

/** Every payload in a history, base64-decoded, so a search sees what Temporal stored. */
function decodedHistory(history: unknown): string {
  const parts: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (k === 'data' && typeof x === 'string') parts.push(Buffer.from(x, 'base64').toString('utf8'));
        else walk(x);
      }
    }
  };
  walk(JSON.parse(JSON.stringify(history)));
  return `${JSON.stringify(history)}\n${parts.join('\n')}`;
}

describe('bad job specs are refused with a clear error and leave nothing behind', () => {
  const cases: Array<[string, Record<string, unknown>, string, RegExp]> = [
    ['unknown image', { image: 'no-such-image:1' }, 'image', /unknown image "no-such-image:1".*macos-base:15/],
    ['empty script', { script: '   ' }, 'script', /non-empty/],
    ['negative timeout', { timeoutSeconds: -5 }, 'timeoutSeconds', /positive/],
    ['unknown pool', { pool: 'atlantis' }, 'pool', /unknown pool "atlantis".*jobs/],
    ['resources no host can give', { resources: { vm: 1, cpu: 64 } }, 'resources', /no host offers/],
    ['labels no host has', { labels: { xcode: '99' } }, 'labels', /no host has labels/],
    ['unknown secret', { secrets: { X: 'nope' } }, 'secrets.X', /no secret named "nope"/],
  ];
  for (const [name, over, field, message] of cases) {
    it(name, async () => {
      const spec = job(over);
      const err = (await startJob(client, config, spec).catch((e: unknown) => e)) as JobSpecError;
      expect(err).toBeInstanceOf(JobSpecError);
      const e = err.errors.find((x) => x.field === field);
      expect(e?.message).toMatch(message);
      await expect(client.workflow.getHandle(jobWorkflowId(spec.id)).describe()).rejects.toThrow(/not found/i);
    });
  }

  it('the workflow itself refuses an unknown image without retrying, even if a caller skips the client checks', async () => {
    const spec = await checkJobSpec(config, job(), { checkImage: false });
    const bad = { ...spec, image: 'ghost:1' };
    const handle = await client.workflow.start('jobWorkflow', {
      workflowId: jobWorkflowId(spec.id),
      taskQueue: config.temporal.taskQueue,
      args: [bad],
    });
    const err = (await handle.result().catch((e: unknown) => e)) as WorkflowFailedError;
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const causes: string[] = [];
    for (let c: Error | undefined = err.cause; c; c = (c as { cause?: Error }).cause) causes.push(c.message);
    expect(causes.join(' | ')).toMatch(/unknown image "ghost:1"/);
    // The lookup is a local activity: one marker, attempt 1, and nothing scheduled on the task queue.
    const history = await handle.fetchHistory();
    const attempts = history
      .events!.filter((e) => e.markerRecordedEventAttributes?.markerName === 'core_local_activity')
      .map((e) => {
        const data = e.markerRecordedEventAttributes!.details?.data?.payloads?.[0]?.data;
        return (JSON.parse(Buffer.from(data!).toString('utf8')) as { attempt: number }).attempt;
      });
    expect(attempts).toEqual([1]);
    expect(history.events!.filter((e) => e.activityTaskScheduledEventAttributes)).toEqual([]);
    expect(leftoverVms(spec.id)).toEqual([]);
  });
});

describe('host keys are pinned', () => {
  it('a host-key mismatch fails the job without retry', async () => {
    const s = stack();
    const wrong = join(s.stateDir, 'wrong_known_hosts');
    const keyFile = join(mkdtempSync(join(tmpdir(), 'marina-key-')), 'k');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', keyFile]);
    const realLines = readFileSync(join(s.stateDir, 'known_hosts'), 'utf8').trim().split('\n');
    const [hostPort] = realLines[0]!.split(' ');
    writeFileSync(wrong, `${hostPort} ${readFileSync(`${keyFile}.pub`, 'utf8').split(' ').slice(0, 2).join(' ')}\n`);
    appendFileSync(wrong, '');
    const cfg = fileConfig('badkey', (raw) => {
      raw.pools[0].hosts = raw.pools[0].hosts.slice(0, 1);
      raw.pools[0].ssh.knownHosts = { file: 'wrong_known_hosts' };
    });
    const w = await startWorker(cfg);
    try {
      const spec = { ...job({ pool: 'badkey' }) };
      const handle = await startJob(w.w.client, cfg, spec);
      const err = (await handle.result().catch((e: unknown) => e)) as WorkflowFailedError;
      expect(err).toBeInstanceOf(WorkflowFailedError);
      const cause = err.cause as Error & { cause?: Error & { type?: string } };
      expect(cause.cause?.type ?? (cause as { type?: string }).type).toBe('HostKeyMismatch');
      expect(JSON.stringify(cause.cause?.message ?? cause.message)).toMatch(/HOST KEY MISMATCH/);
      const history = await handle.fetchHistory();
      const ensure = history.events!.filter((e) => e.activityTaskStartedEventAttributes);
      expect(ensure.map((e) => e.activityTaskStartedEventAttributes!.attempt).every((a) => a === 1)).toBe(true);
    } finally {
      await w.stop();
    }
  });
});
