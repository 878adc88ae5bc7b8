/**
 * Security issue #17, EC2 side, each test written as the attack it stops:
 *
 * - a machine answering SSH at a new instance's address with a key the instance never printed is not trusted
 *   (the host workflow fails `HostKeyMismatch`, and no command ever reaches the host);
 * - a console that has not shown the keys yet is waited for, within a bound;
 * - instances launch with IMDSv2 only and a hop limit of 1 (VMs on the host get no instance credentials);
 * - staging's reconciler, in the same account with a pool of the same name, leaves production's hosts alone,
 *   and a listing of several pages is read to the end.
 *
 * Real dev server, the EC2 Mac emulator in compressed time (1 real second = 2 virtual hours), real sshd per
 * instance, recording every command it is sent (the witness).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import {
  AllocateHostsCommand,
  EC2Client,
  GetConsoleOutputCommand,
  RunInstancesCommand,
  type Tag,
} from '@aws-sdk/client-ec2';
import { Client, Connection, WorkflowFailedError, WorkflowNotFoundError } from '@temporalio/client';
import { Client as SshClient } from 'ssh2';
import type { LoadedConfig } from '../src/config/load';
import { publicKeyOf } from '../src/emulator/seed-image';
import { sshKeygen } from '../src/emulator/mac-host';
import { defaultEmulatorOptions, startEc2Emulator, type Ec2Emulator } from '../src/emulator/ec2/server';
import { SEEDED_IMAGES } from '../src/emulator/ec2/cloud';
import { consoleHostKeys, KEYS_BEGIN, normaliseKey } from '../src/ec2mac/console-host-keys';
import { hostStateQuery, hostWorkflowId, retireHostSignal, type HostLife, type hostWorkflow } from '../workflows/host';
import { ActivityContext } from '../activities/context';
import { reconcileActivities } from '../activities/reconcile';
import { eventually, fileConfig, stack, startWorker, uniqueId } from './helpers';

const POOL = 'awssec';
/** The same, with a console bound of one EC2 hour (half a real second). */
const SHORT = 'awssecshort';
const SPEED = 7200;
let emu: Ec2Emulator;
let config: LoadedConfig;
let client: Client;
let ec2: EC2Client;
let worker: Awaited<ReturnType<typeof startWorker>> | undefined;
let instancesDir: string;

beforeAll(async () => {
  const s = stack();
  const vmPort = (parse(readFileSync(s.configPath, 'utf8')) as { pools: { vm: { port: number } }[] }).pools[0]!.vm.port;
  const o = defaultEmulatorOptions();
  o.speed = SPEED;
  instancesDir = join(s.stateDir, 'ec2-security-instances');
  o.ssh = {
    authorizedKey: publicKeyOf(join(s.stateDir, 'keys', 'worker_ed25519')),
    dir: instancesDir,
    port: 2222,
    vmPort,
    vmBootSeconds: 1,
    recordSessions: true,
  };
  emu = await startEc2Emulator(o);
  mkdirSync(join(s.stateDir, 'secrets'), { recursive: true });
  writeFileSync(join(s.stateDir, 'secrets', 'ec2-key-id'), 'emulator');
  writeFileSync(join(s.stateDir, 'secrets', 'ec2-secret'), 'emulator');
  config = fileConfig(POOL, (raw) => {
    raw.deployment = 'production';
    raw.pools[0].hosts = [];
    raw.pools[0].ssh = { user: 'root', port: 2222, privateKey: { file: 'keys/worker_ed25519' } };
    raw.pools[0].aws = {
      region: 'us-east-1',
      endpoint: emu.endpoint,
      credentials: { accessKeyId: { file: 'secrets/ec2-key-id' }, secretAccessKey: { file: 'secrets/ec2-secret' } },
      instanceType: 'mac2-m2.metal',
      zones: ['us-east-1a', 'us-east-1b'],
      imageId: SEEDED_IMAGES[0]!.id,
      timeScale: SPEED,
      pollSeconds: 60,
      sshReadyTimeoutSeconds: 24 * 3600,
      // 24 virtual hours = 12 s real: room for a loaded machine.
      consoleKeyTimeoutSeconds: 24 * 3600,
      reconcileSeconds: 3600,
      park: false,
      headroomSlots: 0,
    };
    raw.pools.push({ ...raw.pools[0], name: SHORT, aws: { ...raw.pools[0].aws, consoleKeyTimeoutSeconds: 3600 } });
  });
  client = new Client({ connection: await Connection.connect({ address: config.temporal.address }) });
  ec2 = new EC2Client({
    region: 'us-east-1',
    endpoint: emu.endpoint,
    credentials: { accessKeyId: 'emulator', secretAccessKey: 'emulator' },
  });
  worker = await startWorker(config);
});

afterEach(async () => {
  await admin('console', { clear: true });
  await admin('paging', { maxItems: 1000 });
});

afterAll(async () => {
  await worker?.stop();
  await client?.connection.close();
  ec2?.destroy();
  await emu?.stop();
});

function admin(path: string, body: object): Promise<Response> {
  return fetch(`${emu.endpoint}/_emulator/${path}`, { method: 'POST', body: JSON.stringify(body) });
}

function startHost(pool: string, workflowId: string) {
  return client.workflow.start<typeof hostWorkflow>('hostWorkflow', {
    taskQueue: config.temporal.taskQueue,
    workflowId,
    args: [{ pool, timeScale: SPEED, pollSeconds: 60 }],
  });
}

const instanceOf = (workflowId: string) =>
  [...emu.cloud.instances.values()].find((i) => i.tags.get('marina:workflow') === workflowId);

/** The instance a host workflow launched (EC2 stops listing it an EC2 hour after it ends: read it early). */
const launched = (workflowId: string): Promise<string> =>
  eventually('the instance to be launched', async () => instanceOf(workflowId)?.id, 30_000);

/** The commands an instance's sshd ran (one `.cmd` file each): the witness that nothing logged in. */
function commandsRun(instanceId: string): string[] {
  const dir = join(instancesDir, `${instanceId}-0`, 'sessions');
  expect(existsSync(dir), `${dir} (the witness) exists`).toBe(true);
  return readdirSync(dir).filter((f) => f.endsWith('.cmd'));
}

/** An ed25519 public key no instance has: what an impostor's console, or an impostor's sshd, shows. */
function strangerKey(): string {
  const file = join(mkdtempSync(join(tmpdir(), 'marina-stranger-')), 'key');
  sshKeygen(file, 'stranger');
  return normaliseKey(readFileSync(`${file}.pub`, 'utf8'))!;
}

/** The type of the failure each failed activity attempt of a workflow ended with. */
async function activityFailureTypes(workflowId: string): Promise<string[]> {
  const history = await client.workflow.getHandle(workflowId).fetchHistory();
  return (history.events ?? [])
    .map((e) => e.activityTaskFailedEventAttributes?.failure?.applicationFailureInfo?.type)
    .filter((t): t is string => typeof t === 'string');
}

async function failureOf(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected the workflow to fail');
}

function sshRun(endpoint: { address: string; port: number; knownHostsLine: string }, command: string): Promise<void> {
  const key = readFileSync(join(stack().stateDir, 'keys', 'worker_ed25519'));
  const pinned = endpoint.knownHostsLine.split(' ')[2];
  return new Promise((resolve, reject) => {
    const c = new SshClient();
    c.on('ready', () =>
      c.exec(command, (err, ch) => {
        if (err) return reject(err);
        ch.end(); // no stdin: the recording login reads it to the end
        ch.on('data', () => undefined);
        ch.on('close', () => {
          c.end();
          resolve();
        });
      }),
    );
    c.on('error', reject);
    c.connect({
      host: endpoint.address,
      port: endpoint.port,
      username: 'root',
      privateKey: key,
      hostVerifier: (k: Buffer) => k.toString('base64') === pinned,
    } as never);
  });
}

describe('trusting a new EC2 instance', () => {
  it('pins the key the instance printed to its console, and launches it with IMDSv2 and hop limit 1', async () => {
    const wf = hostWorkflowId(POOL, uniqueId('console-ok'));
    const h = await startHost(POOL, wf);
    await eventually('the host to be ready', async () => (await h.query(hostStateQuery)).phase === 'ready', 60_000);
    const life = await h.query(hostStateQuery);
    const inst = emu.cloud.instances.get(life.instanceId!)!;
    // The pinned key is the instance's own sshd key, and the one its console shows.
    const own = normaliseKey(readFileSync(join(instancesDir, `${inst.id}-0`, 'ssh_host_ed25519_key.pub'), 'utf8'))!;
    expect(life.endpoint!.knownHostsLine.endsWith(` ${own}`)).toBe(true);
    const out = await ec2.send(new GetConsoleOutputCommand({ InstanceId: inst.id, Latest: true }));
    expect(consoleHostKeys(out.Output)).toEqual([own]);
    // What RunInstances carried: Marina's user data (which prints the keys) and the metadata options.
    expect(inst.userData).toContain(KEYS_BEGIN);
    expect(inst.metadataOptions).toEqual({
      httpTokens: 'required',
      httpPutResponseHopLimit: 1,
      httpEndpoint: 'enabled',
    });
    expect(inst.tags.get('marina:deployment')).toBe('production');
    expect(emu.cloud.hosts.get(life.hostId!)!.tags.get('marina:deployment')).toBe('production');
    // The witness works: a command sent over the pinned key is recorded.
    expect(commandsRun(inst.id)).toHaveLength(0);
    await sshRun(life.endpoint!, 'true');
    expect(commandsRun(inst.id)).toHaveLength(1);
    await h.signal(retireHostSignal, { reason: 'test done' });
    expect((await h.result()).phase).toBe('released');
  });

  it('does not trust a host whose console shows another key: HostKeyMismatch, the host released, no command run', async () => {
    const wf = hostWorkflowId(POOL, uniqueId('console-mismatch'));
    // The console of this workflow's instance (not launched yet) shows a stranger's key: as if the machine that
    // answers SSH at the instance's address were not the instance.
    expect(
      (await admin('console', { tag: { key: 'marina:workflow', value: wf }, hostKey: strangerKey() })).status,
    ).toBe(200);
    const h = await startHost(POOL, wf);
    const instanceId = await launched(wf);
    const err = await failureOf(h.result());
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const cause = (err as WorkflowFailedError).cause as Error;
    expect(cause.message).toMatch(/offered SSH host key SHA256:\S+, but its console shows SHA256:\S+: not trusted/);
    expect(cause.message).toMatch(/the host was released/);
    expect(await activityFailureTypes(wf)).toContain('HostKeyMismatch');
    expect(commandsRun(instanceId)).toEqual([]);
    const host = emu.cloud.ledger().hosts.find((x) => x.tags['marina:workflow'] === wf)!;
    expect(host.state).toBe('released');
  });

  it('waits while the console shows nothing yet, and trusts the key once it does', async () => {
    const wf = hostWorkflowId(POOL, uniqueId('console-late'));
    await admin('console', { tag: { key: 'marina:workflow', value: wf }, empty: true });
    const h = await startHost(POOL, wf);
    await eventually(
      'the instance to answer SSH',
      async () => emu.sshOf(instanceOf(wf)?.id ?? '') !== undefined,
      30_000,
    );
    // Six EC2 hours on (the console bound is 24): SSH has long answered, the console is empty, nothing is pinned.
    await new Promise((r) => setTimeout(r, 3000));
    const waiting = await h.query(hostStateQuery);
    expect(waiting.phase).toBe('booting');
    expect(waiting.endpoint).toBeUndefined();
    await admin('console', { clear: true });
    await eventually('the host to be ready', async () => (await h.query(hostStateQuery)).phase === 'ready', 60_000);
    await h.signal(retireHostSignal, { reason: 'test done' });
    expect((await h.result()).phase).toBe('released');
  });

  it('gives up on a console that never shows the keys: HostKeyUnverified, no command run', async () => {
    const wf = hostWorkflowId(SHORT, uniqueId('console-never'));
    await admin('console', { tag: { key: 'marina:workflow', value: wf }, empty: true });
    const h = await startHost(SHORT, wf);
    const instanceId = await launched(wf);
    const err = await failureOf(h.result());
    expect(((err as WorkflowFailedError).cause as Error).message).toMatch(
      /console has shown no SSH host keys .*aws.consoleKeyTimeoutSeconds/,
    );
    expect(await activityFailureTypes(wf)).toContain('HostKeyUnverified');
    expect(commandsRun(instanceId)).toEqual([]);
  });
});

describe('two deployments in one AWS account', () => {
  const tags = (t: Record<string, string>): Tag[] => Object.entries(t).map(([Key, Value]) => ({ Key, Value }));
  const allocate = async (t: Record<string, string>): Promise<string> =>
    (
      await ec2.send(
        new AllocateHostsCommand({
          InstanceType: 'mac2-m2.metal',
          AvailabilityZone: 'us-east-1b',
          Quantity: 1,
          TagSpecifications: [{ ResourceType: 'dedicated-host', Tags: tags(t) }],
        }),
      )
    ).HostIds![0]!;
  const reconcile = (deployment: string) =>
    reconcileActivities(new ActivityContext({ ...config, deployment }, client)).reconcileHosts({
      pool: POOL,
      taskQueue: config.temporal.taskQueue,
      timeScale: SPEED,
      pollSeconds: 60,
    });
  const adopterExists = async (hostId: string): Promise<boolean> =>
    client.workflow
      .getHandle(hostWorkflowId(POOL, `adopted-${hostId}`))
      .describe()
      .then(
        () => true,
        (e: unknown) => {
          if (e instanceof WorkflowNotFoundError) return false;
          throw e;
        },
      );

  it("staging's reconciler leaves production's orphans alone (same pool name); production's finds them all, page after page", async () => {
    // Production's orphans: their workflows are gone (never existed here), so production's reconciler must adopt
    // them. Staging runs a pool of the same name; before the deployment tag, it adopted and released them.
    const orphan = (n: number) => ({
      'marina:deployment': 'production',
      'marina:pool': POOL,
      'marina:workflow': hostWorkflowId(POOL, uniqueId(`gone-${n}`)),
    });
    const prod = [orphan(1), orphan(2), orphan(3)];
    const prodHosts = await Promise.all(prod.map(allocate));
    const run = await ec2.send(
      new RunInstancesCommand({
        ImageId: SEEDED_IMAGES[0]!.id,
        InstanceType: 'mac2-m2.metal',
        MinCount: 1,
        MaxCount: 1,
        Placement: { Tenancy: 'host', HostId: prodHosts[0] },
        TagSpecifications: [{ ResourceType: 'instance', Tags: tags(prod[0]!) }],
      }),
    );
    const prodInstance = run.Instances![0]!.InstanceId!;
    // Made before the tag existed: whose it is nobody can tell from EC2.
    const legacy = await allocate({ 'marina:pool': POOL, 'marina:workflow': hostWorkflowId(POOL, 'legacy') });
    // Two items per page: four hosts are two pages.
    await admin('paging', { maxItems: 2 });

    const staging = await reconcile('staging');
    expect(staging.actions.filter((a) => a.action !== 'none')).toEqual([]);
    // Three hosts and an instance, all production's (and whatever production still runs from the tests above).
    expect(staging.foreign).toBeGreaterThanOrEqual(4);
    expect(staging.actions).toContainEqual(
      expect.objectContaining({ resource: legacy, action: 'none', detail: expect.stringMatching(/left alone/) }),
    );
    for (const id of prodHosts) {
      expect(emu.cloud.hosts.get(id)!.state).toBe('available');
      expect(await adopterExists(id)).toBe(false);
    }
    expect(emu.cloud.instances.get(prodInstance)!.state).not.toMatch(/shutting-down|terminated/);

    const production = await reconcile('production');
    expect(production.hosts).toBeGreaterThanOrEqual(3);
    expect(
      production.actions
        .filter((a) => a.action === 'adopted')
        .map((a) => a.resource)
        .sort(),
    ).toEqual([...prodHosts].sort());
    // The untagged host is production's no more than staging's: left alone without aws.adoptUntagged.
    expect(production.actions).toContainEqual(expect.objectContaining({ resource: legacy, action: 'none' }));
    for (const id of prodHosts) {
      const life = (await client.workflow.getHandle(hostWorkflowId(POOL, `adopted-${id}`)).result()) as HostLife;
      expect(life.phase).toBe('released');
    }
    emu.cloud.vanishHost(legacy);
  });
});
