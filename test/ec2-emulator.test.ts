/**
 * Conformance: the unmodified @aws-sdk/client-ec2 (and the AWS CLI, a client we did not
 * write) against Marina's EC2 Mac emulator, for every action and error path it serves.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import {
  AllocateHostsCommand,
  CreateImageCommand,
  CreateReplaceRootVolumeTaskCommand,
  CreateTagsCommand,
  DescribeAvailabilityZonesCommand,
  DescribeHostsCommand,
  DescribeImagesCommand,
  DescribeInstancesCommand,
  DescribeInstanceTypesCommand,
  DescribeReplaceRootVolumeTasksCommand,
  EC2Client,
  GetConsoleOutputCommand,
  ModifyHostsCommand,
  ReleaseHostsCommand,
  RunInstancesCommand,
  StartInstancesCommand,
  StopInstancesCommand,
  TerminateInstancesCommand,
  paginateDescribeHosts,
  paginateDescribeInstances,
  type EC2ServiceException,
} from '@aws-sdk/client-ec2';
import { defaultEmulatorOptions, startEc2Emulator, type Ec2Emulator } from '../src/emulator/ec2/server';
import { SEEDED_IMAGES } from '../src/emulator/ec2/cloud';
import { classifyEc2Error } from '../src/ec2mac/errors';
import { clientToken, METADATA_OPTIONS } from '../activities/ec2';
import { HOST_KEY_USER_DATA, KEYS_BEGIN } from '../src/ec2mac/console-host-keys';

const AMI = SEEDED_IMAGES[0]!.id;
const X86_AMI = SEEDED_IMAGES[2]!.id;
const HOUR = 3600;

let emu: Ec2Emulator;
let ec2: EC2Client;

beforeAll(async () => {
  const o = defaultEmulatorOptions();
  o.cloud.zones = [
    { name: 'us-east-1a', id: 'use1-az6', capacity: 3 },
    { name: 'us-east-1b', id: 'use1-az4', capacity: 10 },
  ];
  o.cloud.quotaPerFamily = 8;
  emu = await startEc2Emulator(o);
  ec2 = new EC2Client({
    region: 'us-east-1',
    endpoint: emu.endpoint,
    credentials: { accessKeyId: 'emulator', secretAccessKey: 'emulator' },
    maxAttempts: 1,
  });
});
afterAll(async () => {
  ec2?.destroy();
  await emu?.stop();
});

async function failure(p: Promise<unknown>): Promise<EC2ServiceException> {
  try {
    await p;
  } catch (e) {
    return e as EC2ServiceException;
  }
  throw new Error('expected the call to fail');
}

const allocate = async (token?: string, zone = 'us-east-1b', tags: Record<string, string> = { pool: 'conformance' }) =>
  (
    await ec2.send(
      new AllocateHostsCommand({
        InstanceType: 'mac2-m2.metal',
        AvailabilityZone: zone,
        Quantity: 1,
        AutoPlacement: 'off',
        HostRecovery: 'off',
        HostMaintenance: 'off',
        ...(token ? { ClientToken: token } : {}),
        TagSpecifications: [
          { ResourceType: 'dedicated-host', Tags: Object.entries(tags).map(([Key, Value]) => ({ Key, Value })) },
        ],
      }),
    )
  ).HostIds![0]!;

const launch = (hostId: string, token: string, image = AMI) =>
  ec2.send(
    new RunInstancesCommand({
      ImageId: image,
      InstanceType: 'mac2-m2.metal',
      MinCount: 1,
      MaxCount: 1,
      ClientToken: token,
      Placement: { Tenancy: 'host', HostId: hostId, Affinity: 'host' },
      TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'marina:workflow', Value: `host/${token}` }] }],
    }),
  );

describe('dedicated hosts', () => {
  it('allocates, describes with filters and tags, and honours ClientToken', async () => {
    const id = await allocate('conf-alloc-1');
    expect(id).toMatch(/^h-0[0-9a-f]{16}$/);
    // Same token, same parameters: the same host, nothing new.
    expect(await allocate('conf-alloc-1')).toBe(id);
    const err = await failure(allocate('conf-alloc-1', 'us-east-1a'));
    expect(err.name).toBe('IdempotentParameterMismatch');
    expect(err.$metadata.httpStatusCode).toBe(400);

    const d = await ec2.send(
      new DescribeHostsCommand({
        Filter: [
          { Name: 'state', Values: ['available', 'pending'] },
          { Name: 'tag:pool', Values: ['conformance'] },
          { Name: 'client-token', Values: ['conf-alloc-1'] },
        ],
      }),
    );
    expect(d.Hosts).toHaveLength(1);
    const h = d.Hosts![0]!;
    expect(h).toMatchObject({
      HostId: id,
      State: 'available',
      AvailabilityZone: 'us-east-1b',
      AutoPlacement: 'off',
      ClientToken: 'conf-alloc-1',
      HostProperties: { InstanceType: 'mac2-m2.metal', TotalVCpus: 8 },
      AvailableCapacity: {
        AvailableInstanceCapacity: [{ AvailableCapacity: 1, InstanceType: 'mac2-m2.metal', TotalCapacity: 1 }],
      },
      Tags: [{ Key: 'pool', Value: 'conformance' }],
    });
    expect(h.AllocationTime).toBeInstanceOf(Date);
    expect(d.$metadata.requestId).toMatch(/^[0-9a-f-]{36}$/);

    await ec2.send(new ModifyHostsCommand({ HostIds: [id], AutoPlacement: 'on' }));
    await ec2.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: 'owner', Value: 'marina' }] }));
    const again = await ec2.send(new DescribeHostsCommand({ HostIds: [id] }));
    expect(again.Hosts![0]!.AutoPlacement).toBe('on');
    expect(again.Hosts![0]!.Tags).toContainEqual({ Key: 'owner', Value: 'marina' });
  });

  it('refuses a release before 24 h per host in Unsuccessful, and releases after', async () => {
    const id = await allocate();
    const r = await ec2.send(new ReleaseHostsCommand({ HostIds: [id, 'h-00000000000000000'] }));
    expect(r.Successful).toEqual([]);
    expect(r.$metadata.httpStatusCode).toBe(200);
    const young = r.Unsuccessful!.find((u) => u.ResourceId === id)!;
    expect(young.Error!.Code).toBe('Client.HostMinAllocationPeriodUnexpired');
    expect(young.Error!.Message).toMatch(
      /must be allocated to your AWS account for at least 24 hour\(s\)\. You can release this host any time after \d{4}-\d\d-\d\dT[\d:.]+Z\./,
    );
    expect(r.Unsuccessful!.find((u) => u.ResourceId === 'h-00000000000000000')!.Error!.Code).toBe(
      'Client.InvalidHostID.NotFound',
    );

    emu.clock.advance(24 * HOUR);
    const ok = await ec2.send(new ReleaseHostsCommand({ HostIds: [id] }));
    expect(ok.Successful).toEqual([id]);
    // A released host stays listed, with its release time.
    const d = await ec2.send(new DescribeHostsCommand({ HostIds: [id] }));
    expect(d.Hosts![0]).toMatchObject({ State: 'released' });
    expect(d.Hosts![0]!.ReleaseTime).toBeInstanceOf(Date);
  });

  it('answers capacity, quota, unknown host and bad zone with the real codes', async () => {
    // us-east-1a holds 3 hosts.
    for (let i = 0; i < 3; i++) await allocate(undefined, 'us-east-1a');
    const full = await failure(allocate(undefined, 'us-east-1a'));
    expect(full.name).toBe('InsufficientHostCapacity');
    expect(full.$fault).toBe('server');
    expect(full.$metadata.httpStatusCode).toBe(500);
    // The family quota is 8; scrubbing and young hosts count, released ones do not.
    const held = (
      await ec2.send(new DescribeHostsCommand({ Filter: [{ Name: 'state', Values: ['available', 'pending'] }] }))
    ).Hosts!.length;
    for (let i = held; i < 8; i++) await allocate();
    expect((await failure(allocate())).name).toBe('HostLimitExceeded');
    expect((await failure(ec2.send(new DescribeHostsCommand({ HostIds: ['h-0ffffffffffffffff'] })))).name).toBe(
      'InvalidHostID.NotFound',
    );
    expect((await failure(allocate(undefined, 'mars-1a'))).name).toBe('InvalidParameterValue');
    // Make room for the next tests: everything here is over 24 h old after this advance.
    emu.clock.advance(24 * HOUR);
    const all = (await ec2.send(new DescribeHostsCommand({ Filter: [{ Name: 'state', Values: ['available'] }] })))
      .Hosts!;
    const r = await ec2.send(new ReleaseHostsCommand({ HostIds: all.map((h) => h.HostId!) }));
    expect(r.Unsuccessful).toEqual([]);
  });
});

describe('instances on a Mac host', () => {
  it('launches one instance per host, idempotently, and describes it', async () => {
    const host = await allocate();
    const run = await launch(host, 'conf-run-1');
    const inst = run.Instances![0]!;
    expect(inst).toMatchObject({
      ImageId: AMI,
      InstanceType: 'mac2-m2.metal',
      State: { Code: 0, Name: 'pending' },
      ClientToken: 'conf-run-1',
    });
    expect(inst.Placement).toMatchObject({ HostId: host, Tenancy: 'host' });
    // The same token and parameters give the same instance.
    expect((await launch(host, 'conf-run-1')).Instances![0]!.InstanceId).toBe(inst.InstanceId);
    // A second instance on the same host: the host has no capacity.
    const busy = await failure(launch(host, 'conf-run-2'));
    expect(busy.name).toBe('InsufficientCapacityOnHost');
    expect(busy.$metadata.httpStatusCode).toBe(400);
    // The same token with other parameters.
    expect((await failure(launch(host, 'conf-run-1', X86_AMI))).name).toBe('IdempotentParameterMismatch');

    emu.clock.advance(DEFAULT_RUNNING);
    const d = await ec2.send(
      new DescribeInstancesCommand({
        Filters: [
          { Name: 'host-id', Values: [host] },
          { Name: 'instance-state-name', Values: ['pending', 'running'] },
          { Name: 'tag:marina:workflow', Values: ['host/conf-run-1'] },
        ],
      }),
    );
    expect(d.Reservations).toHaveLength(1);
    expect(d.Reservations![0]!.Instances![0]).toMatchObject({
      InstanceId: inst.InstanceId,
      State: { Code: 16, Name: 'running' },
    });
    const h = (await ec2.send(new DescribeHostsCommand({ HostIds: [host] }))).Hosts![0]!;
    expect(h.Instances).toEqual([
      { InstanceId: inst.InstanceId, InstanceType: 'mac2-m2.metal', OwnerId: '123456789012' },
    ]);
    expect(h.AvailableCapacity!.AvailableInstanceCapacity![0]!.AvailableCapacity).toBe(0);
  });

  it('refuses bad launches: unknown AMI, wrong architecture, no host tenancy, unknown host', async () => {
    const host = await allocate();
    expect((await failure(launch(host, 'conf-bad-1', 'ami-0000000000000000'))).name).toBe('InvalidAMIID.NotFound');
    expect((await failure(launch(host, 'conf-bad-2', X86_AMI))).name).toBe('InvalidParameterValue');
    expect((await failure(launch('h-0aaaaaaaaaaaaaaaa', 'conf-bad-3'))).name).toBe('InvalidHostID.NotFound');
    const shared = await failure(
      ec2.send(new RunInstancesCommand({ ImageId: AMI, InstanceType: 'mac2-m2.metal', MinCount: 1, MaxCount: 1 })),
    );
    expect(shared.name).toBe('InvalidParameterValue');
    // Untargeted host tenancy with no auto-placement host: no capacity.
    const untargeted = await failure(
      ec2.send(
        new RunInstancesCommand({
          ImageId: AMI,
          InstanceType: 'mac2-m2.metal',
          MinCount: 1,
          MaxCount: 1,
          Placement: { Tenancy: 'host' },
        }),
      ),
    );
    expect(untargeted.name).toBe('InsufficientHostCapacity');
  });

  it('terminates: the host scrubs (pending), then is available; the old token reports the instance terminated', async () => {
    const host = await allocate();
    const id = (await launch(host, 'conf-term-1')).Instances![0]!.InstanceId!;
    emu.clock.advance(DEFAULT_RUNNING);
    const t = await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    expect(t.TerminatingInstances![0]).toMatchObject({
      CurrentState: { Code: 32, Name: 'shutting-down' },
      PreviousState: { Code: 16, Name: 'running' },
    });
    emu.clock.advance(16 * 60); // the instance stops (about 15 min on Mac), then the host scrubs
    expect((await ec2.send(new DescribeHostsCommand({ HostIds: [host] }))).Hosts![0]!.State).toBe('pending');
    expect((await failure(launch(host, 'conf-term-2'))).name).toBe('InsufficientCapacityOnHost');
    expect((await failure(launch(host, 'conf-term-1'))).name).toBe('IdempotentInstanceTerminated');
    emu.clock.advance(2 * HOUR);
    expect((await ec2.send(new DescribeHostsCommand({ HostIds: [host] }))).Hosts![0]!.State).toBe('available');
    const ledger = emu.cloud.ledger().hosts.find((h) => h.hostId === host)!;
    expect(ledger.scrubbingSeconds).toBeGreaterThanOrEqual(HOUR);
  });

  it('stops and starts; a stopped instance sends the host to scrub too', async () => {
    const host = await allocate();
    const id = (await launch(host, 'conf-stop-1')).Instances![0]!.InstanceId!;
    emu.clock.advance(DEFAULT_RUNNING);
    const s = await ec2.send(new StopInstancesCommand({ InstanceIds: [id], Force: true }));
    expect(s.StoppingInstances![0]!.CurrentState).toEqual({ Code: 64, Name: 'stopping' });
    emu.clock.advance(16 * 60);
    const hostState = (await ec2.send(new DescribeHostsCommand({ HostIds: [host] }))).Hosts![0]!.State;
    expect(hostState).toBe('pending');
    expect((await failure(ec2.send(new StartInstancesCommand({ InstanceIds: [id] })))).name).toBe(
      'InsufficientCapacityOnHost',
    );
    emu.clock.advance(2 * HOUR);
    const st = await ec2.send(new StartInstancesCommand({ InstanceIds: [id] }));
    expect(st.StartingInstances![0]).toMatchObject({
      CurrentState: { Name: 'pending' },
      PreviousState: { Name: 'stopped' },
    });
    expect((await failure(ec2.send(new DescribeInstancesCommand({ InstanceIds: ['i-0ffffffffffffffff'] })))).name).toBe(
      'InvalidInstanceID.NotFound',
    );
  });

  it('replaces the root volume without a scrub, idempotently', async () => {
    const host = await allocate();
    const id = (await launch(host, 'conf-rrv-1')).Instances![0]!.InstanceId!;
    const notYet = await failure(
      ec2.send(new CreateReplaceRootVolumeTaskCommand({ InstanceId: id, ImageId: AMI, ClientToken: 'rrv-early' })),
    );
    expect(notYet.name).toBe('IncorrectInstanceState');
    emu.clock.advance(DEFAULT_RUNNING);
    const t = await ec2.send(
      new CreateReplaceRootVolumeTaskCommand({
        InstanceId: id,
        ImageId: AMI,
        DeleteReplacedRootVolume: true,
        ClientToken: 'rrv-1',
      }),
    );
    const taskId = t.ReplaceRootVolumeTask!.ReplaceRootVolumeTaskId!;
    expect(t.ReplaceRootVolumeTask).toMatchObject({
      InstanceId: id,
      TaskState: 'pending',
      DeleteReplacedRootVolume: true,
    });
    const again = await ec2.send(
      new CreateReplaceRootVolumeTaskCommand({
        InstanceId: id,
        ImageId: AMI,
        DeleteReplacedRootVolume: true,
        ClientToken: 'rrv-1',
      }),
    );
    expect(again.ReplaceRootVolumeTask!.ReplaceRootVolumeTaskId).toBe(taskId);
    emu.clock.advance(16 * 60);
    const d = await ec2.send(
      new DescribeReplaceRootVolumeTasksCommand({ Filters: [{ Name: 'instance-id', Values: [id] }] }),
    );
    expect(d.ReplaceRootVolumeTasks![0]).toMatchObject({ ReplaceRootVolumeTaskId: taskId, TaskState: 'succeeded' });
    expect((await ec2.send(new DescribeHostsCommand({ HostIds: [host] }))).Hosts![0]!.State).toBe('available');
  });
});

describe('images and catalogue', () => {
  it('lists Amazon macOS AMIs, creates an image from an instance, refuses a duplicate name', async () => {
    const mine = await ec2.send(
      new DescribeImagesCommand({ Owners: ['amazon'], Filters: [{ Name: 'architecture', Values: ['arm64_mac'] }] }),
    );
    expect(mine.Images!.map((i) => i.ImageId)).toContain(AMI);
    const host = await allocate();
    const id = (await launch(host, 'conf-img-1')).Instances![0]!.InstanceId!;
    emu.clock.advance(DEFAULT_RUNNING);
    const img = await ec2.send(new CreateImageCommand({ InstanceId: id, Name: 'marina-xcode-16', NoReboot: true }));
    expect(img.ImageId).toMatch(/^ami-0/);
    const d = await ec2.send(new DescribeImagesCommand({ ImageIds: [img.ImageId!] }));
    expect(d.Images![0]).toMatchObject({ Name: 'marina-xcode-16', State: 'pending', Architecture: 'arm64_mac' });
    expect((await failure(ec2.send(new CreateImageCommand({ InstanceId: id, Name: 'marina-xcode-16' })))).name).toBe(
      'InvalidAMIName.Duplicate',
    );
    expect((await failure(ec2.send(new DescribeImagesCommand({ ImageIds: ['ami-0000000000000000'] })))).name).toBe(
      'InvalidAMIID.NotFound',
    );
  });

  it('describes Mac instance types and zones', async () => {
    const t = await ec2.send(new DescribeInstanceTypesCommand({ InstanceTypes: ['mac2-m2.metal'] }));
    expect(t.InstanceTypes![0]).toMatchObject({
      InstanceType: 'mac2-m2.metal',
      BareMetal: true,
      DedicatedHostsSupported: true,
      ProcessorInfo: { SupportedArchitectures: ['arm64_mac'] },
      VCpuInfo: { DefaultVCpus: 8 },
      MemoryInfo: { SizeInMiB: 24576 },
    });
    const z = await ec2.send(new DescribeAvailabilityZonesCommand({}));
    expect(z.AvailabilityZones!.map((x) => [x.ZoneName, x.ZoneId, x.State])).toEqual([
      ['us-east-1a', 'use1-az6', 'available'],
      ['us-east-1b', 'use1-az4', 'available'],
    ]);
  });
});

describe('faults', () => {
  it('throttles with 503 RequestLimitExceeded, which the SDK retries as throttling', async () => {
    emu.setFaults({ throttleRate: 1, seed: 3 });
    const retrying = new EC2Client({
      region: 'us-east-1',
      endpoint: emu.endpoint,
      credentials: { accessKeyId: 'e', secretAccessKey: 'e' },
      maxAttempts: 2,
    });
    const err = await failure(retrying.send(new DescribeAvailabilityZonesCommand({})));
    expect(err.name).toBe('RequestLimitExceeded');
    expect(err.$metadata.httpStatusCode).toBe(503);
    expect(err.$metadata.attempts).toBe(2);
    emu.setFaults({ throttleRate: 0 });
    retrying.destroy();
  });

  it('commits and drops the answer: a retry with the same ClientToken finds the same host', async () => {
    emu.setFaults({ dropAfterCommitRate: 1, actions: ['AllocateHosts'], seed: 4 });
    const lost = await failure(allocate('conf-drop-1'));
    expect(lost.name).not.toBe('IdempotentParameterMismatch');
    emu.setFaults({ dropAfterCommitRate: 0, actions: [] });
    const id = await allocate('conf-drop-1');
    const byToken = await ec2.send(
      new DescribeHostsCommand({ Filter: [{ Name: 'client-token', Values: ['conf-drop-1'] }] }),
    );
    expect(byToken.Hosts!.map((h) => h.HostId)).toEqual([id]);
  });
});

describe('the AWS CLI, a client we did not write', () => {
  const run = promisify(execFile);
  it('allocates and describes a host', async () => {
    const env = { ...process.env, AWS_ACCESS_KEY_ID: 'e', AWS_SECRET_ACCESS_KEY: 'e', AWS_DEFAULT_REGION: 'us-east-1' };
    const aws = (args: string[]) =>
      run('aws', ['--endpoint-url', emu.endpoint, '--output', 'json', 'ec2', ...args], { env });
    const a = JSON.parse(
      (
        await aws([
          'allocate-hosts',
          '--instance-type',
          'mac2.metal',
          '--availability-zone',
          'us-east-1b',
          '--quantity',
          '1',
          '--auto-placement',
          'off',
        ])
      ).stdout,
    ) as {
      HostIds: string[];
    };
    expect(a.HostIds[0]).toMatch(/^h-0/);
    const d = JSON.parse((await aws(['describe-hosts', '--host-ids', a.HostIds[0]!])).stdout) as {
      Hosts: { State: string; HostProperties: { InstanceType: string } }[];
    };
    expect(d.Hosts[0]).toMatchObject({ State: 'available', HostProperties: { InstanceType: 'mac2.metal' } });
    const r = JSON.parse((await aws(['release-hosts', '--host-ids', a.HostIds[0]!])).stdout) as {
      Unsuccessful: { Error: { Code: string } }[];
    };
    expect(r.Unsuccessful[0]!.Error.Code).toBe('Client.HostMinAllocationPeriodUnexpired');
  });
});

// Enough virtual time for a launched instance to be running.
const DEFAULT_RUNNING = 3 * 60;

describe('EC2 error classes and idempotency tokens', () => {
  it('retries throttling, 5xx and busy hosts, moves on from a full zone, stops on what no retry fixes', () => {
    for (const c of [
      'RequestLimitExceeded',
      'InternalError',
      'ServiceUnavailable',
      'InsufficientCapacityOnHost',
      'InvalidInstanceID.NotFound',
    ]) {
      expect(classifyEc2Error(c), c).toBe('retry');
    }
    expect(classifyEc2Error('InsufficientHostCapacity')).toBe('next-zone');
    for (const c of [
      'HostLimitExceeded',
      'InvalidAMIID.NotFound',
      'IdempotentParameterMismatch',
      'UnauthorizedOperation',
      'InvalidParameterValue',
    ]) {
      expect(classifyEc2Error(c), c).toBe('fatal');
    }
  });

  it('derives a stable token of at most 64 characters per workflow and step', () => {
    const a = clientToken('host/ci/0f3a9c1e-5b7d-4c2a-9e8f-1234567890ab', 'allocate-us-east-1a');
    expect(a).toBe(clientToken('host/ci/0f3a9c1e-5b7d-4c2a-9e8f-1234567890ab', 'allocate-us-east-1a'));
    expect(a.length).toBeLessThanOrEqual(64);
    expect(clientToken('host/ci/0f3a9c1e-5b7d-4c2a-9e8f-1234567890ab', 'allocate-us-east-1b')).not.toBe(a);
    expect(clientToken('host/ci/other', 'allocate-us-east-1a')).not.toBe(a);
  });

  it('gives each deployment its own tokens (EC2 keys idempotency account-wide), the default as before', () => {
    const id = 'host/ci/0f3a9c1e';
    // Staging and production run the same workflow ids: the same token would hand one the other's host.
    expect(clientToken(id, 'run-0', 'staging')).not.toBe(clientToken(id, 'run-0', 'production'));
    // Hosts in flight across the upgrade keep their tokens under the default deployment.
    expect(clientToken(id, 'run-0', 'default')).toBe(clientToken(id, 'run-0'));
  });
});

describe('console output, metadata options and pagination', () => {
  beforeAll(() => {
    // Room beyond the quota and capacity the tests above exhaust on purpose.
    emu.cloud.options.quotaPerFamily = 100;
    for (const z of emu.cloud.options.zones) z.capacity = 100;
  });
  const launchWith = (hostId: string, token: string, extra: object) =>
    ec2.send(
      new RunInstancesCommand({
        ImageId: AMI,
        InstanceType: 'mac2-m2.metal',
        MinCount: 1,
        MaxCount: 1,
        ClientToken: token,
        Placement: { Tenancy: 'host', HostId: hostId, Affinity: 'host' },
        TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'suite', Value: 'console' }] }],
        ...extra,
      }),
    );

  it('records MetadataOptions and describes them as EC2 does; refuses bad ones', async () => {
    const host = await allocate();
    const run = await launchWith(host, 'conf-imds-1', { MetadataOptions: METADATA_OPTIONS });
    const id = run.Instances![0]!.InstanceId!;
    const want = { HttpTokens: 'required', HttpPutResponseHopLimit: 1, HttpEndpoint: 'enabled', State: 'applied' };
    expect(run.Instances![0]!.MetadataOptions).toMatchObject(want);
    const d = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
    expect(d.Reservations![0]!.Instances![0]!.MetadataOptions).toMatchObject(want);
    const other = await allocate();
    const bad = await failure(launchWith(other, 'conf-imds-2', { MetadataOptions: { HttpPutResponseHopLimit: 0 } }));
    expect(bad.name).toBe('InvalidParameterValue');
    // EC2's defaults when none are given: IMDSv1 allowed.
    const plain = await launchWith(other, 'conf-imds-3', {});
    expect(plain.Instances![0]!.MetadataOptions).toMatchObject({ HttpTokens: 'optional', HttpEndpoint: 'enabled' });
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id, plain.Instances![0]!.InstanceId!] }));
  });

  it('answers GetConsoleOutput with an empty Output until EC2 posts the boot, then base64 text', async () => {
    emu.clock.advance(3 * HOUR); // the last test's hosts scrub
    const host = await allocate();
    const run = await launchWith(host, 'conf-console-1', {
      UserData: Buffer.from(HOST_KEY_USER_DATA).toString('base64'),
    });
    const id = run.Instances![0]!.InstanceId!;
    const early = await ec2.send(new GetConsoleOutputCommand({ InstanceId: id, Latest: true }));
    expect(early.InstanceId).toBe(id);
    expect(early.Output).toBeUndefined();
    // Running, SSH up, console posted: this emulator has no sshd (no --ssh-key), so no key to print yet.
    emu.clock.advance(HOUR);
    const none = await ec2.send(new GetConsoleOutputCommand({ InstanceId: id }));
    expect(none.Output).toBeUndefined();
    // A key set by the test control is printed in cloud-init's block, base64 as EC2 sends it.
    const key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOTHERKEYOTHERKEYOTHERKEYOTHERKEYOTHERKEY0';
    const r = await fetch(`${emu.endpoint}/_emulator/console`, {
      method: 'POST',
      body: JSON.stringify({ instanceId: id, hostKey: key }),
    });
    expect(r.status).toBe(200);
    const out = await ec2.send(new GetConsoleOutputCommand({ InstanceId: id, Latest: true }));
    expect(out.Timestamp).toBeInstanceOf(Date);
    const text = Buffer.from(out.Output!, 'base64').toString('utf8');
    expect(text).toContain(`${KEYS_BEGIN}\r\n${key} root@`);
    expect(text).toContain('-----END SSH HOST KEY KEYS-----');
    expect((await failure(ec2.send(new GetConsoleOutputCommand({ InstanceId: 'i-0ffffffffffffffff' })))).name).toBe(
      'InvalidInstanceID.NotFound',
    );
    await fetch(`${emu.endpoint}/_emulator/console`, { method: 'POST', body: JSON.stringify({ clear: true }) });
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
  });

  it('pages DescribeHosts and DescribeInstances: the SDK paginators find every item', async () => {
    await fetch(`${emu.endpoint}/_emulator/paging`, { method: 'POST', body: JSON.stringify({ maxItems: 2 }) });
    try {
      const hosts = (await ec2.send(new DescribeHostsCommand({}))).Hosts!;
      expect(hosts).toHaveLength(2);
      const all: string[] = [];
      for await (const p of paginateDescribeHosts({ client: ec2 }, {})) all.push(...p.Hosts!.map((h) => h.HostId!));
      expect(all.length).toBeGreaterThan(2);
      expect(new Set(all).size).toBe(all.length);
      expect(all.sort()).toEqual([...emu.cloud.hosts.keys()].sort());
      const instances: string[] = [];
      for await (const p of paginateDescribeInstances({ client: ec2 }, {}))
        instances.push(...p.Reservations!.flatMap((r) => r.Instances!.map((i) => i.InstanceId!)));
      expect(instances.length).toBeGreaterThan(2);
      expect(instances.sort()).toEqual([...emu.cloud.instances.keys()].sort());
      const both = await failure(ec2.send(new DescribeHostsCommand({ HostIds: [all[0]!], MaxResults: 5 })));
      expect(both.name).toBe('InvalidParameterCombination');
    } finally {
      await fetch(`${emu.endpoint}/_emulator/paging`, { method: 'POST', body: JSON.stringify({ maxItems: 1000 }) });
    }
  });
});
