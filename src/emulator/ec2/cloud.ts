/**
 * The emulated EC2 Mac cloud: dedicated hosts, instances, images and root-volume tasks,
 * moved through time by the EC2 Mac model (src/ec2mac/model.ts). Transitions are lazy:
 * every read first settles whatever the clock says has happened. No I/O here; the server
 * (server.ts) speaks the wire protocol and starts SSH servers for instances that boot.
 */
import { createHash } from 'node:crypto';
import { BILLING_MODES, DEFAULT_TIMINGS, billedSeconds, type BillingMode, type MacTimings } from '../../ec2mac/model';
import {
  allocateMac,
  awsHostState,
  macCommand,
  macForget,
  macSettle,
  releaseCheck,
  scrubbedSoFar,
  type MacHost,
} from '../../ec2mac/machine';
import { seeded, type Uniform } from '../../ec2mac/random';
import { Ec2Error, type Tags } from './wire';

/** The EC2 Mac machine's timings (stop and terminate both take `stoppingSeconds`), and the emulator's own. */
export interface EmulatorTimings extends MacTimings {
  /** How long a terminated instance stays listed. */
  terminatedVisibleSeconds: number;
  /** CreateImage: `pending` → `available`. */
  imageSeconds: number;
  /** SSH answers → EC2 posts the boot's console output (GetConsoleOutput answers an empty Output until then). */
  consolePostSeconds: number;
}

export const DEFAULT_EMULATOR_TIMINGS: EmulatorTimings = {
  ...DEFAULT_TIMINGS,
  // AllocateHosts answers with hosts `available` at once in practice; callers launch on them straight away.
  allocationSeconds: 0,
  terminatedVisibleSeconds: 3600,
  imageSeconds: 10 * 60,
  consolePostSeconds: 3 * 60,
};

export interface ZoneSpec {
  name: string;
  id: string;
  /** Mac hosts this zone has for the account (InsufficientHostCapacity beyond). */
  capacity: number;
}

export interface CloudOptions {
  region: string;
  zones: ZoneSpec[];
  /** Hosts of a family the account may hold, scrubbing ones included (HostLimitExceeded beyond). */
  quotaPerFamily: number;
  timings: EmulatorTimings;
  seed: number;
}

export const MAC_TYPES: Readonly<
  Record<string, { vcpus: number; memoryGiB: number; arch: 'x86_64_mac' | 'arm64_mac' }>
> = {
  'mac1.metal': { vcpus: 12, memoryGiB: 32, arch: 'x86_64_mac' },
  'mac2.metal': { vcpus: 8, memoryGiB: 16, arch: 'arm64_mac' },
  'mac2-m2.metal': { vcpus: 8, memoryGiB: 24, arch: 'arm64_mac' },
  'mac2-m2pro.metal': { vcpus: 12, memoryGiB: 32, arch: 'arm64_mac' },
  'mac-m4.metal': { vcpus: 10, memoryGiB: 24, arch: 'arm64_mac' },
  'mac-m4pro.metal': { vcpus: 14, memoryGiB: 48, arch: 'arm64_mac' },
};

const family = (type: string): string => type.split('.')[0]!;

/** Virtual time in epoch seconds: real time × speed, plus any explicit advance. */
export class EmulatorClock {
  private realStart = Date.now();
  private base: number;
  constructor(
    private speedFactor = 1,
    start = Date.now() / 1000,
  ) {
    this.base = start;
  }
  now(): number {
    return this.base + ((Date.now() - this.realStart) / 1000) * this.speedFactor;
  }
  get speed(): number {
    return this.speedFactor;
  }
  setSpeed(speed: number): void {
    this.base = this.now();
    this.realStart = Date.now();
    this.speedFactor = speed;
  }
  advance(seconds: number): void {
    this.base += seconds;
  }
}

export type HostState =
  'available' | 'pending' | 'under-assessment' | 'permanent-failure' | 'released' | 'released-permanent-failure';
export type InstanceState = 'pending' | 'running' | 'stopping' | 'stopped' | 'shutting-down' | 'terminated';
export const INSTANCE_CODES: Record<InstanceState, number> = {
  pending: 0,
  running: 16,
  'shutting-down': 32,
  terminated: 48,
  stopping: 64,
  stopped: 80,
};

export interface Host {
  id: string;
  instanceType: string;
  zone: ZoneSpec;
  state: HostState;
  allocatedAt: number;
  releasedAt?: number;
  clientToken?: string;
  autoPlacement: string;
  hostRecovery: string;
  hostMaintenance: string;
  tags: Tags;
  /** The host's one live (not terminated) instance. */
  instanceId?: string;
  /** The EC2 Mac machine (src/ec2mac/machine.ts): the host's life, timings and 24 h rule. */
  mac: MacHost;
}

export interface Instance {
  id: string;
  hostId: string;
  imageId: string;
  instanceType: string;
  state: InstanceState;
  /** When the current state ends, for timed states. */
  until?: number;
  launchedAt: number;
  /** When SSH answers (while running). */
  sshAt?: number;
  clientToken: string;
  tags: Tags;
  privateIp: string;
  terminatedAt?: number;
  /** Bumped by each root-volume replacement: the SSH server restarts with a fresh disk. */
  generation: number;
  /** RunInstances' UserData, decoded. */
  userData?: string;
  metadataOptions: MetadataOptions;
}

/** RunInstances' MetadataOptions as EC2 applies them (its defaults where not given). */
export interface MetadataOptions {
  httpTokens: 'optional' | 'required';
  httpPutResponseHopLimit: number;
  httpEndpoint: 'enabled' | 'disabled';
}

export const DEFAULT_METADATA_OPTIONS: MetadataOptions = {
  httpTokens: 'optional',
  httpPutResponseHopLimit: 1,
  httpEndpoint: 'enabled',
};

/**
 * Test control of what instances print to the console: for the instance with this id, or every instance
 * carrying this tag (so a test can aim at an instance not launched yet), a host key to print instead of the
 * instance's own, or nothing at all.
 */
export interface ConsoleRule {
  instanceId?: string;
  tag?: { key: string; value: string };
  hostKey?: string;
  empty?: boolean;
}

export interface Image {
  id: string;
  name: string;
  arch: 'x86_64_mac' | 'arm64_mac';
  state: 'pending' | 'available';
  availableAt: number;
  createdAt: number;
  owner: string;
  tags: Tags;
  sourceInstance?: string;
}

export interface RootVolumeTask {
  id: string;
  instanceId: string;
  state: 'pending' | 'in-progress' | 'succeeded' | 'failed';
  startedAt: number;
  doneAt: number;
  clientToken: string;
  imageId?: string;
  snapshotId?: string;
  deleteReplaced: boolean;
}

export type StateChange = { id: string; previous: InstanceState; current: InstanceState };

const hostBusy = (hostId: string): Ec2Error =>
  new Ec2Error(
    'InsufficientCapacityOnHost',
    `There is not enough capacity on the Dedicated Host ${hostId} to launch or start the instance.`,
  );

interface TokenRecord {
  action: string;
  fingerprint: string;
  result: string[];
}

export const ACCOUNT_ID = '123456789012';

export const SEEDED_IMAGES: Omit<Image, 'availableAt' | 'createdAt' | 'tags'>[] = [
  {
    id: 'ami-0a1b2c3d4e5f60715',
    name: 'amzn-ec2-macos-15.7-arm64',
    arch: 'arm64_mac',
    state: 'available',
    owner: 'amazon',
  },
  {
    id: 'ami-0a1b2c3d4e5f60714',
    name: 'amzn-ec2-macos-14.8-arm64',
    arch: 'arm64_mac',
    state: 'available',
    owner: 'amazon',
  },
  {
    id: 'ami-0a1b2c3d4e5f60713',
    name: 'amzn-ec2-macos-15.7-x86_64',
    arch: 'x86_64_mac',
    state: 'available',
    owner: 'amazon',
  },
];

/** What the ledger says about one host: billed time under each reading, scrubbing apart. */
export interface LedgerEntry {
  hostId: string;
  instanceType: string;
  zone: string;
  state: HostState;
  allocatedAt: string;
  releasedAt?: string;
  tags: Record<string, string>;
  allocatedSeconds: number;
  scrubbingSeconds: number;
  billedSeconds: Record<BillingMode, number>;
}

export interface Ledger {
  now: string;
  hosts: LedgerEntry[];
  stillAllocated: string[];
  billedHours: Record<BillingMode, number>;
  scrubbingHours: number;
}

export interface LaunchParams {
  imageId: string;
  instanceType?: string;
  hostId?: string;
  tenancy?: string;
  clientToken: string;
  tags: Tags;
  userData?: string;
  metadataOptions?: Partial<MetadataOptions>;
}

export class Ec2MacCloud {
  readonly hosts = new Map<string, Host>();
  /** Hosts released outside the caller and dropped from every listing (vanishHost): EC2 answers not-found. */
  readonly forgotten = new Map<string, Host>();
  readonly instances = new Map<string, Instance>();
  readonly images = new Map<string, Image>();
  readonly rootVolumeTasks = new Map<string, RootVolumeTask>();
  /** Latest first: the first rule that matches an instance decides its console. */
  consoleRules: ConsoleRule[] = [];
  private readonly tokens = new Map<string, TokenRecord>();
  private readonly random: Uniform;
  private counter = 0;
  private ipCounter = 0;
  /** Instances get addresses `<ipPrefix>.N`; the server picks a prefix per emulator so two never collide. */
  ipPrefix = '127.78.0';

  constructor(
    readonly options: CloudOptions,
    readonly clock: EmulatorClock,
  ) {
    this.random = seeded(options.seed);
    const now = clock.now();
    for (const img of SEEDED_IMAGES)
      this.images.set(img.id, { ...img, availableAt: now, createdAt: now - 86400 * 30, tags: new Map() });
  }

  private newId(prefix: string): string {
    const h = createHash('sha256').update(`${this.options.seed}/${prefix}/${++this.counter}`).digest('hex');
    return `${prefix}-0${h.slice(0, 16)}`;
  }

  /** Applies every transition whose time has come, in time order per resource. */
  settle(): void {
    const now = this.clock.now();
    for (const i of this.instances.values()) {
      if (i.until === undefined || i.until > now) continue;
      const at = i.until;
      i.until = undefined;
      if (i.state === 'pending') {
        i.state = 'running';
        i.sshAt = at + this.options.timings.sshReadySeconds;
      } else if (i.state === 'stopping') {
        i.state = 'stopped';
      } else if (i.state === 'shutting-down') {
        i.state = 'terminated';
        i.terminatedAt = at;
        const h = this.hosts.get(i.hostId)!;
        if (h.instanceId === i.id) h.instanceId = undefined;
      }
    }
    for (const i of [...this.instances.values()]) {
      if (i.state === 'terminated' && now - i.terminatedAt! > this.options.timings.terminatedVisibleSeconds)
        this.instances.delete(i.id);
    }
    for (const h of this.hosts.values()) {
      macSettle(h.mac, now, this.options.timings, this.random);
      // AWS's side states (assessment, failure) outrank what the machine would list.
      if (h.state === 'available' || h.state === 'pending') h.state = awsHostState(h.mac.state) as HostState;
    }
    for (const img of this.images.values())
      if (img.state === 'pending' && img.availableAt <= now) img.state = 'available';
    for (const t of this.rootVolumeTasks.values()) {
      if (t.state === 'pending' && now >= t.startedAt + 5) t.state = 'in-progress';
      if (t.state === 'in-progress' && now >= t.doneAt) {
        t.state = 'succeeded';
        const i = this.instances.get(t.instanceId);
        if (i) i.sshAt = t.doneAt;
      }
    }
  }

  /** Idempotency: a token seen before returns its result, or refuses different parameters. */
  private idempotent(action: string, token: string | undefined, fingerprint: string, make: () => string[]): string[] {
    if (!token) return make();
    if (token.length > 64)
      throw new Ec2Error('InvalidClientToken', 'The client token must be at most 64 ASCII characters.');
    const key = `${action}/${token}`;
    const seen = this.tokens.get(key);
    if (seen) {
      if (seen.fingerprint !== fingerprint) {
        throw new Ec2Error(
          'IdempotentParameterMismatch',
          `The client token ${token} was used with different parameters.`,
        );
      }
      return seen.result;
    }
    const result = make();
    this.tokens.set(key, { action, fingerprint, result });
    return result;
  }

  private zone(name: string | undefined): ZoneSpec {
    const z = this.options.zones.find((x) => x.name === name || x.id === name);
    if (!z) {
      throw new Ec2Error(
        'InvalidParameterValue',
        `Invalid availability zone: [${name ?? ''}] (this region has ${this.options.zones.map((x) => x.name).join(', ')})`,
      );
    }
    return z;
  }

  private held = (h: Host): boolean => h.state !== 'released' && h.state !== 'released-permanent-failure';

  allocateHosts(p: {
    instanceType?: string;
    instanceFamily?: string;
    zone?: string;
    quantity: number;
    autoPlacement?: string;
    hostRecovery?: string;
    hostMaintenance?: string;
    clientToken?: string;
    tags: Tags;
  }): string[] {
    this.settle();
    if (p.instanceType && p.instanceFamily) {
      throw new Ec2Error('InvalidParameterCombination', 'You cannot specify both InstanceType and InstanceFamily.');
    }
    const type = p.instanceType ?? Object.keys(MAC_TYPES).find((t) => family(t) === p.instanceFamily);
    if (!type)
      throw new Ec2Error('MissingParameter', 'The request must contain the parameter InstanceType or InstanceFamily.');
    if (!MAC_TYPES[type])
      throw new Ec2Error(
        'UnsupportedHostConfiguration',
        `The requested configuration is currently not supported: ${type} (this emulator models Mac hosts).`,
      );
    const zone = this.zone(p.zone);
    if (!(p.quantity >= 1)) throw new Ec2Error('InvalidParameterValue', 'Quantity must be at least 1.');
    const fingerprint = JSON.stringify([
      type,
      zone.name,
      p.quantity,
      p.autoPlacement,
      p.hostRecovery,
      p.hostMaintenance,
      [...p.tags],
    ]);
    return this.idempotent('AllocateHosts', p.clientToken, fingerprint, () => {
      const held = [...this.hosts.values()].filter(this.held);
      if (
        held.filter((h) => family(h.instanceType) === family(type)).length + p.quantity >
        this.options.quotaPerFamily
      ) {
        throw new Ec2Error(
          'HostLimitExceeded',
          `You have reached the limit of Dedicated Hosts of family ${family(type)} (${this.options.quotaPerFamily}).`,
        );
      }
      if (held.filter((h) => h.zone.name === zone.name).length + p.quantity > zone.capacity) {
        throw new Ec2Error(
          'InsufficientHostCapacity',
          `There is not enough capacity to fulfill your Dedicated Host request in ${zone.name}.`,
          500,
        );
      }
      const now = this.clock.now();
      const ids: string[] = [];
      for (let i = 0; i < p.quantity; i++) {
        const id = this.newId('h');
        const mac = allocateMac(now, this.options.timings);
        macSettle(mac, now, this.options.timings, this.random);
        this.hosts.set(id, {
          id,
          instanceType: type,
          zone,
          state: awsHostState(mac.state) as HostState,
          allocatedAt: now,
          mac,
          clientToken: p.clientToken,
          autoPlacement: p.autoPlacement ?? 'off',
          hostRecovery: p.hostRecovery ?? 'off',
          hostMaintenance: p.hostMaintenance ?? 'on',
          tags: new Map(p.tags),
        });
        ids.push(id);
      }
      return ids;
    });
  }

  host(id: string): Host {
    this.settle();
    const h = this.hosts.get(id);
    if (!h) throw new Ec2Error('InvalidHostID.NotFound', `The host ID '${id}' does not exist`);
    return h;
  }

  releaseHosts(ids: string[]): { successful: string[]; unsuccessful: { id: string; code: string; message: string }[] } {
    this.settle();
    const now = this.clock.now();
    const out = { successful: [] as string[], unsuccessful: [] as { id: string; code: string; message: string }[] };
    for (const id of ids) {
      const h = this.hosts.get(id);
      if (!h || !this.held(h)) {
        out.unsuccessful.push({
          id,
          code: 'Client.InvalidHostID.NotFound',
          message: `The host ID '${id}' does not exist or is already released.`,
        });
        continue;
      }
      // A stopped instance still occupies its host (the machine sees only whether one runs).
      const stopped = h.instanceId !== undefined && this.instances.get(h.instanceId)?.state === 'stopped';
      const v = releaseCheck(h.mac, now, this.options.timings, id, h.instanceType);
      if (!v.ok || stopped) {
        const occupied = {
          code: 'Client.InvalidHost.Occupied',
          message: `Dedicated host '${id}' cannot be released as it is occupied.`,
        };
        out.unsuccessful.push({ id, ...(v.ok ? occupied : { code: v.code, message: v.message }) });
        continue;
      }
      macForget(h.mac, now);
      h.state = h.state === 'permanent-failure' ? 'released-permanent-failure' : 'released';
      h.releasedAt = now;
      out.successful.push(id);
    }
    return out;
  }

  runInstance(p: LaunchParams): Instance {
    this.settle();
    const fingerprint = JSON.stringify([
      p.imageId,
      p.instanceType,
      p.hostId,
      p.tenancy,
      [...p.tags],
      p.userData,
      p.metadataOptions,
    ]);
    const [id] = this.idempotent('RunInstances', p.clientToken, fingerprint, () => [this.launch(p)]);
    const i = this.instances.get(id!);
    if (!i || i.state === 'terminated') {
      throw new Ec2Error(
        'IdempotentInstanceTerminated',
        `The instance ${id} launched with client token ${p.clientToken} has been terminated.`,
      );
    }
    return i;
  }

  private launch(p: LaunchParams): string {
    const img = this.images.get(p.imageId);
    if (!img) throw new Ec2Error('InvalidAMIID.NotFound', `The image id '[${p.imageId}]' does not exist`);
    if (img.state !== 'available')
      throw new Ec2Error('InvalidAMIID.Unavailable', `The image ${p.imageId} is not available yet.`);
    if (p.tenancy !== 'host') {
      throw new Ec2Error(
        'InvalidParameterValue',
        'Mac instances run only on Dedicated Hosts: set Placement.Tenancy=host.',
      );
    }
    let host: Host | undefined;
    if (p.hostId) {
      host = this.host(p.hostId);
    } else {
      host = [...this.hosts.values()].find(
        (h) =>
          h.state === 'available' &&
          !h.instanceId &&
          h.autoPlacement === 'on' &&
          (!p.instanceType || h.instanceType === p.instanceType),
      );
      if (!host)
        throw new Ec2Error(
          'InsufficientHostCapacity',
          'You do not have a host with a matching configuration and sufficient capacity.',
          500,
        );
    }
    const type = p.instanceType ?? host.instanceType;
    if (type !== host.instanceType) {
      throw new Ec2Error(
        'UnsupportedInstanceTypeOnHost',
        `Instance type ${type} is not supported on host ${host.id} (${host.instanceType}).`,
      );
    }
    if (MAC_TYPES[type]!.arch !== img.arch) {
      throw new Ec2Error(
        'InvalidParameterValue',
        `The architecture '${img.arch}' of image ${img.id} does not match instance type ${type}.`,
      );
    }
    const now = this.clock.now();
    if (
      host.state !== 'available' ||
      host.instanceId ||
      !macCommand(host.mac, 'run-instance', now, this.options.timings).ok
    ) {
      throw hostBusy(host.id);
    }
    const id = this.newId('i');
    const n = ++this.ipCounter;
    this.instances.set(id, {
      id,
      hostId: host.id,
      imageId: img.id,
      instanceType: type,
      state: 'pending',
      until: host.mac.until,
      launchedAt: now,
      clientToken: p.clientToken,
      tags: new Map(p.tags),
      privateIp: `${this.ipPrefix}.${(n % 250) + 1}`,
      generation: 0,
      ...(p.userData !== undefined ? { userData: p.userData } : {}),
      metadataOptions: { ...DEFAULT_METADATA_OPTIONS, ...p.metadataOptions },
    });
    host.instanceId = id;
    return id;
  }

  instance(id: string): Instance {
    this.settle();
    const i = this.instances.get(id);
    if (!i) throw new Ec2Error('InvalidInstanceID.NotFound', `The instance ID '${id}' does not exist`);
    return i;
  }

  /** Applies a state change to each instance, answering [previous, current] per instance as EC2 does. */
  private changeStates(ids: string[], change: (i: Instance, now: number) => void): StateChange[] {
    return ids.map((id) => {
      const i = this.instance(id);
      const previous = i.state;
      change(i, this.clock.now());
      return { id, previous, current: i.state };
    });
  }

  /** Terminate or stop; returns [previous, current] states per instance. */
  endInstances(ids: string[], how: 'stop' | 'terminate'): StateChange[] {
    return this.changeStates(ids, (i, now) => {
      const h = this.hosts.get(i.hostId)!;
      // Stop or terminate, the machine stops the instance (stoppingSeconds), then the host scrubs.
      const runs = i.state === 'running' || i.state === 'pending';
      if (how === 'terminate') {
        if (i.state === 'terminated' || i.state === 'shutting-down') return;
        if (i.state === 'stopping') return; // already on its way down; it ends when the stop does
        if (runs && macCommand(h.mac, 'terminate', now, this.options.timings).ok) {
          i.state = 'shutting-down';
          i.until = h.mac.until;
        } else {
          // Stopped: the host scrubbed already; the instance just goes.
          i.state = 'terminated';
          i.terminatedAt = now;
          i.until = undefined;
          if (h.instanceId === i.id) h.instanceId = undefined;
        }
      } else if (runs) {
        macCommand(h.mac, 'terminate', now, this.options.timings);
        i.state = 'stopping';
        i.until = h.mac.until;
      } else if (i.state === 'stopping' || i.state === 'stopped') {
        return;
      } else {
        throw new Ec2Error(
          'IncorrectInstanceState',
          `The instance '${i.id}' is not in a state from which it can be stopped.`,
        );
      }
      i.sshAt = undefined;
    });
  }

  startInstances(ids: string[]): StateChange[] {
    return this.changeStates(ids, (i, now) => {
      if (i.state === 'running' || i.state === 'pending') return;
      if (i.state !== 'stopped') {
        throw new Ec2Error(
          'IncorrectInstanceState',
          `The instance '${i.id}' is not in a state from which it can be started.`,
        );
      }
      const h = this.hosts.get(i.hostId)!;
      if (h.state !== 'available' || !macCommand(h.mac, 'run-instance', now, this.options.timings).ok)
        throw hostBusy(h.id);
      i.state = 'pending';
      i.until = h.mac.until;
    });
  }

  createTags(ids: string[], tags: Tags): void {
    this.settle();
    for (const id of ids) {
      const r = this.hosts.get(id) ?? this.instances.get(id) ?? this.images.get(id);
      if (!r) {
        const kind = id.startsWith('h-')
          ? 'InvalidHostID.NotFound'
          : id.startsWith('i-')
            ? 'InvalidInstanceID.NotFound'
            : 'InvalidID';
        throw new Ec2Error(kind, `The ID '${id}' does not exist`);
      }
      for (const [k, v] of tags) r.tags.set(k, v);
    }
  }

  createImage(instanceId: string, name: string, tags: Tags): string {
    const i = this.instance(instanceId);
    if (i.state !== 'running' && i.state !== 'stopped')
      throw new Ec2Error('IncorrectInstanceState', `The instance '${instanceId}' is not running or stopped.`);
    if ([...this.images.values()].some((x) => x.name === name))
      throw new Ec2Error('InvalidAMIName.Duplicate', `AMI name ${name} is already in use by another AMI`);
    const now = this.clock.now();
    const id = this.newId('ami');
    this.images.set(id, {
      id,
      name,
      arch: MAC_TYPES[i.instanceType]!.arch,
      state: 'pending',
      availableAt: now + this.options.timings.imageSeconds,
      createdAt: now,
      owner: ACCOUNT_ID,
      tags: new Map(tags),
      sourceInstance: instanceId,
    });
    return id;
  }

  replaceRootVolume(p: {
    instanceId: string;
    imageId?: string;
    snapshotId?: string;
    deleteReplaced: boolean;
    clientToken: string;
  }): RootVolumeTask {
    this.settle();
    const fingerprint = JSON.stringify([p.instanceId, p.imageId, p.snapshotId, p.deleteReplaced]);
    const [id] = this.idempotent('CreateReplaceRootVolumeTask', p.clientToken, fingerprint, () => {
      const i = this.instance(p.instanceId);
      if (i.state !== 'running')
        throw new Ec2Error(
          'IncorrectInstanceState',
          `The instance '${p.instanceId}' must be running to replace its root volume.`,
        );
      if (p.imageId && !this.images.has(p.imageId))
        throw new Ec2Error('InvalidAMIID.NotFound', `The image id '[${p.imageId}]' does not exist`);
      const now = this.clock.now();
      macCommand(this.hosts.get(i.hostId)!.mac, 'replace-root', now, this.options.timings);
      const t: RootVolumeTask = {
        id: this.newId('replacevol'),
        instanceId: i.id,
        state: 'pending',
        startedAt: now,
        doneAt: now + this.options.timings.rootVolumeReplacementSeconds,
        clientToken: p.clientToken,
        imageId: p.imageId,
        snapshotId: p.snapshotId,
        deleteReplaced: p.deleteReplaced,
      };
      // The instance reboots onto a fresh root volume: SSH goes away until the task is done.
      i.sshAt = undefined;
      i.generation++;
      this.rootVolumeTasks.set(t.id, t);
      return [t.id];
    });
    return this.rootVolumeTasks.get(id!)!;
  }

  /** The console rule that decides an instance's console, if any. */
  consoleRule(i: Instance): ConsoleRule | undefined {
    return this.consoleRules.find(
      (r) => r.instanceId === i.id || (r.tag !== undefined && i.tags.get(r.tag.key) === r.tag.value),
    );
  }

  /** Fault injection: AWS moves a host into a side state (its instance keeps running, as AWS warns). */
  setHostHealth(id: string, state: 'under-assessment' | 'permanent-failure' | 'available'): void {
    const h = this.host(id);
    if (!this.held(h)) throw new Ec2Error('InvalidHostState', `Host ${id} is released.`);
    h.state = state;
  }

  /**
   * Fault injection: the host is released behind the caller's back, as when someone runs `aws ec2
   * release-hosts` (after terminating its instance) or AWS reclaims it. Its instance is terminated at once and
   * the host is `released`. Unless `keepListed`, both then drop out of every listing, as released hosts and
   * terminated instances do after a while on AWS: DescribeHosts answers `InvalidHostID.NotFound`,
   * DescribeInstances `InvalidInstanceID.NotFound`, ReleaseHosts `Client.InvalidHostID.NotFound`. The ledger
   * keeps the host (it was billed until now).
   */
  vanishHost(id: string, keepListed = false): { hostId: string; instanceId?: string; listed: boolean } {
    const h = this.host(id);
    const now = this.clock.now();
    const instanceId = h.instanceId;
    const i = instanceId ? this.instances.get(instanceId) : undefined;
    if (i && i.state !== 'terminated') {
      i.state = 'terminated';
      i.terminatedAt = now;
      i.until = i.sshAt = undefined;
    }
    h.instanceId = undefined;
    if (this.held(h)) {
      macForget(h.mac, now);
      h.state = h.state === 'permanent-failure' ? 'released-permanent-failure' : 'released';
      h.releasedAt = now;
    }
    if (!keepListed) {
      this.hosts.delete(id);
      this.forgotten.set(id, h);
      for (const x of [...this.instances.values()]) if (x.hostId === id) this.instances.delete(x.id);
    }
    return { hostId: id, ...(instanceId ? { instanceId } : {}), listed: keepListed };
  }

  ledger(): Ledger {
    this.settle();
    const now = this.clock.now();
    const billedHours = Object.fromEntries(BILLING_MODES.map((m) => [m, 0])) as Record<BillingMode, number>;
    let scrubbingHours = 0;
    const hosts: LedgerEntry[] = [];
    for (const h of [...this.hosts.values(), ...this.forgotten.values()]) {
      const end = h.releasedAt ?? now;
      const scrubbing = scrubbedSoFar(h.mac, now);
      const allocated = end - h.allocatedAt;
      const billed = Object.fromEntries(
        BILLING_MODES.map((m) => [m, billedSeconds(allocated, scrubbing, m)]),
      ) as Record<BillingMode, number>;
      for (const m of BILLING_MODES) billedHours[m] += billed[m] / 3600;
      scrubbingHours += scrubbing / 3600;
      hosts.push({
        hostId: h.id,
        instanceType: h.instanceType,
        zone: h.zone.name,
        state: h.state,
        allocatedAt: new Date(h.allocatedAt * 1000).toISOString(),
        ...(h.releasedAt ? { releasedAt: new Date(h.releasedAt * 1000).toISOString() } : {}),
        tags: Object.fromEntries(h.tags),
        allocatedSeconds: allocated,
        scrubbingSeconds: scrubbing,
        billedSeconds: billed,
      });
    }
    return {
      now: new Date(now * 1000).toISOString(),
      hosts,
      stillAllocated: hosts
        .filter((h) => h.state !== 'released' && h.state !== 'released-permanent-failure')
        .map((h) => h.hostId),
      billedHours,
      scrubbingHours,
    };
  }
}
