/**
 * The EC2 Mac emulator's HTTP face: the real EC2 Query protocol on loopback, so the
 * unmodified @aws-sdk/client-ec2 (or the AWS CLI) works against it by `endpoint`, plus
 * an admin API under /_emulator/ for the clock, fault injection, host health and the
 * billing ledger. Instances that reach SSH-ready answer SSH as emulated Mac hosts.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { seeded, type Uniform } from '../../ec2mac/random';
import { startEmulatedHost, type EmulatedHost } from '../mac-host';
import { normaliseKey } from '../../ec2mac/console-host-keys';
import { consoleOf } from './console';
import {
  ACCOUNT_ID,
  DEFAULT_EMULATOR_TIMINGS,
  EmulatorClock,
  Ec2MacCloud,
  INSTANCE_CODES,
  MAC_TYPES,
  type CloudOptions,
  type ConsoleRule,
  type MetadataOptions,
  type Host,
  type Instance,
} from './cloud';
import {
  Ec2Error,
  errorXml,
  filters,
  matches,
  members,
  responseXml,
  structs,
  tagSet,
  tagSpecs,
  type Params,
  type XmlValue,
} from './wire';

export interface Faults {
  /** Share of requests answered 503 RequestLimitExceeded. */
  throttleRate: number;
  /** Share answered 500 InternalError. */
  serverErrorRate: number;
  /** Share whose effect is committed and whose answer is lost (the connection is reset). */
  dropAfterCommitRate: number;
  /** Added latency per request before it is served, ms. */
  slowMs: number;
  /** Delay between committing a request's effect and answering it, ms: a window to kill the caller in. */
  holdAfterCommitMs: number;
  /** Only these actions (all when empty). */
  actions: string[];
  seed: number;
}

export const NO_FAULTS: Faults = {
  throttleRate: 0,
  serverErrorRate: 0,
  dropAfterCommitRate: 0,
  slowMs: 0,
  holdAfterCommitMs: 0,
  actions: [],
  seed: 1,
};

export interface InstanceSsh {
  /** Public key the worker logs in with. */
  authorizedKey: string;
  /** Where emulated hosts keep their state. */
  dir: string;
  /** Port each instance's SSH server listens on, at its own 127.78.x.y address. */
  port: number;
  vmPort: number;
  vmBootSeconds: number;
  /** Each instance records every command it is sent (a `sessions/` directory in its state): tests' witness. */
  recordSessions?: boolean;
}

export interface Ec2EmulatorOptions {
  port: number;
  cloud: CloudOptions;
  /** Virtual seconds per real second. */
  speed: number;
  faults: Faults;
  ssh?: InstanceSsh;
}

export function defaultEmulatorOptions(): Ec2EmulatorOptions {
  return {
    port: 0,
    cloud: {
      region: 'us-east-1',
      zones: [
        { name: 'us-east-1a', id: 'use1-az6', capacity: 50 },
        { name: 'us-east-1b', id: 'use1-az4', capacity: 50 },
      ],
      quotaPerFamily: 20,
      timings: DEFAULT_EMULATOR_TIMINGS,
      seed: 1,
    },
    speed: 1,
    faults: NO_FAULTS,
  };
}

export interface Ec2Emulator {
  endpoint: string;
  cloud: Ec2MacCloud;
  clock: EmulatorClock;
  setFaults(f: Partial<Faults>): void;
  /** SSH endpoint of a running instance, once it answers. */
  sshOf(instanceId: string): { host: string; port: number; knownHostsLine: string } | undefined;
  stop(): Promise<void>;
}

const b64 = (n: number): string => Buffer.from(String(n)).toString('base64');
const unb64 = (s: string | null): number => (s ? Number(Buffer.from(s, 'base64').toString()) || 0 : 0);

/** EC2 answers at most `cap` items (1000 on AWS) whatever MaxResults asks, with a NextToken for the rest. */
function page<T>(items: T[], p: Params, cap: number): { items: T[]; nextToken?: string } {
  const max = p.get('MaxResults');
  let n = cap;
  if (max) {
    const asked = Number(max);
    if (!(asked >= 5 && asked <= 1000))
      throw new Ec2Error('InvalidParameterValue', `MaxResults must be between 5 and 1000, got ${max}`);
    n = Math.min(asked, cap);
  }
  const from = unb64(p.get('NextToken'));
  const slice = items.slice(from, from + n);
  return from + n < items.length ? { items: slice, nextToken: b64(from + n) } : { items: slice };
}

function applyFilters<T>(
  items: T[],
  p: Params,
  fields: (x: T) => Record<string, string | undefined>,
  tags: (x: T) => Map<string, string>,
): T[] {
  const fs = filters(p);
  return items.filter((x) =>
    fs.every((f) => {
      const m = matches(f, fields(x), tags(x));
      if (m === undefined) throw new Ec2Error('InvalidParameterValue', `The filter '${f.name}' is invalid`);
      return m;
    }),
  );
}

function hostXml(cloud: Ec2MacCloud, h: Host): XmlValue {
  const spec = MAC_TYPES[h.instanceType]!;
  const live = h.instanceId ? cloud.instances.get(h.instanceId) : undefined;
  const free = h.state === 'available' && !live ? 1 : 0;
  return {
    hostId: h.id,
    autoPlacement: h.autoPlacement,
    hostRecovery: h.hostRecovery,
    hostMaintenance: h.hostMaintenance,
    availabilityZone: h.zone.name,
    availabilityZoneId: h.zone.id,
    availableCapacity: {
      availableInstanceCapacity: [{ availableCapacity: free, instanceType: h.instanceType, totalCapacity: 1 }],
      availableVCpus: free * spec.vcpus,
    },
    hostProperties: { cores: spec.vcpus, instanceType: h.instanceType, sockets: 1, totalVCpus: spec.vcpus },
    instances: live ? [{ instanceId: live.id, instanceType: live.instanceType, ownerId: ACCOUNT_ID }] : null,
    state: h.state,
    allocationTime: new Date(h.allocatedAt * 1000),
    releaseTime: h.releasedAt ? new Date(h.releasedAt * 1000) : undefined,
    clientToken: h.clientToken,
    tagSet: tagSet(h.tags),
    ownerId: ACCOUNT_ID,
    allowsMultipleInstanceTypes: 'off',
    memberOfServiceLinkedResourceGroup: false,
  };
}

function instanceXml(cloud: Ec2MacCloud, i: Instance): XmlValue {
  const h = cloud.hosts.get(i.hostId)!;
  const m = i.metadataOptions;
  return {
    instanceId: i.id,
    imageId: i.imageId,
    instanceState: { code: INSTANCE_CODES[i.state], name: i.state },
    privateDnsName: `ip-${i.privateIp.replace(/\./g, '-')}.ec2.internal`,
    dnsName: '',
    instanceType: i.instanceType,
    launchTime: new Date(i.launchedAt * 1000),
    placement: { availabilityZone: h.zone.name, tenancy: 'host', hostId: h.id, affinity: 'host' },
    privateIpAddress: i.privateIp,
    ipAddress: i.privateIp,
    architecture: MAC_TYPES[i.instanceType]!.arch,
    clientToken: i.clientToken,
    tagSet: tagSet(i.tags),
    metadataOptions: {
      state: 'applied',
      httpTokens: m.httpTokens,
      httpPutResponseHopLimit: m.httpPutResponseHopLimit,
      httpEndpoint: m.httpEndpoint,
      httpProtocolIpv6: 'disabled',
      instanceMetadataTags: 'disabled',
    },
  };
}

/** RunInstances' MetadataOptions, checked as EC2 checks them. */
function metadataOptions(p: Params): Partial<MetadataOptions> {
  const out: Partial<MetadataOptions> = {};
  const tokens = p.get('MetadataOptions.HttpTokens');
  if (tokens !== null) {
    if (tokens !== 'optional' && tokens !== 'required')
      throw new Ec2Error('InvalidParameterValue', `Invalid value '${tokens}' for HttpTokens: optional or required.`);
    out.httpTokens = tokens;
  }
  const hops = p.get('MetadataOptions.HttpPutResponseHopLimit');
  if (hops !== null) {
    const n = Number(hops);
    if (!Number.isInteger(n) || n < 1 || n > 64)
      throw new Ec2Error('InvalidParameterValue', `HttpPutResponseHopLimit must be 1 to 64, got ${hops}.`);
    out.httpPutResponseHopLimit = n;
  }
  const endpoint = p.get('MetadataOptions.HttpEndpoint');
  if (endpoint !== null) {
    if (endpoint !== 'enabled' && endpoint !== 'disabled')
      throw new Ec2Error('InvalidParameterValue', `Invalid value '${endpoint}' for HttpEndpoint: enabled or disabled.`);
    out.httpEndpoint = endpoint;
  }
  return out;
}

/** What act() needs from the server besides the cloud. */
interface ActEnv {
  /** The instance's real sshd public key (`type base64`), once its sshd has started. */
  hostKeyOf(i: Instance): string | undefined;
  /** Most items one Describe answer holds. */
  pageCap: number;
}

const stateChange = (r: {
  id: string;
  previous: keyof typeof INSTANCE_CODES;
  current: keyof typeof INSTANCE_CODES;
}): XmlValue => ({
  instanceId: r.id,
  currentState: { code: INSTANCE_CODES[r.current], name: r.current },
  previousState: { code: INSTANCE_CODES[r.previous], name: r.previous },
});

/** One EC2 action: its answer's members, or an Ec2Error. */
function act(cloud: Ec2MacCloud, action: string, p: Params, env: ActEnv): Record<string, XmlValue> {
  switch (action) {
    case 'AllocateHosts': {
      const ids = cloud.allocateHosts({
        instanceType: p.get('InstanceType') ?? undefined,
        instanceFamily: p.get('InstanceFamily') ?? undefined,
        zone: p.get('AvailabilityZone') ?? p.get('AvailabilityZoneId') ?? undefined,
        quantity: Number(p.get('Quantity') ?? '1'),
        autoPlacement: p.get('AutoPlacement') ?? undefined,
        hostRecovery: p.get('HostRecovery') ?? undefined,
        hostMaintenance: p.get('HostMaintenance') ?? undefined,
        clientToken: p.get('ClientToken') ?? undefined,
        tags: tagSpecs(p, 'dedicated-host'),
      });
      return { hostIdSet: ids };
    }
    case 'DescribeHosts': {
      const ids = members(p, 'HostId');
      if (ids.length && p.get('MaxResults'))
        throw new Ec2Error(
          'InvalidParameterCombination',
          'You cannot specify the parameter hostIds and the parameter maxResults in the same request',
        );
      cloud.settle();
      const all = ids.length ? ids.map((id) => cloud.host(id)) : [...cloud.hosts.values()];
      const hosts = applyFilters(
        all,
        p,
        (h) => ({
          state: h.state,
          'instance-type': h.instanceType,
          'availability-zone': h.zone.name,
          'client-token': h.clientToken,
          'auto-placement': h.autoPlacement,
          'host-reservation-id': undefined,
        }),
        (h) => h.tags,
      );
      const { items, nextToken } = page(hosts, p, env.pageCap);
      return { hostSet: items.map((h) => hostXml(cloud, h)), nextToken };
    }
    case 'ReleaseHosts': {
      const r = cloud.releaseHosts(members(p, 'HostId'));
      return {
        successful: r.successful,
        unsuccessful: r.unsuccessful.map((u) => ({ error: { code: u.code, message: u.message }, resourceId: u.id })),
      };
    }
    case 'ModifyHosts': {
      const ok: string[] = [];
      const bad: XmlValue[] = [];
      for (const id of members(p, 'HostId')) {
        const h = cloud.hosts.get(id);
        if (!h) {
          bad.push({
            error: { code: 'Client.InvalidHostID.NotFound', message: `The host ID '${id}' does not exist` },
            resourceId: id,
          });
          continue;
        }
        if (p.get('AutoPlacement')) h.autoPlacement = p.get('AutoPlacement')!;
        if (p.get('HostRecovery')) h.hostRecovery = p.get('HostRecovery')!;
        if (p.get('HostMaintenance')) h.hostMaintenance = p.get('HostMaintenance')!;
        ok.push(id);
      }
      return { successful: ok, unsuccessful: bad };
    }
    case 'RunInstances': {
      if (p.get('MinCount') !== '1' || p.get('MaxCount') !== '1') {
        throw new Ec2Error(
          'InvalidParameterValue',
          'A Mac Dedicated Host takes one instance: MinCount and MaxCount must be 1.',
        );
      }
      const i = cloud.runInstance({
        imageId: p.get('ImageId') ?? '',
        instanceType: p.get('InstanceType') ?? undefined,
        hostId: p.get('Placement.HostId') ?? undefined,
        tenancy: p.get('Placement.Tenancy') ?? undefined,
        clientToken: p.get('ClientToken') ?? randomUUID(),
        tags: tagSpecs(p, 'instance'),
        ...(p.get('UserData') !== null ? { userData: Buffer.from(p.get('UserData')!, 'base64').toString('utf8') } : {}),
        metadataOptions: metadataOptions(p),
      });
      return {
        reservationId: `r-${i.id.slice(2)}`,
        ownerId: ACCOUNT_ID,
        groupSet: null,
        instancesSet: [instanceXml(cloud, i)],
      };
    }
    case 'DescribeInstances': {
      const ids = members(p, 'InstanceId');
      if (ids.length && p.get('MaxResults'))
        throw new Ec2Error(
          'InvalidParameterCombination',
          'The parameter instancesSet cannot be used with the parameter maxResults',
        );
      cloud.settle();
      const all = ids.length ? ids.map((id) => cloud.instance(id)) : [...cloud.instances.values()];
      const found = applyFilters(
        all,
        p,
        (i) => ({
          'instance-state-name': i.state,
          'instance-state-code': String(INSTANCE_CODES[i.state]),
          'host-id': i.hostId,
          'instance-id': i.id,
          'client-token': i.clientToken,
          'instance-type': i.instanceType,
          'image-id': i.imageId,
          'availability-zone': cloud.hosts.get(i.hostId)!.zone.name,
          tenancy: 'host',
        }),
        (i) => i.tags,
      );
      const { items, nextToken } = page(found, p, env.pageCap);
      return {
        reservationSet: items.map((i) => ({
          reservationId: `r-${i.id.slice(2)}`,
          ownerId: ACCOUNT_ID,
          groupSet: null,
          instancesSet: [instanceXml(cloud, i)],
        })),
        nextToken,
      };
    }
    case 'GetConsoleOutput': {
      const i = cloud.instance(p.get('InstanceId') ?? '');
      const posted = consoleOf(cloud, i, env.hostKeyOf(i));
      if (!posted) return { instanceId: i.id };
      return {
        instanceId: i.id,
        timestamp: new Date(posted.postedAt * 1000),
        output: Buffer.from(posted.text).toString('base64'),
      };
    }
    case 'StopInstances':
      return { instancesSet: cloud.endInstances(members(p, 'InstanceId'), 'stop').map(stateChange) };
    case 'TerminateInstances':
      return { instancesSet: cloud.endInstances(members(p, 'InstanceId'), 'terminate').map(stateChange) };
    case 'StartInstances':
      return { instancesSet: cloud.startInstances(members(p, 'InstanceId')).map(stateChange) };
    case 'CreateTags': {
      const tags = new Map(structs(p, 'Tag').map((t) => [t.get('Key') ?? '', t.get('Value') ?? '']));
      cloud.createTags(members(p, 'ResourceId'), tags);
      return { return: true };
    }
    case 'DescribeImages': {
      cloud.settle();
      const ids = members(p, 'ImageId');
      for (const id of ids)
        if (!cloud.images.has(id)) throw new Ec2Error('InvalidAMIID.NotFound', `The image id '[${id}]' does not exist`);
      const owners = members(p, 'Owner');
      const imgs = applyFilters(
        (ids.length ? ids.map((id) => cloud.images.get(id)!) : [...cloud.images.values()]).filter(
          (i) => owners.length === 0 || owners.some((o) => o === i.owner || (o === 'self' && i.owner === ACCOUNT_ID)),
        ),
        p,
        (i) => ({
          name: i.name,
          architecture: i.arch,
          state: i.state,
          'image-id': i.id,
          'owner-alias': i.owner === 'amazon' ? 'amazon' : undefined,
        }),
        (i) => i.tags,
      );
      return {
        imagesSet: imgs.map((i) => ({
          imageId: i.id,
          imageLocation: `${i.owner}/${i.name}`,
          imageState: i.state,
          imageOwnerId: i.owner === 'amazon' ? '628277914472' : ACCOUNT_ID,
          imageOwnerAlias: i.owner === 'amazon' ? 'amazon' : undefined,
          creationDate: new Date(i.createdAt * 1000),
          isPublic: i.owner === 'amazon',
          architecture: i.arch,
          imageType: 'machine',
          name: i.name,
          rootDeviceType: 'ebs',
          virtualizationType: 'hvm',
          tagSet: tagSet(i.tags),
        })),
      };
    }
    case 'CreateImage': {
      const id = cloud.createImage(p.get('InstanceId') ?? '', p.get('Name') ?? '', tagSpecs(p, 'image'));
      return { imageId: id };
    }
    case 'CreateReplaceRootVolumeTask': {
      const t = cloud.replaceRootVolume({
        instanceId: p.get('InstanceId') ?? '',
        imageId: p.get('ImageId') ?? undefined,
        snapshotId: p.get('SnapshotId') ?? undefined,
        deleteReplaced: p.get('DeleteReplacedRootVolume') === 'true',
        clientToken: p.get('ClientToken') ?? randomUUID(),
      });
      return { replaceRootVolumeTask: rootTaskXml(t) };
    }
    case 'DescribeReplaceRootVolumeTasks': {
      cloud.settle();
      const ids = members(p, 'ReplaceRootVolumeTaskId');
      const tasks = applyFilters(
        [...cloud.rootVolumeTasks.values()].filter((t) => ids.length === 0 || ids.includes(t.id)),
        p,
        (t) => ({ 'instance-id': t.instanceId }),
        () => new Map(),
      );
      return { replaceRootVolumeTaskSet: tasks.map(rootTaskXml) };
    }
    case 'DescribeInstanceTypes': {
      const want = members(p, 'InstanceType');
      for (const t of want)
        if (!MAC_TYPES[t])
          throw new Ec2Error('InvalidInstanceType', `The following supplied instance types do not exist: [${t}]`);
      const types = want.length ? want : Object.keys(MAC_TYPES);
      return {
        instanceTypeSet: types.map((t) => ({
          instanceType: t,
          currentGeneration: true,
          bareMetal: true,
          dedicatedHostsSupported: true,
          autoRecoverySupported: false,
          hypervisor: undefined,
          processorInfo: { supportedArchitectures: [MAC_TYPES[t]!.arch] },
          vCpuInfo: { defaultVCpus: MAC_TYPES[t]!.vcpus },
          memoryInfo: { sizeInMiB: MAC_TYPES[t]!.memoryGiB * 1024 },
        })),
      };
    }
    case 'DescribeAvailabilityZones':
      return {
        availabilityZoneInfo: cloud.options.zones.map((z) => ({
          zoneName: z.name,
          zoneId: z.id,
          zoneState: 'available',
          regionName: cloud.options.region,
          zoneType: 'availability-zone',
          optInStatus: 'opt-in-not-required',
        })),
      };
    default:
      throw new Ec2Error(
        'InvalidAction',
        `The action ${action} is not valid for this web service (the Marina EC2 Mac emulator).`,
      );
  }
}

function rootTaskXml(t: {
  id: string;
  instanceId: string;
  state: string;
  startedAt: number;
  doneAt: number;
  imageId?: string;
  snapshotId?: string;
  deleteReplaced: boolean;
}): XmlValue {
  return {
    replaceRootVolumeTaskId: t.id,
    instanceId: t.instanceId,
    taskState: t.state,
    startTime: new Date(t.startedAt * 1000).toISOString(),
    completeTime: t.state === 'succeeded' ? new Date(t.doneAt * 1000).toISOString() : undefined,
    imageId: t.imageId,
    snapshotId: t.snapshotId,
    deleteReplacedRootVolume: t.deleteReplaced,
    tagSet: [],
  };
}

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function startEc2Emulator(o: Ec2EmulatorOptions): Promise<Ec2Emulator> {
  const clock = new EmulatorClock(o.speed);
  const cloud = new Ec2MacCloud(o.cloud, clock);
  let faults = o.faults;
  let rng: Uniform = seeded(faults.seed);
  let pageCap = 1000;
  const ssh = new Map<string, { generation: number; host?: EmulatedHost; starting?: Promise<EmulatedHost> }>();
  let netIndex = 100;

  const syncSsh = (): void => {
    if (!o.ssh) return;
    cloud.settle();
    const now = clock.now();
    // An instance dropped from the cloud (its host vanished) stops answering too.
    for (const [id, cur] of [...ssh]) {
      if (cloud.instances.has(id)) continue;
      ssh.delete(id);
      void (cur.starting ?? Promise.resolve(cur.host!)).then((h) => h.stop()).catch(() => undefined);
    }
    for (const i of cloud.instances.values()) {
      const want = i.state === 'running' && i.sshAt !== undefined && i.sshAt <= now;
      const cur = ssh.get(i.id);
      if (cur && (!want || cur.generation !== i.generation)) {
        ssh.delete(i.id);
        void (cur.starting ?? Promise.resolve(cur.host!)).then((h) => h.stop()).catch(() => undefined);
      }
      if (want && !ssh.has(i.id)) {
        const entry: { generation: number; host?: EmulatedHost; starting?: Promise<EmulatedHost> } = {
          generation: i.generation,
        };
        const dir = join(o.ssh.dir, `${i.id}-${i.generation}`);
        mkdirSync(dir, { recursive: true });
        entry.starting = startEmulatedHost({
          name: i.id,
          dir,
          address: i.privateIp,
          port: o.ssh.port,
          authorizedKey: o.ssh.authorizedKey,
          netIndex: (netIndex++ % 150) + 100,
          vmPort: o.ssh.vmPort,
          bootSeconds: o.ssh.vmBootSeconds,
          recordSessions: o.ssh.recordSessions === true,
        });
        entry.starting.then(
          (h) => {
            entry.host = h;
            entry.starting = undefined;
          },
          () => ssh.delete(i.id),
        );
        ssh.set(i.id, entry);
      }
    }
  };
  const timer = o.ssh ? setInterval(syncSsh, 200) : undefined;

  const hostKeyOf = (i: Instance): string | undefined => {
    const e = ssh.get(i.id);
    if (!o.ssh || !e || e.generation !== i.generation) return undefined;
    try {
      // Written before sshd starts: the key the instance prints is the one its sshd will offer.
      return normaliseKey(readFileSync(join(o.ssh.dir, `${i.id}-${i.generation}`, 'ssh_host_ed25519_key.pub'), 'utf8'));
    } catch {
      return undefined;
    }
  };

  const admin = async (req: IncomingMessage, res: ServerResponse, path: string): Promise<void> => {
    const json = (status: number, v: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(v, null, 2));
    };
    const text = req.method === 'POST' ? await body(req) : '';
    const input = text ? (JSON.parse(text) as Record<string, unknown>) : {};
    if (path === '/_emulator/ledger') return json(200, cloud.ledger());
    if (path === '/_emulator/clock') {
      if (typeof input.advanceSeconds === 'number') clock.advance(input.advanceSeconds);
      if (typeof input.speed === 'number') clock.setSpeed(input.speed);
      return json(200, { now: new Date(clock.now() * 1000).toISOString(), speed: clock.speed });
    }
    // Tests: what instances print to their console (another host key, or nothing), by instance id or tag.
    if (path === '/_emulator/console' && req.method === 'POST') {
      if (input.clear === true) {
        cloud.consoleRules = [];
        return json(200, { rules: [] });
      }
      const rule = input as ConsoleRule;
      if (rule.hostKey !== undefined && !normaliseKey(rule.hostKey))
        return json(400, { error: 'hostKey must be an OpenSSH public key, e.g. "ssh-ed25519 AAAA…"' });
      if (!rule.instanceId && !rule.tag) return json(400, { error: 'name an instanceId or a tag {key, value}' });
      cloud.consoleRules.unshift({
        ...(rule.instanceId ? { instanceId: rule.instanceId } : {}),
        ...(rule.tag ? { tag: rule.tag } : {}),
        ...(rule.hostKey ? { hostKey: normaliseKey(rule.hostKey)! } : {}),
        ...(rule.empty === true ? { empty: true } : {}),
      });
      return json(200, { rules: cloud.consoleRules });
    }
    // Tests: EC2 answers at most this many items per Describe page (1000 on AWS).
    if (path === '/_emulator/paging' && req.method === 'POST') {
      if (typeof input.maxItems === 'number' && input.maxItems >= 1) pageCap = Math.floor(input.maxItems);
      return json(200, { maxItems: pageCap });
    }
    if (path === '/_emulator/faults') {
      faults = { ...faults, ...(input as Partial<Faults>) };
      rng = seeded(faults.seed);
      return json(200, faults);
    }
    const health = /^\/_emulator\/hosts\/(h-[0-9a-f]+)\/health$/.exec(path);
    if (health) {
      cloud.setHostHealth(health[1]!, input.state as 'under-assessment' | 'permanent-failure' | 'available');
      return json(200, { hostId: health[1], state: input.state });
    }
    // Released behind Marina's back (release-hosts by someone else, or AWS reclaiming it).
    const vanish = /^\/_emulator\/hosts\/(h-[0-9a-f]+)\/vanish$/.exec(path);
    if (vanish && req.method === 'POST') {
      try {
        const out = cloud.vanishHost(vanish[1]!, input.keepListed === true);
        syncSsh();
        return json(200, out);
      } catch (e) {
        if (e instanceof Ec2Error) return json(404, { error: e.message });
        throw e;
      }
    }
    return json(404, {
      error: `unknown admin path ${path}; try /_emulator/ledger, /_emulator/clock, /_emulator/faults, /_emulator/hosts/<id>/health, POST /_emulator/hosts/<id>/vanish, POST /_emulator/console, POST /_emulator/paging`,
    });
  };

  const server: Server = createServer((req, res) => {
    const requestId = randomUUID();
    const path = (req.url ?? '/').split('?')[0]!;
    void (async () => {
      if (path.startsWith('/_emulator/')) return admin(req, res, path);
      const p = new URLSearchParams(await body(req));
      const action = p.get('Action') ?? '';
      const send = (status: number, xmlText: string): void => {
        // Date carries the emulated clock, as AWS's carries AWS's: clients read EC2's "now" from it.
        res
          .writeHead(status, {
            'content-type': 'text/xml;charset=UTF-8',
            'x-amzn-requestid': requestId,
            date: new Date(clock.now() * 1000).toUTCString(),
          })
          .end(xmlText);
      };
      const faulty = faults.actions.length === 0 || faults.actions.includes(action);
      if (faulty && faults.slowMs > 0) await new Promise((r) => setTimeout(r, faults.slowMs));
      if (faulty && rng() < faults.throttleRate)
        return send(503, errorXml('RequestLimitExceeded', 'Request limit exceeded.', requestId));
      if (faulty && rng() < faults.serverErrorRate)
        return send(500, errorXml('InternalError', 'An internal error has occurred.', requestId));
      try {
        const out = act(cloud, action, p, { hostKeyOf, pageCap });
        if (faulty && faults.holdAfterCommitMs > 0) await new Promise((r) => setTimeout(r, faults.holdAfterCommitMs));
        if (faulty && rng() < faults.dropAfterCommitRate) {
          req.socket.destroy(); // committed, answer lost
          return;
        }
        send(200, responseXml(action, requestId, out));
      } catch (e) {
        if (e instanceof Ec2Error) return send(e.status, errorXml(e.code, e.message, requestId));
        send(500, errorXml('InternalError', (e as Error).message, requestId));
      }
    })().catch((e: unknown) => {
      if (!res.headersSent) res.writeHead(500).end(String(e));
    });
  });
  await new Promise<void>((resolve) => server.listen(o.port, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  // Instances answer SSH at 127.78.B.N on one port: B from the emulator's own port keeps emulators apart.
  cloud.ipPrefix = `127.78.${(port % 250) + 1}`;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    cloud,
    clock,
    setFaults(f) {
      faults = { ...faults, ...f };
      rng = seeded(faults.seed);
    },
    sshOf(id) {
      const h = ssh.get(id)?.host;
      const i = cloud.instances.get(id);
      return h && i ? { host: i.privateIp, port: h.port, knownHostsLine: h.knownHostsLine } : undefined;
    },
    async stop() {
      if (timer) clearInterval(timer);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await Promise.all(
        [...ssh.values()].map(async (e) => (e.host ?? (await e.starting))?.stop().catch(() => undefined)),
      );
    },
  };
}
