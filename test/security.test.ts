/**
 * Security: each test is the attack it stops (README, "Threat model"). On the real stack: dev server,
 * S3, emulated hosts and VMs over SSH.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { WorkflowFailedError, type Client } from '@temporalio/client';
import { checkJobSpec, followLog, startJob } from '../src/client/jobs';
import { JobSpecError, jobWorkflowId, normalizeJobSpec } from '../src/domain/job';
import { s3ClientFor } from '../src/config/s3';
import { ChunkedStore } from '../src/images/chunked/store';
import type { LoadedConfig } from '../src/config/load';
import { buildSeedImage, publicKeyOf, SEED_IMAGE } from '../src/emulator/seed-image';
import { pushVmArchive } from '../src/images/chunked/vm-files';
import { parseVmHostKey } from '../src/images/vm-host-key';
import { ActivityContext } from '../activities/context';
import { runActivities } from '../activities/run';
import { vmActivities } from '../activities/vm';
import { snapshotActivities } from '../activities/snapshot';
import { fileConfig, hostDirs, leftoverVms, readJobLog, stack, startWorker, uniqueId } from './helpers';

const POOL = 'security';
// The refusals below are expected: keep their stack traces out of the test output.
const quiet = { logger: new DefaultLogger('ERROR', () => undefined) };
const SECRET = 'hunter2-PRINTED-by-the-script';
let config: LoadedConfig;
let client: Client;
let stopWorker: () => Promise<void>;

beforeAll(async () => {
  config = fileConfig(POOL, (raw) => {
    raw.secrets['printed-token'] = { file: 'secrets/printed-token' };
  });
  writeFileSync(join(stack().stateDir, 'secrets', 'printed-token'), `${SECRET}\n`);
  const started = await startWorker(config);
  client = started.w.client;
  stopWorker = started.stop;
});

afterAll(async () => {
  await stopWorker?.();
});

const job = (over: Record<string, unknown> = {}) => ({
  id: uniqueId('sec'),
  pool: POOL,
  image: SEED_IMAGE,
  script: 'echo hello',
  timeoutSeconds: 120,
  ...over,
});

describe('a secret the script prints', () => {
  it('appears as *** in the streamed and the stored log, even cut across output writes', async () => {
    const spec = job({
      // Printed whole, then in two writes a moment apart (so they reach the log in two reads), then twice on a line.
      script:
        'echo "token: $TOKEN"; printf "split: %s" "${TOKEN:0:7}"; sleep 0.7; printf "%s\\n" "${TOKEN:7}"; echo "$TOKEN$TOKEN end"',
      secrets: { TOKEN: 'printed-token' },
    });
    const handle = await startJob(client, config, spec);
    const streamed: Buffer[] = [];
    await followLog(
      config,
      { jobId: spec.id, runId: handle.firstExecutionRunId },
      (b) => streamed.push(b),
      handle.result(),
      100,
    );
    const r = await handle.result();
    const expected = 'token: ***\nsplit: ***\n****** end\n';
    expect(await readJobLog(config, r.log.key)).toBe(expected);
    expect(Buffer.concat(streamed).toString()).toBe(expected);
    expect(leftoverVms(spec.id)).toEqual([]);
  });
});

describe('a VM is trusted only with the host key its image records', () => {
  const vmLog = (jobId: string) =>
    hostDirs()
      .map((h) => join(h, 'home', '.marina', 'vms', `marina-${jobId}.log`))
      .filter(existsSync)
      .map((f) => readFileSync(f, 'utf8'))
      .join('');

  it('an impostor VM answering with another key fails the job with HostKeyMismatch, and nothing logs in to it', async () => {
    // The impostor: a guest with its own key, where the version records another (the real VM's) key.
    const dir = mkdtempSync(join(tmpdir(), 'marina-impostor-'));
    const archive = join(dir, 'vm.tgz');
    buildSeedImage(archive, publicKeyOf(join(stack().stateDir, 'keys', 'vm_ed25519')));
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'real')]);
    const ref = `impostor-${Date.now().toString(36)}:1`;
    const s3 = s3ClientFor(config, config.imageStore);
    try {
      await pushVmArchive(new ChunkedStore(s3, config.imageStore), ref, archive, {
        vmHostKey: parseVmHostKey(readFileSync(join(dir, 'real.pub'), 'utf8')),
      });
    } finally {
      s3.destroy();
    }
    const witness = join(stack().stateDir, `impostor-ran-${Date.now()}`);
    const spec = job({ image: ref, script: `touch ${witness}` });
    const handle = await startJob(client, config, spec);
    const err = (await handle.result().catch((e: unknown) => e)) as WorkflowFailedError;
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const cause = err.cause?.cause as Error & { type?: string };
    expect(cause.type).toBe('HostKeyMismatch');
    expect(cause.message).toMatch(/HOST KEY MISMATCH for vm marina-/);
    // The boot was tried once (no retry can fix a wrong key), and the impostor saw no login, let alone a script.
    const events = (await handle.fetchHistory()).events!;
    expect(events.some((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'bootVm')).toBe(true);
    const attempts = events.filter((e) => e.activityTaskStartedEventAttributes);
    expect(attempts.map((e) => e.activityTaskStartedEventAttributes!.attempt).every((a) => a === 1)).toBe(true);
    const log = vmLog(spec.id);
    expect(log).toMatch(/Connection from .* on 127\.77\./); // the witness is live: it saw the connection...
    expect(log).not.toMatch(/Accepted publickey/); // ...and no login
    expect(existsSync(witness)).toBe(false);
    expect(leftoverVms(spec.id)).toEqual([]);
  });

  it('an image that records no key is refused before any VM boots, and VM passwords are refused in config', async () => {
    const ref = `keyless-${Date.now().toString(36)}:1`;
    const dir = mkdtempSync(join(tmpdir(), 'marina-keyless-'));
    buildSeedImage(join(dir, 'vm.tgz'), publicKeyOf(join(stack().stateDir, 'keys', 'vm_ed25519')));
    const s3 = s3ClientFor(config, config.imageStore);
    try {
      await pushVmArchive(new ChunkedStore(s3, config.imageStore), ref, join(dir, 'vm.tgz'));
    } finally {
      s3.destroy();
    }
    const spec = job({ image: ref });
    const err = (await (await startJob(client, config, spec)).result().catch((e: unknown) => e)) as WorkflowFailedError;
    expect((err.cause?.cause as { type?: string }).type).toBe('VmHostKeyUnknown');
    expect(String((err.cause?.cause as Error).message)).toMatch(/push the image again with --vm-host-key/);
    expect(vmLog(spec.id)).toBe(''); // never started
    expect(() =>
      fileConfig('security-password', (raw) => {
        raw.pools[0].vm.password = { env: 'VM_PASSWORD' };
      }),
    ).toThrow(/pools\.0\.vm\.password.*removed.*vm\.privateKey/s);
  });

  it("a softnet pool boots its VMs with Tart's --net-softnet", async () => {
    const cfg = fileConfig('security-softnet', (raw) => {
      raw.pools[0].vm.network = 'softnet';
    });
    const w = await startWorker(cfg);
    try {
      const spec = { ...job({ script: 'cat "$MARINA_EMU_VM/args"' }), pool: 'security-softnet' };
      const r = await (await startJob(w.w.client, cfg, spec)).result();
      expect((await readJobLog(cfg, r.log.key)).split('\n')).toContain('--net-softnet');
    } finally {
      await w.stop();
    }
  });

  it('the genuine VM of the same job shape logs in (the witness above can see a login)', async () => {
    const spec = job({ script: 'echo genuine' });
    const r = await (await startJob(client, config, spec)).result();
    expect(r.state).toBe('succeeded');
    expect(vmLog(spec.id)).toMatch(/Accepted publickey for/);
  });
});

describe('a snapshot cannot poison an image other jobs boot', () => {
  const tagDigest = async (ref: string) => {
    const s3 = s3ClientFor(config, config.imageStore);
    try {
      return (await new ChunkedStore(s3, config.imageStore).resolve(ref))?.digest;
    } finally {
      s3.destroy();
    }
  };
  /** Starts the job workflow as a CI system could, skipping every client-side check. */
  const startDirectly = (spec: ReturnType<typeof job>) =>
    client.workflow.start('jobWorkflow', {
      workflowId: jobWorkflowId(spec.id),
      taskQueue: config.temporal.taskQueue,
      args: [normalizeJobSpec(spec)],
    });
  const refusal = async (spec: ReturnType<typeof job>) => {
    const err = (await (await startDirectly(spec)).result().catch((e: unknown) => e)) as WorkflowFailedError;
    expect(err).toBeInstanceOf(WorkflowFailedError);
    return String(err.cause?.message);
  };

  it('a pull-request job that tries to overwrite macos-base:15 is refused by the client and by the pool', async () => {
    const before = await tagDigest(SEED_IMAGE);
    expect(before).toMatch(/^sha256:/);
    const witness = join(stack().stateDir, `ran-${Date.now()}`);
    const attack = job({ client: 'pr-bot', script: `touch ${witness}`, snapshot: { image: SEED_IMAGE } });
    const err = (await checkJobSpec(config, attack).catch((e: unknown) => e)) as JobSpecError;
    expect(err).toBeInstanceOf(JobSpecError);
    expect(err.errors).toEqual([
      { field: 'snapshot.image', message: expect.stringMatching(/outside client pr-bot's images/) },
    ]);
    expect(await refusal(attack)).toMatch(
      /refused by pool "security": snapshot "macos-base:15" is outside client pr-bot/,
    );
    expect(existsSync(witness)).toBe(false); // the script never ran
    expect(await tagDigest(SEED_IMAGE)).toBe(before);
  });

  it('a snapshot of a job that received a secret is refused by default', async () => {
    const spec = job({
      client: 'pr-bot',
      secrets: { TOKEN: 'printed-token' },
      script: 'echo "machine github.com password $TOKEN" > ~/.netrc',
      snapshot: { image: 'pr-bot/cache:1' },
    });
    const err = (await checkJobSpec(config, spec).catch((e: unknown) => e)) as JobSpecError;
    expect(err.errors[0]).toMatchObject({
      field: 'snapshot.image',
      message: expect.stringMatching(/receives secrets \(TOKEN\)/),
    });
    expect(await refusal(spec)).toMatch(/allowSnapshotWithSecrets/);
    expect(await tagDigest('pr-bot/cache:1')).toBeUndefined();
  });
});

describe('activities refuse crafted inputs themselves', () => {
  // A caller that skips the workflow's checks (a forged workflow on the task queue, a bug) calls the activity
  // directly. The hosts record every command they are sent: nothing may reach them.
  const sessions = () => hostDirs().map((h) => join(h, 'sessions'));
  const recorded = () =>
    sessions().flatMap((d) => (existsSync(d) ? readdirSync(d).map((f) => readFileSync(join(d, f), 'latin1')) : []));
  const witness = () => hostDirs().map((h) => join(h, 'home', 'pwned'));
  let ctx: ActivityContext;
  beforeAll(() => {
    ctx = new ActivityContext(config, client);
    for (const d of sessions()) mkdirSync(d, { recursive: true });
  });
  afterAll(async () => {
    for (const d of sessions()) rmSync(d, { recursive: true, force: true });
    await ctx.close();
  });
  const host = () => config.pools.find((p) => p.name === POOL)!.hosts[0]!.name;
  const image = { ref: SEED_IMAGE, digest: `sha256:${'a'.repeat(64)}`, size: 1, dataBytes: 1 };

  const attacks: Array<[string, () => Promise<unknown>]> = [
    [
      'a VM name with a command substitution, to boot',
      () =>
        new MockActivityEnvironment(undefined, quiet).run(
          vmActivities(ctx).bootVm,
          { pool: POOL, host: host(), vm: 'marina-$(touch${IFS}pwned)', jobId: 'x' },
          image,
          {},
        ),
    ],
    [
      'an image digest that climbs out of the cache, to boot',
      () =>
        new MockActivityEnvironment(undefined, quiet).run(
          vmActivities(ctx).bootVm,
          { pool: POOL, host: host(), vm: 'marina-ok', jobId: 'ok' },
          { ...image, digest: 'sha256:../../../tmp/x' },
          {},
        ),
    ],
    [
      'a job id with a quote and a command, to run',
      () =>
        new MockActivityEnvironment(undefined, quiet).run(
          runActivities(ctx).runScript,
          { pool: POOL, host: host(), vm: 'marina-ok', jobId: 'ok', ip: '127.0.0.1' },
          {
            id: `ok"; touch pwned; echo "`,
            script: 'true',
            env: {},
            secrets: {},
            timeoutSeconds: 10,
          },
        ),
    ],
    [
      'an environment variable name that is a command, to run',
      () =>
        new MockActivityEnvironment(undefined, quiet).run(
          runActivities(ctx).runScript,
          { pool: POOL, host: host(), vm: 'marina-ok', jobId: 'ok', ip: '127.0.0.1' },
          { id: 'ok', script: 'true', env: { 'X=1; touch pwned; Y': '1' }, secrets: {}, timeoutSeconds: 10 },
        ),
    ],
    [
      'a VM name with a semicolon, to destroy',
      () =>
        new MockActivityEnvironment(undefined, quiet).run(vmActivities(ctx).destroyVm, {
          pool: POOL,
          host: host(),
          vm: 'marina-x; touch pwned',
          jobId: 'x',
        }),
    ],
  ];
  it('refuses a snapshot over a base image when called directly, with or without who asks, before touching a host', async () => {
    const before = recorded().length;
    const target = { pool: POOL, host: host(), vm: 'marina-ok', jobId: 'ok', ip: '127.0.0.1' };
    const snap = snapshotActivities(ctx).snapshotVm;
    for (const requester of [{ client: 'pr-bot', secrets: [] }, undefined]) {
      const err = await new MockActivityEnvironment(undefined, quiet)
        .run(snap, target, SEED_IMAGE, requester)
        .catch((e: unknown) => e);
      expect(err).toMatchObject({ type: 'SnapshotRefused', nonRetryable: true });
    }
    // An older caller that does not say who asks is judged as a job with secrets, even for its own namespace.
    const own = await new MockActivityEnvironment(undefined, quiet)
      .run(snap, target, 'pr-bot/cache:1', undefined)
      .catch((e: unknown) => e);
    expect(String((own as Error).message)).toMatch(/receives secrets/);
    expect(recorded().length).toBe(before);
  });

  for (const [name, attack] of attacks) {
    it(`refuses ${name}, sending nothing to any host`, async () => {
      const before = recorded().length;
      const err = (await attack().catch((e: unknown) => e)) as { type?: string; nonRetryable?: boolean };
      expect(err).toMatchObject({ type: 'InvalidActivityInput', nonRetryable: true });
      expect(recorded().length).toBe(before);
      expect(witness().filter(existsSync)).toEqual([]);
    });
  }
});
