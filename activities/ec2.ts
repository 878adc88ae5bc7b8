/**
 * EC2 Mac hosts: every call Marina makes to EC2, in one place. Each activity is
 * idempotent: ClientTokens derive from the host workflow's id and step, and every
 * mutation first looks for what an earlier attempt already did (check-then-act), so a
 * worker killed right after AllocateHosts or RunInstances was sent never makes a second
 * host or instance. Everything Marina owns is tagged with its pool and workflow id.
 */
import { createHash } from 'node:crypto';
import {
  AllocateHostsCommand,
  CreateReplaceRootVolumeTaskCommand,
  DescribeHostsCommand,
  DescribeReplaceRootVolumeTasksCommand,
  DescribeInstancesCommand,
  EC2Client,
  GetConsoleOutputCommand,
  ReleaseHostsCommand,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type EC2ServiceException,
  type Host,
  type Instance,
  type Tag,
  type _InstanceType,
} from '@aws-sdk/client-ec2';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { Client as SshClient } from 'ssh2';
import {
  HOST_NOT_FOUND,
  HOST_RELEASED,
  INSTANCE_NOT_FOUND,
  RELEASED_STATES,
  classifyEc2Error,
  isHostNotFound,
  isInstanceNotFound,
  notFoundIsFinal,
  type NotFoundStreak,
} from '../src/ec2mac/errors';
import { HOST_KEY_USER_DATA, consoleHostKeys, fingerprint } from '../src/ec2mac/console-host-keys';
import { DEFAULT_DEPLOYMENT } from '../src/config/schema';
import type { ActivityContext } from './context';

export const TAG_POOL = 'marina:pool';
export const TAG_WORKFLOW = 'marina:workflow';
export const TAG_DEPLOYMENT = 'marina:deployment';

/**
 * A ClientToken (≤ 64 ASCII) from the deployment, the workflow id and the step: the same step always sends the
 * same token. EC2 keys idempotency by token across the whole account, and two deployments have the same
 * workflow ids (`host/<pool>/…` in their own namespaces): without the deployment in it, staging's AllocateHosts
 * would be answered with production's host. The default deployment hashes as before the name existed, so hosts
 * in flight across the upgrade keep their tokens.
 */
export function clientToken(workflowId: string, step: string, deployment = DEFAULT_DEPLOYMENT): string {
  const scope = deployment === DEFAULT_DEPLOYMENT ? '' : `${deployment}\n`;
  return `marina-${createHash('sha256').update(`${scope}${workflowId}\n${step}`).digest('hex').slice(0, 40)}-${step}`.slice(
    0,
    64,
  );
}

function tags(deployment: string, pool: string, workflowId: string): Tag[] {
  return [
    { Key: TAG_DEPLOYMENT, Value: deployment },
    { Key: TAG_POOL, Value: pool },
    { Key: TAG_WORKFLOW, Value: workflowId },
  ];
}

/**
 * IMDSv2 only, and its answers die one hop out: a VM behind the host's NAT is a hop further than the host, so
 * it can get no session token, and IMDSv1 (a plain GET any SSRF can make) is off. The host's instance role and
 * user data stay out of a job's reach (README: the pf rule blocks the address outright as well).
 */
export const METADATA_OPTIONS = {
  HttpTokens: 'required',
  HttpPutResponseHopLimit: 1,
  HttpEndpoint: 'enabled',
} as const;

/** Turns an EC2 error into a Temporal failure: retryable unless no retry can succeed. */
function ec2Failure(e: unknown, what: string): never {
  const err = e as EC2ServiceException;
  const code = err.name ?? 'Unknown';
  const cls = classifyEc2Error(code);
  throw ApplicationFailure.create({
    message: `${what}: ${code}: ${err.message}`,
    type: code,
    nonRetryable: cls === 'fatal',
  });
}

const hostNotFound = (hostId: string, call: string, code = 'InvalidHostID.NotFound'): ApplicationFailure =>
  ApplicationFailure.create({
    message: `host ${hostId} no longer exists in EC2 (${call}: ${code})`,
    type: HOST_NOT_FOUND,
    nonRetryable: true,
    details: [{ hostId, call, code }],
  });

export interface HostStep {
  pool: string;
  workflowId: string;
}

export interface AllocatedHost {
  hostId: string;
  zone: string;
  /** Epoch seconds (EC2's clock). */
  allocatedAt: number;
}

export interface HostStatus {
  hostId: string;
  state: string;
  allocatedAt: number;
  instanceId?: string;
  /** EC2's ReleaseTime (epoch seconds) of a released host. */
  releasedAt?: number;
}

export interface InstanceEndpoint {
  instanceId: string;
  address: string;
  port: number;
  /** known_hosts line for the key the instance presented on first contact (trust on first use). */
  knownHostsLine: string;
}

const seconds = (d: Date | undefined): number => (d ? d.getTime() / 1000 : 0);

/**
 * EC2 is eventually consistent: a host id AllocateHosts has just returned can be unknown to DescribeHosts, and
 * missing from filtered listings, for a few seconds (AWS: describe again with backoff). allocateHost looks for
 * that long, within its 30 s start-to-close, before it gives the attempt up (retried: the ClientToken returns the
 * same host).
 */
export const NEW_HOST_VISIBLE_WITHIN_MS = 20_000;
/** A retried allocateHost looks for an earlier attempt's host this long before it allocates: it may not be listed yet. */
export const EARLIER_HOST_LISTED_WITHIN_MS = 6_000;

/** Looks again after 0.5 s, doubling to 4 s, until `within` ms have passed; undefined if `look` never finds it. */
async function lookWithBackoff<T>(within: number, look: () => Promise<T | undefined>): Promise<T | undefined> {
  const until = Date.now() + within;
  for (let wait = 500; ; wait = Math.min(wait * 2, 4000)) {
    const found = await look();
    if (found !== undefined) return found;
    if (Date.now() + wait > until) return undefined;
    await Context.current().sleep(wait);
  }
}

export function ec2Activities(ctx: ActivityContext) {
  const aws = (pool: string) => {
    const p = ctx.pool(pool);
    if (!p.aws) {
      throw ApplicationFailure.create({
        message: `pool "${pool}" has no aws section`,
        type: 'ConfigError',
        nonRetryable: true,
      });
    }
    return { pool: p, aws: p.aws, ec2: ctx.ec2(pool), deployment: ctx.config.deployment };
  };

  async function hostsByToken(ec2: EC2Client, tokens: string[]): Promise<Host[]> {
    const r = await ec2.send(
      new DescribeHostsCommand({
        Filter: [
          { Name: 'client-token', Values: tokens },
          { Name: 'state', Values: ['available', 'pending', 'under-assessment', 'permanent-failure'] },
        ],
      }),
    );
    return r.Hosts ?? [];
  }

  return {
    /**
     * AllocateHosts in the first zone that has a Mac for us. One token per zone; before
     * sending any, look for a host an earlier attempt made with any of them.
     */
    async allocateHost(step: HostStep): Promise<AllocatedHost> {
      const { aws: cfg, ec2, deployment } = aws(step.pool);
      const tokenFor = (zone: string) => clientToken(step.workflowId, `allocate-${zone}`, deployment);
      const byToken = async (): Promise<Host[] | undefined> => {
        const found = await hostsByToken(ec2, cfg.zones.map(tokenFor)).catch((e) => ec2Failure(e, 'DescribeHosts'));
        return found.length ? found : undefined;
      };
      // A retry: an earlier attempt may have allocated a host that listings do not show yet (its ClientToken is
      // per zone, so allocating again in another zone would make a second host). Look a while before allocating.
      const retry = Context.current().info.attempt > 1;
      const existing = (retry ? await lookWithBackoff(EARLIER_HOST_LISTED_WITHIN_MS, byToken) : await byToken()) ?? [];
      if (existing[0])
        return {
          hostId: existing[0].HostId!,
          zone: existing[0].AvailabilityZone!,
          allocatedAt: seconds(existing[0].AllocationTime),
        };
      const refusals: string[] = [];
      for (const zone of cfg.zones) {
        try {
          const r = await ec2.send(
            new AllocateHostsCommand({
              InstanceType: cfg.instanceType,
              AvailabilityZone: zone,
              Quantity: 1,
              AutoPlacement: 'off',
              HostRecovery: 'off',
              HostMaintenance: 'off',
              ClientToken: tokenFor(zone),
              TagSpecifications: [
                { ResourceType: 'dedicated-host', Tags: tags(deployment, step.pool, step.workflowId) },
              ],
            }),
          );
          const hostId = r.HostIds![0]!;
          const described = await lookWithBackoff(NEW_HOST_VISIBLE_WITHIN_MS, async () => {
            try {
              return (await ec2.send(new DescribeHostsCommand({ HostIds: [hostId] }))).Hosts?.[0];
            } catch (e) {
              if (isHostNotFound((e as EC2ServiceException).name)) return undefined; // not propagated yet
              throw e;
            }
          });
          if (!described) {
            throw ApplicationFailure.create({
              message: `host ${hostId} was allocated in ${zone} but DescribeHosts has not known it for ${NEW_HOST_VISIBLE_WITHIN_MS / 1000} s (EC2 is eventually consistent): looking again`,
              type: 'InvalidHostID.NotFound',
            });
          }
          return { hostId, zone, allocatedAt: seconds(described.AllocationTime) };
        } catch (e) {
          if (e instanceof ApplicationFailure) throw e;
          const code = (e as EC2ServiceException).name;
          if (classifyEc2Error(code) === 'next-zone') {
            refusals.push(`${zone}: ${code}`);
            continue;
          }
          ec2Failure(e, `AllocateHosts in ${zone}`);
        }
      }
      // Every zone is out of Mac hosts now: retry later (Temporal backs off).
      throw ApplicationFailure.create({
        message: `no zone has a ${cfg.instanceType} host: ${refusals.join('; ')}`,
        type: 'InsufficientHostCapacity',
      });
    },

    /**
     * The host's state as EC2 lists it (`released` included: the caller decides). A host EC2 does not know
     * fails with a non-retryable `HostNotFound`.
     */
    async describeHost(ref: { pool: string; hostId: string }): Promise<HostStatus> {
      const { ec2 } = aws(ref.pool);
      let h: Host | undefined;
      try {
        h = (await ec2.send(new DescribeHostsCommand({ HostIds: [ref.hostId] }))).Hosts?.[0];
      } catch (e) {
        const code = (e as EC2ServiceException).name;
        if (isHostNotFound(code)) throw hostNotFound(ref.hostId, 'DescribeHosts', code);
        ec2Failure(e, 'DescribeHosts');
      }
      if (!h) throw hostNotFound(ref.hostId, 'DescribeHosts', 'no such host listed');
      return {
        hostId: ref.hostId,
        state: h.State!,
        allocatedAt: seconds(h.AllocationTime),
        instanceId: h.Instances?.[0]?.InstanceId,
        ...(h.ReleaseTime ? { releasedAt: seconds(h.ReleaseTime) } : {}),
      };
    },

    /** Polls until the host is `available` (a new host, or one whose scrub is over); heartbeats its state. */
    async waitHostAvailable(ref: { pool: string; hostId: string; pollMs: number }): Promise<HostStatus> {
      const { ec2 } = aws(ref.pool);
      for (;;) {
        let h: Host | undefined;
        try {
          h = (await ec2.send(new DescribeHostsCommand({ HostIds: [ref.hostId] }))).Hosts?.[0];
          if (!h) throw hostNotFound(ref.hostId, 'DescribeHosts', 'no such host listed');
        } catch (e) {
          if (e instanceof ApplicationFailure) throw e;
          const code = (e as EC2ServiceException).name;
          if (isHostNotFound(code)) throw hostNotFound(ref.hostId, 'DescribeHosts', code);
          if (classifyEc2Error(code) === 'fatal') ec2Failure(e, 'DescribeHosts');
        }
        // A host whose instance is still stopping is listed `available` with the instance on it: the scrub
        // has not even begun (src/ec2mac/machine.ts, `stopping`). Available means available and empty.
        if (h?.State === 'available' && !(h.Instances?.length ?? 0)) {
          return {
            hostId: ref.hostId,
            state: 'available',
            allocatedAt: seconds(h.AllocationTime),
            instanceId: h.Instances?.[0]?.InstanceId,
          };
        }
        if (h?.State && RELEASED_STATES.has(h.State)) {
          throw ApplicationFailure.create({
            message: `host ${ref.hostId} is ${h.State} in EC2`,
            type: HOST_RELEASED,
            nonRetryable: true,
            details: [{ hostId: ref.hostId, state: h.State, releasedAt: seconds(h.ReleaseTime) }],
          });
        }
        if (h?.State === 'permanent-failure') {
          throw ApplicationFailure.create({
            message: `host ${ref.hostId} is ${h.State}`,
            type: 'HostFailed',
            nonRetryable: true,
          });
        }
        Context.current().heartbeat(h?.State ?? 'unknown');
        await Context.current().sleep(ref.pollMs);
      }
    },

    /** RunInstances on the host, or the instance an earlier attempt of this step launched. */
    async launchInstance(step: HostStep & { hostId: string; generation: number }): Promise<string> {
      const { aws: cfg, ec2, deployment } = aws(step.pool);
      const token = clientToken(step.workflowId, `run-${step.generation}`, deployment);
      try {
        const seen = await ec2.send(
          new DescribeInstancesCommand({ Filters: [{ Name: 'client-token', Values: [token] }] }),
        );
        const live = (seen.Reservations ?? [])
          .flatMap((r) => r.Instances ?? [])
          .find((i) => i.State?.Name !== 'terminated');
        if (live) return live.InstanceId!;
        const r = await ec2.send(
          new RunInstancesCommand({
            ImageId: cfg.imageId,
            InstanceType: cfg.instanceType as _InstanceType,
            MinCount: 1,
            MaxCount: 1,
            ClientToken: token,
            Placement: { Tenancy: 'host', HostId: step.hostId, Affinity: 'host' },
            MetadataOptions: METADATA_OPTIONS,
            ...(cfg.hostKeyVerification === 'console'
              ? { UserData: Buffer.from(HOST_KEY_USER_DATA).toString('base64') }
              : {}),
            TagSpecifications: [{ ResourceType: 'instance', Tags: tags(deployment, step.pool, step.workflowId) }],
          }),
        );
        return r.Instances![0]!.InstanceId!;
      } catch (e) {
        const code = (e as EC2ServiceException).name;
        if (isHostNotFound(code)) throw hostNotFound(step.hostId, 'RunInstances', code);
        ec2Failure(e, `RunInstances on ${step.hostId}`);
      }
    },

    /**
     * Waits for the instance to run and answer SSH, heartbeating its progress, and returns where to reach it with
     * the host key it presented (pinned from then on). Under `hostKeyVerification: console` the key is pinned only
     * once the instance's console shows it; a console showing other keys fails `HostKeyMismatch` (not retried: the
     * answer at the address is not the instance), and a console that shows no keys within
     * `consoleKeyTimeoutSeconds` of SSH answering fails `HostKeyUnverified`. Either way nothing logs in to it.
     */
    async waitInstanceReady(ref: {
      pool: string;
      instanceId: string;
      pollMs: number;
      /** The workflow has seen this instance described already (it served): not-found is final at once. */
      seen?: boolean;
    }): Promise<InstanceEndpoint> {
      const { pool, aws: cfg, ec2 } = aws(ref.pool);
      const port = pool.ssh.port ?? 22;
      let seen = ref.seen === true;
      // When SSH first answered with no key on the console yet (EC2 seconds), kept across attempts in heartbeats.
      const before = Context.current().info.heartbeatDetails as { consoleSince?: number; since?: number } | undefined;
      let consoleSince = typeof before?.consoleSince === 'number' ? before.consoleSince : undefined;
      // An instance that served (seen) is waited for again after a root-volume replacement rebooted it: its launch,
      // hours or days ago, says nothing of when SSH is due, so the SSH bound counts from this wait's first look
      // (EC2 seconds, kept across attempts in heartbeats). A new instance's counts from its launch.
      let since = typeof before?.since === 'number' ? before.since : undefined;
      let waitingFor: string | undefined;
      const missing: NotFoundStreak = { count: 0 };
      for (;;) {
        let inst: Instance | undefined;
        try {
          const r = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [ref.instanceId] }));
          inst = r.Reservations?.[0]?.Instances?.[0];
          if (inst) {
            seen = true;
            missing.count = 0;
            missing.firstMs = undefined;
          }
        } catch (e) {
          const code = (e as EC2ServiceException).name;
          // A new instance id can be unknown for a while (eventual consistency): final only by the not-found rule.
          if (isInstanceNotFound(code) && notFoundIsFinal(seen, missing, Date.now())) {
            throw ApplicationFailure.create({
              message: `instance ${ref.instanceId} no longer exists in EC2 (DescribeInstances: ${code})`,
              type: INSTANCE_NOT_FOUND,
              nonRetryable: true,
            });
          }
          if (classifyEc2Error(code) === 'fatal') ec2Failure(e, 'DescribeInstances');
        }
        const state = inst?.State?.Name;
        if (state === 'terminated' || state === 'shutting-down' || state === 'stopped' || state === 'stopping') {
          throw ApplicationFailure.create({
            message: `instance ${ref.instanceId} is ${state}`,
            type: 'InstanceLost',
            nonRetryable: true,
          });
        }
        const address = inst?.PrivateIpAddress;
        waitingFor = state;
        if (state === 'running' && address) {
          const key = await hostKey(address, port);
          if (key) {
            const endpoint = {
              instanceId: ref.instanceId,
              address,
              port,
              knownHostsLine: `${port === 22 ? address : `[${address}]:${port}`} ${key}`,
            };
            if (cfg.hostKeyVerification === 'first-use') return endpoint;
            const printed = await consoleKeys(ec2, ref.instanceId);
            if (printed?.includes(key)) return endpoint;
            const now = ctx.ec2Now(ref.pool) ?? Date.now() / 1000;
            consoleSince ??= now;
            const late = now - consoleSince > cfg.consoleKeyTimeoutSeconds;
            // A new instance's console holds only its own boot: other keys there are final. After a root-volume
            // replacement (seen) it still shows the old disk's keys until the new boot prints: wait out the bound.
            if (printed && (!ref.seen || late)) {
              throw ApplicationFailure.create({
                message:
                  `instance ${ref.instanceId} at ${address}:${port} offered SSH host key ${fingerprint(key)}, but its ` +
                  `console shows ${printed.length ? printed.map(fingerprint).join(', ') : 'no key'}: not trusted ` +
                  '(something else answers at its address)',
                type: 'HostKeyMismatch',
                nonRetryable: true,
                details: [{ instanceId: ref.instanceId, offered: fingerprint(key), printed: printed.map(fingerprint) }],
              });
            }
            if (late) {
              throw ApplicationFailure.create({
                message:
                  `instance ${ref.instanceId} answers SSH (key ${fingerprint(key)}) but its console has shown no SSH ` +
                  `host keys ${Math.round(now - consoleSince)} s later (aws.consoleKeyTimeoutSeconds): the key cannot ` +
                  'be verified, so it is not trusted',
                type: 'HostKeyUnverified',
                nonRetryable: true,
              });
            }
            waitingFor = 'console-pending';
          }
        }
        // Only an instance that does not answer is given up on: a worker that was down a while finds it answering.
        const launched = inst?.LaunchTime ? inst.LaunchTime.getTime() / 1000 : undefined;
        const now = ctx.ec2Now(ref.pool);
        if (ref.seen && now !== undefined) since ??= now;
        const from = ref.seen ? since : launched;
        if (
          waitingFor !== 'console-pending' &&
          from !== undefined &&
          now !== undefined &&
          now - from > pool.aws!.sshReadyTimeoutSeconds
        ) {
          throw ApplicationFailure.create({
            message: `instance ${ref.instanceId} has not answered SSH ${Math.round((now - from) / 60)} min after ${ref.seen ? 'its reboot onto a new root volume' : 'launch'} (aws.sshReadyTimeoutSeconds)`,
            type: 'InstanceNeverAnswered',
            nonRetryable: true,
          });
        }
        Context.current().heartbeat({
          state: waitingFor ?? 'unknown',
          consoleSince,
          ...(since !== undefined ? { since } : {}),
        });
        await Context.current().sleep(ref.pollMs);
      }
    },

    /**
     * CreateReplaceRootVolumeTask: the instance restarts on a fresh copy of its launch root
     * volume, with no scrub. `step` numbers the replacements of one host, so a retried call
     * sends the same ClientToken and gets the same task back.
     */
    async replaceRootVolume(ref: HostStep & { instanceId: string; step: number }): Promise<string> {
      const { ec2, deployment } = aws(ref.pool);
      try {
        const r = await ec2.send(
          new CreateReplaceRootVolumeTaskCommand({
            InstanceId: ref.instanceId,
            DeleteReplacedRootVolume: true,
            ClientToken: clientToken(ref.workflowId, `rrv-${ref.step}`, deployment),
            TagSpecifications: [
              { ResourceType: 'replace-root-volume-task', Tags: tags(deployment, ref.pool, ref.workflowId) },
            ],
          }),
        );
        return r.ReplaceRootVolumeTask!.ReplaceRootVolumeTaskId!;
      } catch (e) {
        const code = (e as EC2ServiceException).name;
        // Only a serving instance (seen running) has its root volume replaced: not-found is final.
        if (isInstanceNotFound(code)) {
          throw ApplicationFailure.create({
            message: `instance ${ref.instanceId} no longer exists in EC2 (CreateReplaceRootVolumeTask: ${code})`,
            type: INSTANCE_NOT_FOUND,
            nonRetryable: true,
          });
        }
        ec2Failure(e, `CreateReplaceRootVolumeTask on ${ref.instanceId}`);
      }
    },

    /** Polls the replacement task until it succeeds (then the instance boots and SSH comes back); heartbeats its state. */
    async waitRootVolumeReplaced(ref: { pool: string; taskId: string; pollMs: number }): Promise<void> {
      const { ec2 } = aws(ref.pool);
      for (;;) {
        let state: string | undefined;
        try {
          const r = await ec2.send(
            new DescribeReplaceRootVolumeTasksCommand({ ReplaceRootVolumeTaskIds: [ref.taskId] }),
          );
          state = r.ReplaceRootVolumeTasks?.[0]?.TaskState;
        } catch (e) {
          if (classifyEc2Error((e as EC2ServiceException).name) === 'fatal')
            ec2Failure(e, 'DescribeReplaceRootVolumeTasks');
        }
        if (state === 'succeeded') return;
        if (state === 'failed' || state === 'failed-detached') {
          throw ApplicationFailure.create({
            message: `root-volume replacement ${ref.taskId} ${state}`,
            type: 'RootVolumeReplacementFailed',
            nonRetryable: true,
          });
        }
        Context.current().heartbeat(state ?? 'unknown');
        await Context.current().sleep(ref.pollMs);
      }
    },

    /**
     * Terminates the instance (AWS then scrubs the host). Done already is fine. An instance EC2 does not know
     * answers `not-found`, after a DescribeInstances confirms it: AWS warns that a TerminateInstances not-found
     * does not prove the instance is gone (a new id may not have propagated), so an instance DescribeInstances
     * still lists is terminated again by a retry. The workflow decides whether not-found is final.
     */
    async terminateInstance(ref: { pool: string; instanceId: string }): Promise<'terminated' | 'not-found'> {
      const { ec2 } = aws(ref.pool);
      try {
        await ec2.send(new TerminateInstancesCommand({ InstanceIds: [ref.instanceId] }));
        return 'terminated';
      } catch (e) {
        if (!isInstanceNotFound((e as EC2ServiceException).name)) ec2Failure(e, `TerminateInstances ${ref.instanceId}`);
      }
      let listed: Instance | undefined;
      try {
        const r = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [ref.instanceId] }));
        listed = r.Reservations?.[0]?.Instances?.[0];
      } catch (e) {
        if (isInstanceNotFound((e as EC2ServiceException).name)) return 'not-found';
        ec2Failure(e, 'DescribeInstances');
      }
      if (!listed) return 'not-found';
      if (listed.State?.Name === 'terminated') return 'terminated';
      throw ApplicationFailure.create({
        message: `TerminateInstances said ${ref.instanceId} does not exist, DescribeInstances lists it ${listed.State?.Name ?? '(no state)'}: terminating again`,
        type: 'InvalidInstanceID.NotFound',
      });
    },

    /**
     * ReleaseHosts. A host under 24 h is refused by AWS per host; this returns when it may
     * be released instead of failing, so the workflow sleeps exactly that long.
     */
    async releaseHost(ref: { pool: string; hostId: string }): Promise<
      | {
          released: true;
          /** This call did not release it: EC2 no longer knows the host, or lists it released already. */
          gone?: 'not-found' | 'released';
        }
      | { released: false; code: string; retryAt?: number }
    > {
      const { ec2 } = aws(ref.pool);
      let r;
      try {
        r = await ec2.send(new ReleaseHostsCommand({ HostIds: [ref.hostId] }));
      } catch (e) {
        ec2Failure(e, `ReleaseHosts ${ref.hostId}`);
      }
      if (r.Successful?.includes(ref.hostId)) return { released: true };
      const u = r.Unsuccessful?.find((x) => x.ResourceId === ref.hostId);
      const code = u?.Error?.Code ?? 'Unknown';
      if (isHostNotFound(code)) {
        // Released already: by an earlier attempt whose answer was lost, or outside Marina. Either way nothing
        // is left to release (and nothing is billed): not-found is final here, never retried.
        const d = await ec2.send(new DescribeHostsCommand({ HostIds: [ref.hostId] })).catch(() => undefined);
        const state = d?.Hosts?.[0]?.State;
        if (state === undefined) return { released: true, gone: 'not-found' };
        if (RELEASED_STATES.has(state)) return { released: true, gone: 'released' };
      }
      const after = /any time after (\S+?Z)\./.exec(u?.Error?.Message ?? '');
      if (!after) return { released: false, code };
      const retryAt = Date.parse(after[1]!) / 1000;
      const now = ctx.ec2Now(ref.pool);
      return {
        released: false,
        code,
        retryAt,
        ...(now !== undefined ? { waitSeconds: Math.max(0, retryAt - now) } : {}),
      };
    },
  };
}

/**
 * The host keys the instance printed to its console, or undefined while it has printed none (EC2 posts console
 * output minutes after boot, and answers an empty Output until then). `Latest` asks for the live buffer where
 * EC2 keeps one (Nitro); where EC2 refuses it, the buffered output is asked for instead.
 */
async function consoleKeys(ec2: EC2Client, instanceId: string): Promise<string[] | undefined> {
  for (const latest of [true, false]) {
    try {
      const r = await ec2.send(new GetConsoleOutputCommand({ InstanceId: instanceId, Latest: latest }));
      return consoleHostKeys(r.Output);
    } catch (e) {
      const code = (e as EC2ServiceException).name;
      if (classifyEc2Error(code) !== 'fatal') return undefined; // throttled, 5xx, not yet visible: look again
      if (!latest) ec2Failure(e, 'GetConsoleOutput');
    }
  }
  return undefined;
}

/** The host key an SSH server presents, as `type base64`, or undefined if it does not answer yet. */
function hostKey(address: string, port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const c = new SshClient();
    let key: string | undefined;
    const done = (): void => {
      c.end();
      resolve(key);
    };
    c.on('error', done);
    c.on('close', done);
    c.on('handshake', () => done());
    c.connect({
      host: address,
      port,
      username: 'probe',
      readyTimeout: 5000,
      hostVerifier: (k: Buffer) => {
        const typeLen = k.readUInt32BE(0);
        key = `${k.subarray(4, 4 + typeLen).toString()} ${k.toString('base64')}`;
        return true;
      },
      // No credentials: the handshake (and so the key) is all this needs.
      authHandler: () => false,
    } as never);
  });
}
