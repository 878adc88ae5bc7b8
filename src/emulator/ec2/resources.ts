/**
 * What the emulated EC2 Mac cloud holds: its resources' records, the Mac types it serves, the images it
 * starts with, and its options. Types and constants only; cloud.ts moves the records through time.
 */
import { DEFAULT_TIMINGS, type MacTimings } from '../../ec2mac/model';
import type { MacHost } from '../../ec2mac/machine';
import type { Tags } from './wire';

/** The EC2 Mac machine's timings (stop and terminate both take `stoppingSeconds`), and the emulator's own. */
export interface EmulatorTimings extends MacTimings {
  /** How long a terminated instance stays listed. */
  terminatedVisibleSeconds: number;
  /** CreateImage: `pending` → `available`. */
  imageSeconds: number;
  /** SSH answers → EC2 posts the boot's console output (GetConsoleOutput answers an empty Output until then). */
  consolePostSeconds: number;
  /**
   * A root-volume replacement task `succeeded` → the rebooted instance answers SSH again. 0 (SSH with the task's
   * end) unless a test asks: AWS documents the reboot, not when macOS is up again after it.
   */
  rootVolumeBootSeconds: number;
}

export const DEFAULT_EMULATOR_TIMINGS: EmulatorTimings = {
  ...DEFAULT_TIMINGS,
  // AllocateHosts answers with hosts `available` at once in practice; callers launch on them straight away.
  allocationSeconds: 0,
  terminatedVisibleSeconds: 3600,
  imageSeconds: 10 * 60,
  consolePostSeconds: 3 * 60,
  rootVolumeBootSeconds: 0,
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
  /** Eventual consistency (off unless set): how long a new id stays unknown to every call but its creator's. */
  consistency?: Consistency;
}

/**
 * EC2 is eventually consistent: an id RunInstances or AllocateHosts has just returned can be unknown to the
 * next calls ("might not be immediately visible", AWS's eventual-consistency page). In real milliseconds:
 * propagation inside AWS does not follow the emulator's compressed clock.
 */
export interface Consistency {
  /** A new host answers InvalidHostID.NotFound (and is left out of listings) for this long. */
  hostMs: number;
  /** A new instance answers InvalidInstanceID.NotFound (and is left out of listings) for this long. */
  instanceMs: number;
}

export const NO_CONSISTENCY_DELAY: Consistency = { hostMs: 0, instanceMs: 0 };

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


export const family = (type: string): string => type.split('.')[0]!;

/** A host the account still holds (not released). */
export const isHeld = (h: { state: string }): boolean => h.state !== 'released' && h.state !== 'released-permanent-failure';

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
  /** Real time (ms) of the allocation: eventual consistency hides the id for a while after it. */
  createdMs: number;
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
  /** Real time (ms) of the launch: eventual consistency hides the id for a while after it. */
  createdMs: number;
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
  state: 'pending' | 'in-progress' | 'succeeded' | 'failing' | 'failed';
  /** Fault injection: this task fails (the instance reboots on its original root volume, as AWS does). */
  fails: boolean;
  startedAt: number;
  doneAt: number;
  clientToken: string;
  imageId?: string;
  snapshotId?: string;
  deleteReplaced: boolean;
}

export type StateChange = { id: string; previous: InstanceState; current: InstanceState };

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
