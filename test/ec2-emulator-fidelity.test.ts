/**
 * Conformance, continued: where the emulator used to differ from EC2 (issue 22), checked with the unmodified
 * AWS CLI (a client we did not write) and the SDK. DryRun, missing parameters, malformed ids, unknown
 * NextTokens, the Occupied and not-ready windows, eventual consistency, root-volume failures, and the admin
 * API's input checks.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AllocateHostsCommand,
  DescribeHostsCommand,
  DescribeInstancesCommand,
  EC2Client,
  ReleaseHostsCommand,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type EC2ServiceException,
} from '@aws-sdk/client-ec2';
import { defaultEmulatorOptions, startEc2Emulator, type Ec2Emulator } from '../src/emulator/ec2/server';
import { DEFAULT_EMULATOR_TIMINGS, SEEDED_IMAGES } from '../src/emulator/ec2/cloud';
import { classifyEc2Error } from '../src/ec2mac/errors';

const AMI = SEEDED_IMAGES[0]!.id;
const MIN = 60;
const HOUR = 3600;
const RUNNING = 3 * MIN;

let emu: Ec2Emulator;
let ec2: EC2Client;
/** An AWS config with botocore's client-side checks off: the request goes out as given (EC2 must refuse it). */
let unchecked: string;

beforeAll(async () => {
  emu = await startEc2Emulator(defaultEmulatorOptions());
  ec2 = new EC2Client({
    region: 'us-east-1',
    endpoint: emu.endpoint,
    credentials: { accessKeyId: 'emulator', secretAccessKey: 'emulator' },
    maxAttempts: 1,
  });
  unchecked = join(mkdtempSync(join(tmpdir(), 'marina-awscli-')), 'config');
  writeFileSync(unchecked, '[default]\nparameter_validation = false\n');
});
afterAll(async () => {
  ec2?.destroy();
  await emu?.stop();
});

interface CliResult {
  ok: boolean;
  json?: Record<string, unknown>;
  /** The EC2 error code the CLI printed ("An error occurred (Code) …"). */
  code?: string;
  stderr: string;
}

/** The AWS CLI against the emulator; never throws, so a refusal can be asserted. */
function aws(args: string[], opts: { validate?: boolean } = {}): Promise<CliResult> {
  const env = {
    ...process.env,
    AWS_ACCESS_KEY_ID: 'e',
    AWS_SECRET_ACCESS_KEY: 'e',
    AWS_DEFAULT_REGION: 'us-east-1',
    // One attempt: the CLI's own retries of a 5xx would only slow the test.
    AWS_MAX_ATTEMPTS: '1',
    ...(opts.validate === false ? { AWS_CONFIG_FILE: unchecked } : {}),
  };
  return new Promise((resolve) => {
    execFile(
      'aws',
      ['--endpoint-url', emu.endpoint, '--output', 'json', 'ec2', ...args],
      { env },
      (err, stdout, stderr) => {
        const code = /An error occurred \(([^)]+)\)/.exec(stderr)?.[1];
        resolve({ ok: !err, ...(stdout.trim() ? { json: JSON.parse(stdout) as Record<string, unknown> } : {}), ...(code ? { code } : {}), stderr });
      },
    );
  });
}

async function failure(p: Promise<unknown>): Promise<EC2ServiceException> {
  try {
    await p;
  } catch (e) {
    return e as EC2ServiceException;
  }
  throw new Error('expected the call to fail');
}

async function admin(path: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await fetch(`${emu.endpoint}/_emulator/${path}`, {
    method: 'POST',
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  expect(r.headers.get('content-type')).toBe('application/json');
  return { status: r.status, json: (await r.json()) as Record<string, unknown> };
}

const allocate = async (): Promise<string> =>
  (
    await ec2.send(
      new AllocateHostsCommand({
        InstanceType: 'mac2-m2.metal',
        AvailabilityZone: 'us-east-1a',
        Quantity: 1,
        AutoPlacement: 'off',
      }),
    )
  ).HostIds![0]!;

const launch = async (hostId: string, token: string): Promise<string> =>
  (
    await ec2.send(
      new RunInstancesCommand({
        ImageId: AMI,
        InstanceType: 'mac2-m2.metal',
        MinCount: 1,
        MaxCount: 1,
        ClientToken: token,
        Placement: { Tenancy: 'host', HostId: hostId },
      }),
    )
  ).Instances![0]!.InstanceId!;

const runArgs = (hostId: string): string[] => [
  'run-instances',
  '--image-id',
  AMI,
  '--instance-type',
  'mac2-m2.metal',
  '--placement',
  `Tenancy=host,HostId=${hostId}`,
];

const hostOf = async (id: string) => (await ec2.send(new DescribeHostsCommand({ HostIds: [id] }))).Hosts![0]!;
const stateOf = async (id: string) =>
  (await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }))).Reservations![0]!.Instances![0]!.State!.Name;

describe('DryRun', () => {
  it('answers DryRunOperation (412) when the call would succeed, its real refusal otherwise, UnauthorizedOperation when IAM denies it, and never acts', async () => {
    const host = await allocate();
    const dry = await aws([...runArgs(host), '--dry-run']);
    expect(dry.code).toBe('DryRunOperation');
    // Nothing launched: the host still has its one slot free and no instance.
    expect((await hostOf(host)).AvailableCapacity!.AvailableInstanceCapacity![0]!.AvailableCapacity).toBe(1);
    expect((await hostOf(host)).Instances ?? []).toEqual([]);
    const sdkDry = await failure(
      ec2.send(
        new RunInstancesCommand({
          ImageId: AMI,
          MinCount: 1,
          MaxCount: 1,
          Placement: { Tenancy: 'host', HostId: host },
          DryRun: true,
        }),
      ),
    );
    expect(sdkDry.name).toBe('DryRunOperation');
    expect(sdkDry.$metadata.httpStatusCode).toBe(412);

    const id = await launch(host, 'fid-dry-1');
    emu.clock.advance(RUNNING);
    const [term, busy, unknown] = await Promise.all([
      aws(['terminate-instances', '--instance-ids', id, '--dry-run']),
      aws([...runArgs(host), '--dry-run']),
      aws(['terminate-instances', '--instance-ids', 'i-0ffffffffffffffff', '--dry-run']),
    ]);
    expect(term.code).toBe('DryRunOperation');
    expect(busy.code).toBe('InsufficientCapacityOnHost'); // the real call would fail: so does its dry run
    expect(unknown.code).toBe('InvalidInstanceID.NotFound');
    expect(await stateOf(id)).toBe('running');

    // A caller whose IAM policy lacks the action: UnauthorizedOperation, dry run or not.
    expect((await admin('iam', { deny: ['TerminateInstances'] })).status).toBe(200);
    expect((await aws(['terminate-instances', '--instance-ids', id, '--dry-run'])).code).toBe('UnauthorizedOperation');
    const denied = await failure(ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] })));
    expect(denied.name).toBe('UnauthorizedOperation');
    expect(denied.$metadata.httpStatusCode).toBe(403);
    await admin('iam', { deny: [] });
    expect(await stateOf(id)).toBe('running');
  });
});

describe('request checks', () => {
  it('refuses missing required parameters with MissingParameter (the CLI with and without its own checks)', async () => {
    const results = await Promise.all([
      aws(['release-hosts', '--host-ids', '']),
      aws(['terminate-instances', '--instance-ids', '']),
      aws(['release-hosts', '--cli-input-json', '{}'], { validate: false }),
      aws(['terminate-instances', '--cli-input-json', '{}'], { validate: false }),
    ]);
    expect(results.map((r) => r.code)).toEqual(Array(4).fill('MissingParameter'));
    expect(results[2]!.stderr).toMatch(/must contain the parameter HostId/);
    expect(results[3]!.stderr).toMatch(/must contain the parameter InstanceId/);
  });

  it('answers malformed ids with .Malformed, and a NextToken it never issued with InvalidParameterValue', async () => {
    const [host, instance, terminate, token] = await Promise.all([
      aws(['describe-hosts', '--host-ids', 'h-123']),
      aws(['describe-instances', '--instance-ids', 'i-xyz']),
      aws(['terminate-instances', '--instance-ids', 'web-1']),
      aws(['describe-hosts', '--next-token', 'bm90LWEtdG9rZW4']),
    ]);
    expect(host.code).toBe('InvalidHostId.Malformed');
    expect(instance.code).toBe('InvalidInstanceID.Malformed');
    expect(terminate.code).toBe('InvalidInstanceID.Malformed');
    expect(token.code).toBe('InvalidParameterValue');
    expect(token.stderr).toMatch(/NextToken is invalid/);
    // Marina takes a malformed id as final: no retry sends it well-formed.
    for (const c of ['InvalidHostId.Malformed', 'InvalidHostID.Malformed', 'InvalidInstanceID.Malformed'])
      expect(classifyEc2Error(c)).toBe('fatal');
    // A well-formed id that does not exist is still NotFound.
    expect((await failure(ec2.send(new DescribeHostsCommand({ HostIds: ['h-0ffffffffffffffff'] })))).name).toBe(
      'InvalidHostID.NotFound',
    );
  });
});

describe('windows', () => {
  it('refuses a release as Occupied for 20 min after a terminate, scrubbing or not; the window is configurable', async () => {
    const host = await allocate();
    emu.clock.advance(24 * HOUR);
    const id = await launch(host, 'fid-occ-1');
    emu.clock.advance(RUNNING);
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    emu.clock.advance(16 * MIN); // stopped (15 min): the host scrubs
    expect((await hostOf(host)).State).toBe('pending');
    const refused = await aws(['release-hosts', '--host-ids', host]);
    expect(refused.json).toMatchObject({
      Successful: [],
      Unsuccessful: [{ ResourceId: host, Error: { Code: 'Client.InvalidHost.Occupied' } }],
    });
    emu.clock.advance(5 * MIN); // 21 min after the terminate
    expect((await aws(['release-hosts', '--host-ids', host])).json).toMatchObject({ Successful: [host] });

    // Configured longer (the Image Builder kit says Occupied lasts until the scrub ends): 2 h.
    const t = await admin('timings', { occupiedSeconds: 2 * HOUR });
    expect(t.json.occupiedSeconds).toBe(2 * HOUR);
    const other = await allocate();
    emu.clock.advance(24 * HOUR);
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [await launch(other, 'fid-occ-2')] }));
    emu.clock.advance(HOUR);
    const r = await ec2.send(new ReleaseHostsCommand({ HostIds: [other] }));
    expect(r.Unsuccessful![0]!.Error!.Code).toBe('Client.InvalidHost.Occupied');
    emu.clock.advance(HOUR + MIN);
    expect((await ec2.send(new ReleaseHostsCommand({ HostIds: [other] }))).Successful).toEqual([other]);
    await admin('timings', { occupiedSeconds: DEFAULT_EMULATOR_TIMINGS.occupiedSeconds });
  });

  it('lists a scrubbed host available while launches still fail for the settle window (5 min by default)', async () => {
    await admin('timings', { scrubSeconds: [HOUR, HOUR] });
    const host = await allocate();
    const id = await launch(host, 'fid-settle-1');
    emu.clock.advance(RUNNING);
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    emu.clock.advance(15 * MIN + HOUR + MIN); // stopped, scrubbed, 1 min into settling
    const listed = await aws(['describe-hosts', '--host-ids', host]);
    expect(listed.json).toMatchObject({ Hosts: [{ HostId: host, State: 'available' }] });
    expect((await aws(runArgs(host))).code).toBe('InsufficientCapacityOnHost');
    emu.clock.advance(5 * MIN);
    const ran = await aws(runArgs(host));
    expect(ran.ok).toBe(true);
    expect(ran.json).toMatchObject({ Instances: [{ Placement: { HostId: host } }] });
    await admin('timings', { scrubSeconds: DEFAULT_EMULATOR_TIMINGS.scrubSeconds });
  });
});

describe('eventual consistency', () => {
  it('is off by default; when on, a new host or instance id is NotFound to other calls until it propagates', async () => {
    expect((await admin('consistency', {})).json).toEqual({ hostMs: 0, instanceMs: 0 });
    // Longer than any CLI call takes here, so the refusals below are certain; then propagation is let finish.
    await admin('consistency', { hostMs: 600_000, instanceMs: 600_000 });
    const allocated = await aws([
      'allocate-hosts',
      '--instance-type',
      'mac2-m2.metal',
      '--availability-zone',
      'us-east-1a',
      '--quantity',
      '1',
    ]);
    const host = (allocated.json!.HostIds as string[])[0]!;
    const [described, listed] = await Promise.all([
      aws(['describe-hosts', '--host-ids', host]),
      aws(['describe-hosts', '--filter', 'Name=state,Values=available']),
    ]);
    expect(described.code).toBe('InvalidHostID.NotFound');
    expect((listed.json!.Hosts as { HostId: string }[]).map((h) => h.HostId)).not.toContain(host);
    await admin('consistency', { hostMs: 0 });
    expect((await hostOf(host)).State).toBe('available');

    const id = await launch(host, 'fid-ec-1');
    const [seen, terminated] = await Promise.all([
      aws(['describe-instances', '--instance-ids', id]),
      aws(['terminate-instances', '--instance-ids', id]),
    ]);
    expect(seen.code).toBe('InvalidInstanceID.NotFound');
    expect(terminated.code).toBe('InvalidInstanceID.NotFound');
    await admin('consistency', { instanceMs: 0 });
    expect(await stateOf(id)).toBe('pending'); // the terminate that was not found did nothing
  });
});

describe('root-volume replacement', () => {
  it('fails when told to: the task ends failed and the instance runs on its original root volume', async () => {
    const host = await allocate();
    const id = await launch(host, 'fid-rrv-1');
    emu.clock.advance(RUNNING);
    expect((await admin('root-volume', { failNext: 1 })).json).toEqual({ failNext: 1 });
    const created = await aws(['create-replace-root-volume-task', '--instance-id', id, '--image-id', AMI]);
    const taskId = (created.json!.ReplaceRootVolumeTask as { ReplaceRootVolumeTaskId: string }).ReplaceRootVolumeTaskId;
    emu.clock.advance(16 * MIN);
    const d = await aws(['describe-replace-root-volume-tasks', '--replace-root-volume-task-ids', taskId]);
    expect(d.json).toMatchObject({ ReplaceRootVolumeTasks: [{ ReplaceRootVolumeTaskId: taskId, TaskState: 'failed' }] });
    expect(await stateOf(id)).toBe('running');
    // The old disk: the instance's SSH server comes back with its first root volume (generation 0).
    expect(emu.cloud.instances.get(id)!.generation).toBe(0);
    expect((await admin('root-volume', {})).json).toEqual({ failNext: 0 });
  });
});

describe('the admin API checks its input', () => {
  it('refuses a negative clock advance, a health state AWS does not have, unknown fields and bad JSON: JSON 400 naming the problem', async () => {
    const host = await allocate();
    const back = await admin('clock', { advanceSeconds: -60 });
    expect(back.status).toBe(400);
    expect(back.json.error).toMatch(/advanceSeconds must be a number of seconds ≥ 0/);
    expect((await admin('clock', { speed: 0 })).status).toBe(400);
    const banana = await admin(`hosts/${host}/health`, { state: 'banana' });
    expect(banana.status).toBe(400);
    expect(banana.json.error).toMatch(/state must be one of available, under-assessment, permanent-failure.*"banana"/);
    const bad = await admin('faults', '{"throttleRate": 0.3,');
    expect(bad.status).toBe(400);
    expect(bad.json.error).toMatch(/not JSON/);
    const typo = await admin('faults', { throttleRatio: 0.3 });
    expect(typo.status).toBe(400);
    expect(typo.json.error).toMatch(/unknown field\(s\) throttleRatio/);
    expect((await admin('faults', { throttleRate: 2 })).json.error).toMatch(/throttleRate must be a share between 0 and 1/);
    expect((await admin('timings', { settleSeconds: -1 })).status).toBe(400);
    expect((await admin('hosts/h-0ffffffffffffffff/health', { state: 'available' })).status).toBe(404);
    // The good ones still work.
    expect((await admin(`hosts/${host}/health`, { state: 'under-assessment' })).status).toBe(200);
    expect((await hostOf(host)).State).toBe('under-assessment');
  });
});
