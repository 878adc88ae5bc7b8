/**
 * The EC2 actions the emulator serves, each from its Query parameters to its answer's members (or an
 * Ec2Error): the requests checked as EC2 checks them (checks.ts), then the cloud asked (cloud.ts).
 */
import { randomUUID } from 'node:crypto';
import { consoleOf } from './console';
import { ACCOUNT_ID, INSTANCE_CODES, MAC_TYPES, type Host, type Instance, type MetadataOptions } from './resources';
import type { Ec2MacCloud } from './cloud';
import {
  PageTokens,
  checkHostId,
  checkInstanceId,
  checkResourceId,
  optionalMembers,
  required,
  requiredMembers,
} from './checks';
import {
  Ec2Error,
  filters,
  matches,
  members,
  structs,
  tagSet,
  tagSpecs,
  type Params,
  type XmlValue,
} from './wire';


/** EC2 answers at most `cap` items (1000 on AWS) whatever MaxResults asks, with a NextToken for the rest. */
function page<T>(items: T[], action: string, p: Params, env: ActEnv): { items: T[]; nextToken?: string } {
  const max = p.get('MaxResults');
  let n = env.pageCap;
  if (max) {
    const asked = Number(max);
    if (!(asked >= 5 && asked <= 1000))
      throw new Ec2Error('InvalidParameterValue', `MaxResults must be between 5 and 1000, got ${max}`);
    n = Math.min(asked, env.pageCap);
  }
  const from = env.pageTokens.offset(action, p);
  const slice = items.slice(from, from + n);
  return from + n < items.length ? { items: slice, nextToken: env.pageTokens.issue(action, p, from + n) } : { items: slice };
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
export interface ActEnv {
  /** The instance's real sshd public key (`type base64`), once its sshd has started. */
  hostKeyOf(i: Instance): string | undefined;
  /** Most items one Describe answer holds. */
  pageCap: number;
  /** The NextTokens this endpoint issued. */
  pageTokens: PageTokens;
}

/** Actions whose request has a DryRun member (the SDK's models): the host actions have none. */
export const DRY_RUN_ACTIONS: ReadonlySet<string> = new Set([
  'RunInstances',
  'TerminateInstances',
  'StopInstances',
  'StartInstances',
  'DescribeInstances',
  'CreateTags',
  'CreateImage',
  'DescribeImages',
  'CreateReplaceRootVolumeTask',
  'DescribeReplaceRootVolumeTasks',
  'GetConsoleOutput',
  'DescribeInstanceTypes',
  'DescribeAvailabilityZones',
]);

const instanceIds = (p: Params): string[] => requiredMembers(p, 'InstanceId').map(checkInstanceId);

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
export function act(cloud: Ec2MacCloud, action: string, p: Params, env: ActEnv): Record<string, XmlValue> {
  switch (action) {
    case 'AllocateHosts': {
      const ids = cloud.allocateHosts({
        instanceType: p.get('InstanceType') ?? undefined,
        instanceFamily: p.get('InstanceFamily') ?? undefined,
        zone: p.get('AvailabilityZone') || p.get('AvailabilityZoneId') || required(p, 'AvailabilityZone'),
        quantity: Number(required(p, 'Quantity')),
        autoPlacement: p.get('AutoPlacement') ?? undefined,
        hostRecovery: p.get('HostRecovery') ?? undefined,
        hostMaintenance: p.get('HostMaintenance') ?? undefined,
        clientToken: p.get('ClientToken') ?? undefined,
        tags: tagSpecs(p, 'dedicated-host'),
      });
      return { hostIdSet: ids };
    }
    case 'DescribeHosts': {
      const ids = optionalMembers(p, 'HostId').map(checkHostId);
      if (ids.length && p.get('MaxResults'))
        throw new Ec2Error(
          'InvalidParameterCombination',
          'You cannot specify the parameter hostIds and the parameter maxResults in the same request',
        );
      const all = ids.length ? ids.map((id) => cloud.host(id)) : cloud.listedHosts();
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
      const { items, nextToken } = page(hosts, 'DescribeHosts', p, env);
      return { hostSet: items.map((h) => hostXml(cloud, h)), nextToken };
    }
    case 'ReleaseHosts': {
      const r = cloud.releaseHosts(requiredMembers(p, 'HostId').map(checkHostId));
      return {
        successful: r.successful,
        unsuccessful: r.unsuccessful.map((u) => ({ error: { code: u.code, message: u.message }, resourceId: u.id })),
      };
    }
    case 'ModifyHosts': {
      const ok: string[] = [];
      const bad: XmlValue[] = [];
      for (const id of requiredMembers(p, 'HostId').map(checkHostId)) {
        const h = cloud.findHost(id);
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
      const [minCount, maxCount] = [required(p, 'MinCount'), required(p, 'MaxCount')];
      if (minCount !== '1' || maxCount !== '1') {
        throw new Ec2Error(
          'InvalidParameterValue',
          'A Mac Dedicated Host takes one instance: MinCount and MaxCount must be 1.',
        );
      }
      const i = cloud.runInstance({
        imageId: required(p, 'ImageId'),
        instanceType: p.get('InstanceType') ?? undefined,
        hostId: p.get('Placement.HostId') ? checkHostId(p.get('Placement.HostId')!) : undefined,
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
      const ids = optionalMembers(p, 'InstanceId').map(checkInstanceId);
      if (ids.length && p.get('MaxResults'))
        throw new Ec2Error(
          'InvalidParameterCombination',
          'The parameter instancesSet cannot be used with the parameter maxResults',
        );
      const all = ids.length ? ids.map((id) => cloud.instance(id)) : cloud.listedInstances();
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
      const { items, nextToken } = page(found, 'DescribeInstances', p, env);
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
      const i = cloud.instance(checkInstanceId(required(p, 'InstanceId')));
      const posted = consoleOf(cloud, i, env.hostKeyOf(i));
      if (!posted) return { instanceId: i.id };
      return {
        instanceId: i.id,
        timestamp: new Date(posted.postedAt * 1000),
        output: Buffer.from(posted.text).toString('base64'),
      };
    }
    case 'StopInstances':
      return { instancesSet: cloud.endInstances(instanceIds(p), 'stop').map(stateChange) };
    case 'TerminateInstances':
      return { instancesSet: cloud.endInstances(instanceIds(p), 'terminate').map(stateChange) };
    case 'StartInstances':
      return { instancesSet: cloud.startInstances(instanceIds(p)).map(stateChange) };
    case 'CreateTags': {
      const ids = requiredMembers(p, 'ResourceId').map(checkResourceId);
      const given = structs(p, 'Tag');
      if (given.length === 0) required(p, 'Tag');
      const tags = new Map(given.map((t) => [t.get('Key') ?? '', t.get('Value') ?? '']));
      cloud.createTags(ids, tags);
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
      const id = cloud.createImage(
        checkInstanceId(required(p, 'InstanceId')),
        required(p, 'Name'),
        tagSpecs(p, 'image'),
      );
      return { imageId: id };
    }
    case 'CreateReplaceRootVolumeTask': {
      const t = cloud.replaceRootVolume({
        instanceId: checkInstanceId(required(p, 'InstanceId')),
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
