/** What activities share on one worker: config, SSH connections, S3 and Temporal clients. */
import { recordEc2Error } from '../src/telemetry/metrics';
import { readFileSync } from 'node:fs';
import type { S3Client } from '@aws-sdk/client-s3';
import { EC2Client } from '@aws-sdk/client-ec2';
import { s3ClientFor } from '../src/config/s3';
import { ApplicationFailure } from '@temporalio/common';
import type { Client } from '@temporalio/client';
import type { LoadedConfig } from '../src/config/load';
import { findPool, hypervisorOf, logsLocation, resolveConfigPath } from '../src/config/load';
import type { HostConfig, PoolConfig, S3Location } from '../src/config/schema';
import { readSecret, SecretError } from '../src/config/secrets';
import { parseKnownHosts, type KnownHostEntry } from './ssh/known-hosts';
import { isVmHostKey } from '../src/images/vm-host-key';
import { invalidInput } from './inputs';
import { SshPool, type SshConnection, type SshTarget } from './ssh/connection';
import { TartDriver } from './hypervisor/tart';
import { ParallelsDriver } from './hypervisor/parallels';
import { poolStateQuery, poolWorkflowId } from '../workflows/definitions';
import type { HypervisorDriver } from './hypervisor/driver';

export interface HostRef {
  pool: string;
  host: string;
}

/**
 * TCP connect plus SSH handshake to a Mac host. Below the health check's 15 s bound, so a host
 * that accepts TCP and never speaks SSH is reported with the SSH error, not a bare timeout.
 */
export const HOST_HANDSHAKE_TIMEOUT_MS = 10_000;

export interface VmRef extends HostRef {
  vm: string;
  jobId: string;
  /** The SSH host key the VM's image records (`<type> <base64>`): the only key the VM may answer with. */
  vmHostKey?: string;
}

/**
 * What a VM may answer with: its image's key on any address (the address is the host's private one and
 * changes with every boot). Undefined trusts any key, which only a pool set to `vm.hostKeys: any` allows.
 */
export function vmKnownHosts(pool: PoolConfig, ref: VmRef): KnownHostEntry[] | undefined {
  if (ref.vmHostKey !== undefined && !isVmHostKey(ref.vmHostKey))
    throw invalidInput('vmHostKey', ref.vmHostKey, 'an SSH public key, "<type> <base64>"');
  if (ref.vmHostKey) {
    const [keyType, key] = ref.vmHostKey.split(' ');
    return [{ patterns: ['*'], keyType: keyType!, key: Buffer.from(key!, 'base64'), revoked: false }];
  }
  if (pool.vm.hostKeys === 'any') return undefined;
  throw ApplicationFailure.create({
    message: `${ref.vm}: its image records no VM host key, and pool ${pool.name} trusts only pinned keys (vm.hostKeys: pinned); push the image again with --vm-host-key, or set vm.hostKeys: any for this pool`,
    type: 'VmHostKeyUnknown',
    nonRetryable: true,
  });
}

export class ActivityContext {
  readonly ssh = new SshPool();
  private readonly s3Clients = new Map<string, S3Client>();
  private readonly ec2Clients = new Map<string, EC2Client>();
  private readonly ec2Clocks = new Map<string, number>();

  constructor(
    readonly config: LoadedConfig,
    readonly temporal?: Client,
  ) {}

  pool(name: string): PoolConfig {
    const pool = findPool(this.config, name);
    if (!pool) {
      throw ApplicationFailure.create({
        message: `pool "${name}" is not in this worker's config (${this.config.path})`,
        type: 'ConfigError',
        nonRetryable: true,
      });
    }
    return pool;
  }

  hostConfig(ref: HostRef): { pool: PoolConfig; host: HostConfig } {
    const pool = this.pool(ref.pool);
    const host = pool.hosts.find((h) => h.name === ref.host);
    if (!host) {
      throw ApplicationFailure.create({
        message: `host "${ref.host}" is not in pool "${ref.pool}" of ${this.config.path}`,
        type: 'UnknownHost',
        nonRetryable: true,
      });
    }
    return { pool, host };
  }

  secret(ref: Parameters<typeof readSecret>[1], what: string): string {
    try {
      return readSecret(this.config, ref, what);
    } catch (e) {
      if (e instanceof SecretError)
        throw ApplicationFailure.create({ message: e.message, type: 'UnknownSecret', nonRetryable: true });
      throw e;
    }
  }

  hostTarget(ref: HostRef): SshTarget {
    const { pool, host } = this.hostConfig(ref);
    const ssh = { ...pool.ssh, ...host.ssh };
    const knownHostsFile = resolveConfigPath(this.config, ssh.knownHosts!.file);
    let knownHosts;
    try {
      knownHosts = parseKnownHosts(readFileSync(knownHostsFile, 'utf8'));
    } catch (e) {
      throw ApplicationFailure.create({
        message: `cannot read known_hosts ${knownHostsFile}: ${(e as Error).message}`,
        type: 'ConfigError',
        nonRetryable: true,
      });
    }
    return {
      label: `host ${ref.pool}/${host.name}`,
      host: host.address,
      port: ssh.port ?? 22,
      username: ssh.user ?? 'admin',
      privateKey: ssh.privateKey ? this.secret(ssh.privateKey, `ssh key of host ${host.name}`) : undefined,
      knownHosts,
      readyTimeoutMs: HOST_HANDSHAKE_TIMEOUT_MS,
    };
  }

  /** `readyTimeoutMs` bounds the handshake if a connection must be opened (a live one is reused as is). */
  async hostConnection(ref: HostRef, opts: { readyTimeoutMs?: number } = {}): Promise<SshConnection> {
    const pool = this.pool(ref.pool);
    const dynamic = pool.aws && !pool.hosts.some((h) => h.name === ref.host);
    // A live connection to an EC2 host is reused without asking the pool for its address again: a host's
    // watcher checks it every few seconds, and each ask would be a query on the pool workflow.
    const live = dynamic ? await this.ssh.live(`host ${ref.pool}/${ref.host}`) : undefined;
    if (live) return live;
    const target = dynamic ? await this.dynamicHostTarget(ref) : this.hostTarget(ref);
    return this.ssh.get(opts.readyTimeoutMs ? { ...target, readyTimeoutMs: opts.readyTimeoutMs } : target);
  }

  /**
   * A host Marina allocated is not in the config: its address and pinned key are in the
   * pool workflow's state, put there by the host workflow when the host became ready.
   */
  async dynamicHostTarget(ref: HostRef): Promise<SshTarget> {
    const pool = this.pool(ref.pool);
    if (!this.temporal) {
      throw ApplicationFailure.create({
        message: 'resolving an EC2 host needs a Temporal client',
        type: 'ConfigError',
        nonRetryable: true,
      });
    }
    const state = await this.temporal.workflow.getHandle(poolWorkflowId(ref.pool)).query(poolStateQuery);
    const d = state.hosts.find((h) => h.name === ref.host)?.dynamic;
    if (!d) {
      throw ApplicationFailure.create({
        message: `host "${ref.host}" is not (or no longer) in pool "${ref.pool}"`,
        type: 'UnknownHost',
        nonRetryable: true,
      });
    }
    return {
      label: `host ${ref.pool}/${ref.host}`,
      host: d.address,
      port: d.port,
      username: pool.ssh.user ?? 'ec2-user',
      privateKey: pool.ssh.privateKey ? this.secret(pool.ssh.privateKey, `ssh key of pool ${pool.name}`) : undefined,
      knownHosts: parseKnownHosts(d.knownHostsLine),
      readyTimeoutMs: HOST_HANDSHAKE_TIMEOUT_MS,
    };
  }

  async driver(ref: HostRef, opts: { readyTimeoutMs?: number } = {}): Promise<HypervisorDriver> {
    const conn = await this.hostConnection(ref, opts);
    // Per host: a pool may mix Tart and Parallels hosts.
    return hypervisorOf(this.pool(ref.pool), ref.host) === 'parallels'
      ? new ParallelsDriver(conn)
      : new TartDriver(conn);
  }

  /**
   * SSH into a VM through its host: the VM's address is private to the host, and
   * trust in the VM's key is anchored in the host's pinned key.
   */
  async vmConnection(ref: VmRef, ip: string): Promise<SshConnection> {
    const pool = this.pool(ref.pool);
    const host = await this.hostConnection(ref);
    const target: SshTarget = {
      label: `vm ${ref.vm} on ${ref.host}`,
      host: ip,
      port: pool.vm.port,
      username: pool.vm.user,
      privateKey: pool.vm.privateKey ? this.secret(pool.vm.privateKey, `VM ssh key of pool ${pool.name}`) : undefined,
      knownHosts: vmKnownHosts(pool, ref),
    };
    return this.ssh.get(target, () => host.forward(ip, pool.vm.port));
  }

  /** The EC2 client of an AWS-backed pool (one per pool; credentials resolved by reference here). */
  ec2(poolName: string): EC2Client {
    let client = this.ec2Clients.get(poolName);
    if (!client) {
      const aws = this.pool(poolName).aws;
      if (!aws) {
        throw ApplicationFailure.create({
          message: `pool "${poolName}" has no aws section`,
          type: 'ConfigError',
          nonRetryable: true,
        });
      }
      const c = aws.credentials;
      client = new EC2Client({
        region: aws.region,
        endpoint: aws.endpoint,
        credentials: c
          ? {
              accessKeyId: this.secret(c.accessKeyId, 'EC2 access key id'),
              secretAccessKey: this.secret(c.secretAccessKey, 'EC2 secret access key'),
              sessionToken: c.sessionToken ? this.secret(c.sessionToken, 'EC2 session token') : undefined,
            }
          : undefined,
      });
      // Every EC2 error, by operation and code, for `marina_ec2_errors` (retries included: each is a call).
      client.middlewareStack.add(
        (next, context) => async (args) => {
          try {
            return await next(args);
          } catch (e) {
            recordEc2Error(context.commandName ?? 'unknown', (e as Error).name || 'unknown');
            throw e;
          }
        },
        { step: 'deserialize', name: 'marinaEc2ErrorMetrics' },
      );
      // EC2's answers carry its clock in the Date header; keep the latest, so waits on
      // EC2's rules (the 24 h minimum) are measured on EC2's clock, not the worker's.
      client.middlewareStack.add(
        (next) => async (args) => {
          const out = await next(args);
          const date = (out.response as { headers?: Record<string, string> }).headers?.date;
          if (date && !Number.isNaN(Date.parse(date))) this.ec2Clocks.set(poolName, Date.parse(date) / 1000);
          return out;
        },
        { step: 'deserialize', name: 'marinaEc2Clock' },
      );
      this.ec2Clients.set(poolName, client);
    }
    return client;
  }

  /** EC2's time (epoch seconds) at its latest answer for this pool, if any. */
  ec2Now(poolName: string): number | undefined {
    return this.ec2Clocks.get(poolName);
  }

  s3(location: S3Location): S3Client {
    // Keyed by everything but bucket and prefix: the same endpoint with other credentials is another client.
    const { bucket: _b, prefix: _p, ...identity } = location;
    const key = JSON.stringify(identity);
    let client = this.s3Clients.get(key);
    if (!client) {
      try {
        client = s3ClientFor(this.config, location);
      } catch (e) {
        if (e instanceof SecretError)
          throw ApplicationFailure.create({ message: e.message, type: 'UnknownSecret', nonRetryable: true });
        throw e;
      }
      this.s3Clients.set(key, client);
    }
    return client;
  }

  get imageStoreLocation(): S3Location {
    return this.config.imageStore;
  }

  get logsLocation(): S3Location {
    return logsLocation(this.config);
  }

  async close(): Promise<void> {
    await this.ssh.closeAll();
    for (const c of this.s3Clients.values()) c.destroy();
    for (const c of this.ec2Clients.values()) c.destroy();
  }
}
