/**
 * The emulated EC2 Mac cloud: dedicated hosts, instances, images and root-volume tasks,
 * moved through time by the EC2 Mac machine (src/ec2mac/machine.ts). Transitions are lazy:
 * every read first settles whatever the clock says has happened. No I/O here; the server
 * (server.ts) speaks the wire protocol and starts SSH servers for instances that boot.
 * Records and options: resources.ts; the clock: clock.ts; the bill: ledger.ts.
 */
import { createHash } from 'node:crypto';
import { allocateMac, awsHostState, macCommand, macForget, macSettle, releaseCheck } from '../../ec2mac/machine';
import { restorableSeeded, type RestorableUniform } from '../../ec2mac/random';
import type { EmulatorClock } from './clock';
import { idempotent, type TokenRecords } from './idempotency';
import { ledgerOf, type Ledger } from './ledger';
import { setHostHealth, vanishHost, type HostHealth, type VanishedHost } from './outside';
import {
  DEFAULT_METADATA_OPTIONS,
  MAC_TYPES,
  SEEDED_IMAGES,
  ACCOUNT_ID,
  family,
  isHeld,
  type CloudOptions,
  type Consistency,
  type ConsoleRule,
  type Host,
  type HostState,
  type Image,
  type Instance,
  type LaunchParams,
  type RootVolumeTask,
  type StateChange,
  type ZoneSpec,
} from './resources';
import { Ec2Error, type Tags } from './wire';

// Kept for importers of the cloud module (tests, the CLI): the records and the clock live in their own files.
export * from './resources';
export { EmulatorClock } from './clock';
export type { Ledger, LedgerEntry } from './ledger';

const hostBusy = (hostId: string): Ec2Error =>
  new Ec2Error(
    'InsufficientCapacityOnHost',
    `There is not enough capacity on the Dedicated Host ${hostId} to launch or start the instance.`,
  );

/** Everything a call can change, copied: DryRun runs the call on the cloud, then puts this back. */
interface Snapshot {
  maps: unknown;
  counter: number;
  ipCounter: number;
  random: unknown;
  failRootVolumeTasks: number;
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
  /** Fault injection: this many next root-volume replacement tasks fail (admin API). */
  failRootVolumeTasks = 0;
  /** Eventual consistency now in force (options.consistency, or the admin API). */
  consistency: Consistency;
  private readonly tokens: TokenRecords = new Map();
  private readonly random: RestorableUniform;
  private readonly draw: () => number;
  private counter = 0;
  private ipCounter = 0;
  /** Instances get addresses `<ipPrefix>.N`; the server picks a prefix per emulator so two never collide. */
  ipPrefix = '127.78.0';

  constructor(
    readonly options: CloudOptions,
    readonly clock: EmulatorClock,
  ) {
    this.random = restorableSeeded(options.seed);
    this.draw = () => this.random.draw();
    this.consistency = { ...(options.consistency ?? { hostMs: 0, instanceMs: 0 }) };
    const now = clock.now();
    for (const img of SEEDED_IMAGES)
      this.images.set(img.id, { ...img, availableAt: now, createdAt: now - 86400 * 30, tags: new Map() });
  }

  private snapshot(): Snapshot {
    return {
      maps: structuredClone([
        this.hosts,
        this.forgotten,
        this.instances,
        this.images,
        this.rootVolumeTasks,
        this.tokens,
      ]),
      counter: this.counter,
      ipCounter: this.ipCounter,
      random: this.random.save(),
      failRootVolumeTasks: this.failRootVolumeTasks,
    };
  }

  private restore(s: Snapshot): void {
    const saved = s.maps as Map<string, unknown>[];
    const live = [this.hosts, this.forgotten, this.instances, this.images, this.rootVolumeTasks, this.tokens] as Map<
      string,
      unknown
    >[];
    live.forEach((m, n) => {
      m.clear();
      for (const [k, v] of saved[n]!) m.set(k, v);
    });
    // Hosts share their zone with the options (capacity is counted by zone name; keep the one object).
    for (const h of [...this.hosts.values(), ...this.forgotten.values()])
      h.zone = this.options.zones.find((z) => z.name === h.zone.name) ?? h.zone;
    this.counter = s.counter;
    this.ipCounter = s.ipCounter;
    this.random.restore(s.random);
    this.failRootVolumeTasks = s.failRootVolumeTasks;
  }

  /**
   * DryRun: whether the call would succeed, without its effect. It runs on the cloud as it is and everything
   * it changed is put back, so the verdict is the real call's (an unknown id, a busy host, a bad state).
   */
  dryRun<T>(call: () => T): T {
    this.settle(); // what the clock has done by now is no effect of the call: keep it
    const before = this.snapshot();
    try {
      return call();
    } finally {
      this.restore(before);
    }
  }

  /** Whether an id is visible yet to calls other than the one that made it (eventual consistency). */
  private visible(r: { createdMs: number }, delayMs: number): boolean {
    const seen = delayMs <= 0 || Date.now() - r.createdMs >= delayMs;
    if (!seen) this.hiddenLookups++;
    return seen;
  }

  /** Lookups and listings that met a record not propagated yet (eventual consistency): chaos runs' proof. */
  hiddenLookups = 0;

  /** The host by id as EC2's other calls see it: undefined while unknown (not made, or not propagated yet). */
  findHost(id: string): Host | undefined {
    const h = this.hosts.get(id);
    return h && this.visible(h, this.consistency.hostMs) ? h : undefined;
  }

  /** The instance by id as EC2's other calls see it: undefined while unknown (not made, or not propagated yet). */
  findInstance(id: string): Instance | undefined {
    const i = this.instances.get(id);
    return i && this.visible(i, this.consistency.instanceMs) ? i : undefined;
  }

  /** Hosts a listing shows: a new one only once it has propagated. */
  listedHosts(): Host[] {
    this.settle();
    return [...this.hosts.values()].filter((h) => this.visible(h, this.consistency.hostMs));
  }

  /** Instances a listing shows: a new one only once it has propagated. */
  listedInstances(): Instance[] {
    this.settle();
    return [...this.instances.values()].filter((i) => this.visible(i, this.consistency.instanceMs));
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
      macSettle(h.mac, now, this.options.timings, this.draw);
      // AWS's side states (assessment, failure) outrank what the machine would list.
      if (h.state === 'available' || h.state === 'pending') h.state = awsHostState(h.mac.state) as HostState;
    }
    for (const img of this.images.values())
      if (img.state === 'pending' && img.availableAt <= now) img.state = 'available';
    for (const t of this.rootVolumeTasks.values()) {
      if (t.state === 'pending' && now >= t.startedAt + 5) t.state = t.fails ? 'failing' : 'in-progress';
      if ((t.state === 'in-progress' || t.state === 'failing') && now >= t.doneAt) {
        const i = this.instances.get(t.instanceId);
        t.state = t.state === 'failing' ? 'failed' : 'succeeded';
        if (i && i.state === 'running') {
          i.sshAt = t.doneAt + (t.state === 'succeeded' ? this.options.timings.rootVolumeBootSeconds : 0);
          // AWS reboots a failed task's instance on its original root volume: the old disk, keys and all.
          if (t.state === 'failed') i.generation--;
        }
      }
    }
  }

  /** Idempotency: a token seen before returns its result, or refuses different parameters (idempotency.ts). */
  private idempotent(action: string, token: string | undefined, fingerprint: string, make: () => string[]): string[] {
    return idempotent(this.tokens, action, token, fingerprint, make);
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

  private held = isHeld;

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
        macSettle(mac, now, this.options.timings, this.draw);
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
          createdMs: Date.now(),
        });
        ids.push(id);
      }
      return ids;
    });
  }

  host(id: string): Host {
    this.settle();
    const h = this.findHost(id);
    if (!h) throw new Ec2Error('InvalidHostID.NotFound', `The host ID '${id}' does not exist`);
    return h;
  }

  releaseHosts(ids: string[]): { successful: string[]; unsuccessful: { id: string; code: string; message: string }[] } {
    this.settle();
    const now = this.clock.now();
    const out = { successful: [] as string[], unsuccessful: [] as { id: string; code: string; message: string }[] };
    for (const id of ids) {
      const h = this.findHost(id);
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
      host = this.listedHosts().find(
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
      createdMs: Date.now(),
    });
    host.instanceId = id;
    return id;
  }

  instance(id: string): Instance {
    this.settle();
    const i = this.findInstance(id);
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
      const r = this.findHost(id) ?? this.findInstance(id) ?? this.images.get(id);
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
        fails: this.failRootVolumeTasks > 0,
      };
      if (t.fails) this.failRootVolumeTasks--;
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

  /** Fault injection: AWS moves a host into a side state (outside.ts). */
  setHostHealth(id: string, state: HostHealth): void {
    setHostHealth(this, id, state);
  }

  /** Fault injection: the host is released behind the caller's back (outside.ts). */
  vanishHost(id: string, keepListed = false): VanishedHost {
    return vanishHost(this, id, keepListed);
  }

  ledger(): Ledger {
    this.settle();
    return ledgerOf([...this.hosts.values(), ...this.forgotten.values()], this.clock.now());
  }
}
