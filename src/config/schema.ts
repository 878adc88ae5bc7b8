/** The one Marina config file (YAML), as a zod schema: every field documented here and in README. */
import { z } from 'zod';
import { BILLING_MODES } from '../ec2mac/model';
import { periodError } from '../policy/schedule';
import { DEFAULT_AFFINITY_SLACK } from '../policy/placement';
import { checkSecurity } from '../domain/security';
import { githubSchemas } from './github';

const name = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'use lower-case letters, digits, ".", "_" or "-" (at most 63)');

/**
 * A secret is only ever named, never written inline: config is passed around
 * and parts of it reach workflow inputs, so inline values could leak into history.
 */
export const secretRef = z.union(
  [
    z.object({ env: z.string().min(1, 'name the environment variable that holds the secret') }).strict(),
    z.object({ file: z.string().min(1, 'give the path of the file that holds the secret') }).strict(),
  ],
  {
    error: 'must be a reference: { env: VAR_NAME } or { file: /path/to/file }; inline secret values are refused',
  },
);
export type SecretRef = z.infer<typeof secretRef>;

/** GitHub Actions: the App and webhook (top level), each pool's runner labels (src/config/github.ts). */
const gh = githubSchemas(secretRef);

const fileRef = z.object({ file: z.string().min(1) }).strict();

const resources = z.record(
  name,
  z.number().nonnegative('resource amounts are non-negative numbers, e.g. vm: 2, cpu: 8'),
);
const labels = z.record(z.string().min(1), z.string());

const sshSettings = z
  .object({
    user: z.string().min(1).optional(),
    port: z.number().int().min(1).max(65535).optional(),
    privateKey: secretRef.optional(),
    /** OpenSSH known_hosts file that pins host keys; a mismatch fails the job without retry. */
    knownHosts: fileRef.optional(),
  })
  .strict();

/** Cirrus-style resource modifiers: `tart run` options handed to a job's VM when it takes a resource. */
const resourceModifiers = z.array(
  z
    .object({
      match: resources.refine((r) => Object.keys(r).length > 0, 'name the resources it matches, e.g. { gpu: 1 }'),
      run: z
        .array(z.string().regex(/^--[a-z]/, 'a `tart run` option, e.g. --disk=/dev/disk4 or --net-bridged=en1'))
        .min(1, 'list the `tart run` options it adds, e.g. ["--disk=/dev/disk4"]'),
    })
    .strict(),
);

/** Which hypervisor a host's VMs run on: Tart, or Parallels Desktop (`prlctl`). README "Parallels Desktop hosts". */
export const HYPERVISORS = ['tart', 'parallels'] as const;
export type Hypervisor = (typeof HYPERVISORS)[number];
const hypervisor = z.enum(HYPERVISORS, {
  error: 'must be "tart" or "parallels" (Parallels Desktop, driven with prlctl)',
});
/** macOS VMs one Mac may run at once, whatever the hypervisor: Apple's licence (Parallels enforces it too). */
export const MAX_MACOS_VMS_PER_HOST = 2;

const host = z
  .object({
    name,
    address: z.string().min(1, 'the host name or IP that the worker reaches over SSH'),
    /** This host's hypervisor, in place of the pool's (a pool may mix Tart and Parallels hosts). */
    hypervisor: hypervisor.optional(),
    ssh: sshSettings.optional(),
    resources: resources.optional(),
    labels: labels.optional(),
    /** This host's modifiers (its devices), in place of the pool's. */
    resourceModifiers: resourceModifiers.optional(),
  })
  .strict();

/** An AWS-backed pool: Marina allocates EC2 Mac dedicated hosts itself, one host workflow each. */
const awsPool = z
  .object({
    region: z.string().min(1).default('us-east-1'),
    /** EC2 endpoint; omit for AWS. Set to the emulator's (`marina ec2-emulator`) for local runs. */
    endpoint: z.url('must be a URL such as http://127.0.0.1:4599').optional(),
    credentials: z
      .object({ accessKeyId: secretRef, secretAccessKey: secretRef, sessionToken: secretRef.optional() })
      .strict()
      .optional(),
    instanceType: z.string().regex(/^mac[\w.-]*\.metal$/, 'an EC2 Mac instance type, e.g. mac2-m2.metal'),
    /** Availability zones, in order of preference: a zone out of Mac hosts falls back to the next. */
    zones: z.array(z.string().min(1)).min(1, 'list the availability zones in order of preference, e.g. [us-east-1a]'),
    /** The macOS AMI the host's instance runs (its arm64/x86 architecture must match the type). */
    imageId: z.string().regex(/^ami-[0-9a-f]+$/, 'an AMI id, e.g. ami-0a1b2c3d4e5f60715'),
    maxHosts: z.number().int().positive().default(10),
    /** Never fewer hosts than this (serving, parked or scrubbing), whatever the forecast. */
    minHosts: z.number().int().nonnegative().default(0),
    /** Spare VM slots kept serving above the forecast, for the unforeseen (0 lets an idle pool go to no host). */
    headroomSlots: z.number().int().nonnegative().default(1),
    /** Labels of every host of this pool (jobs select hosts by label). */
    labels: labels.default({}),
    /** The keep-warm window: an idle host waits this long (EC2 seconds) for the next job before the policy may park or release it. */
    keepWarmSeconds: z
      .number()
      .nonnegative()
      .default(10 * 60),
    /** Park idle hosts by terminating their instance: AWS scrubs them, unbilled, and they stay the pool's. */
    park: z.boolean().default(true),
    /**
     * How AWS's bill is read (it is disputed; see the README): `minimum-of-metered` (default),
     * `minimum-then-pause`, or `scrub-billed` (parking then saves nothing and is skipped).
     */
    billing: z.enum(BILLING_MODES).default('minimum-of-metered'),
    /** Clean a host's instance after this many jobs (0: never). A host that fails health checks is always cleaned. */
    refreshAfterJobs: z.number().int().nonnegative().default(0),
    /** Clean a host that is wanted soon by replacing its root volume (about 15 min, no scrub) rather than scrubbing it. */
    rootVolumeReplacement: z.boolean().default(true),
    /** Capacity by cron period (GitLab-style): the last entry whose period matches the minute wins. */
    schedules: z
      .array(
        z
          .object({
            periods: z.array(z.string().min(1)).min(1, 'list at least one cron period, e.g. ["* 8-18 * * mon-fri"]'),
            timezone: z.string().min(1).default('UTC'),
            minHosts: z.number().int().nonnegative().optional(),
            maxHosts: z.number().int().positive().optional(),
            headroomSlots: z.number().int().nonnegative().optional(),
          })
          .strict()
          .superRefine((e, ctx) => {
            e.periods.forEach((p, i) => {
              const why = periodError(p, e.timezone);
              if (why) ctx.addIssue({ code: 'custom', path: ['periods', i], message: why });
            });
          }),
      )
      .default([]),
    /** How often host workflows poll EC2 while they wait (EC2 seconds). */
    pollSeconds: z.number().positive().default(30),
    /** How often the reconciler compares EC2 with the host workflows (a Temporal Schedule). */
    reconcileSeconds: z.number().int().min(1).default(300),
    /** How long a new instance may take to answer SSH (AWS: 6–20 min, up to 15 min after running on M4). */
    sshReadyTimeoutSeconds: z
      .number()
      .positive()
      .default(40 * 60),
    /**
     * Virtual seconds per real second of the EC2 endpoint's clock: 1 for AWS; the emulator's
     * speed factor in compressed-time runs, so host workflows wait out the 24 h rule in step.
     */
    timeScale: z.number().positive().default(1),
    /**
     * How a new instance's SSH host key is trusted. `console` (default): the key it offers must be one the
     * instance printed to its console (GetConsoleOutput), which Marina's user data makes it print; a key seen
     * only on the network is never pinned. `first-use`: pin whatever answers first (no check; see README).
     */
    hostKeyVerification: z
      .enum(['console', 'first-use'], {
        error: 'must be "console" (check the key against the console output) or "first-use" (no check)',
      })
      .default('console'),
    /** How long after SSH answers the console may stay without the host-key block before the host is given up. */
    consoleKeyTimeoutSeconds: z
      .number()
      .positive('seconds, e.g. 1200')
      .default(20 * 60),
    /**
     * Hosts and instances of this pool with no `marina:deployment` tag (made before the tag existed) whose owner
     * workflow is not running here: adopt them (true) or leave them alone (default; another deployment may own them).
     */
    adoptUntagged: z.boolean().default(false),
  })
  .strict()
  .refine((a) => a.minHosts <= a.maxHosts, {
    path: ['minHosts'],
    message: 'must not exceed maxHosts; lower minHosts or raise maxHosts',
  });

const pool = z
  .object({
    name,
    aws: awsPool.optional(),
    /** The hypervisor of the pool's hosts (each host may say otherwise). */
    hypervisor: hypervisor.default('tart'),
    /** SSH defaults for the pool's hosts; each host may override any field. */
    ssh: sshSettings.default({}),
    /** How the worker reaches VMs: through the host (SSH forwarding) on this port, as this user. */
    vm: z
      .object({
        user: z.string().min(1).default('admin'),
        port: z.number().int().min(1).max(65535).default(22),
        privateKey: secretRef.optional(),
        /**
         * Refused: a password goes to whatever answers on the VM's address, and on a shared NAT that can be
         * another job's VM. Keys only.
         */
        password: z
          .unknown()
          .refine(() => false, {
            message:
              'VM password authentication was removed: a password is sent to whatever answers on the VM address; bake a public key into the image and set vm.privateKey instead',
          })
          .optional(),
        bootTimeoutSeconds: z.number().int().positive().default(600),
        /**
         * `pinned`: a VM must answer with the SSH host key its image records (marina image push --vm-host-key),
         * and an image without one is refused. `any`: trust any key (images pushed before keys were recorded).
         */
        hostKeys: z.enum(['pinned', 'any']).default('pinned'),
        /**
         * `softnet`: Tart's --net-softnet, which isolates VMs from each other and from the host's network
         * (the production setting); `shared`: Tart's default shared NAT, where VMs can reach each other.
         */
        network: z.enum(['shared', 'softnet']).default('shared'),
      })
      .strict()
      .default({ user: 'admin', port: 22, bootTimeoutSeconds: 600, hostKeys: 'pinned', network: 'shared' }),
    /** Default resources for hosts that do not list their own. 2 VM slots: Apple's licence. */
    hostResources: resources.default({ vm: 2 }),
    /** Modifiers of every host that lists none of its own. */
    resourceModifiers: resourceModifiers.default([]),
    healthCheckSeconds: z.number().positive().default(30),
    leaseCheckSeconds: z.number().positive().default(15),
    /** Continue the pool workflow as new after this many history events (default: when the server suggests, ~4,096). */
    historyEventsPerRun: z.number().int().min(100, 'at least 100 events, or leave it out').optional(),
    /**
     * Requests a pool queues at most (back-pressure): past it a job is refused at once with an error
     * naming this limit, and nothing already queued is lost. Bounds the pool workflow's state.
     */
    queueLimit: z
      .number()
      .int()
      .min(1, 'at least 1')
      .max(50_000, 'at most 50000: a pool carries its queue in its state')
      .default(10_000),
    /** Placement: fair share per client, and cache affinity. */
    placement: z
      .object({
        /** Fair-share weight per client (the job spec's `client`); default 1 each. */
        clientWeights: z.record(z.string(), z.number().positive('weights are positive, e.g. 2')).default({}),
        /** How many more running jobs a host holding the job's image may have than the least-loaded host and still win. */
        affinitySlack: z.number().int().nonnegative().default(DEFAULT_AFFINITY_SLACK),
      })
      .strict()
      .default({ clientWeights: {}, affinitySlack: DEFAULT_AFFINITY_SLACK }),
    /** What jobs of this pool may boot and mount (Cirrus-style security policy). */
    security: z
      .object({
        /** Globs over image names, e.g. ["macos-*", "ghcr.io/acme/*:stable"]; absent: any image. */
        allowedImages: z
          .array(z.string().min(1))
          .min(1, 'list at least one image glob, or leave the field out')
          .optional(),
        /**
         * Globs over the tags a job's snapshot may write, e.g. ["ci/*", "cache-*:pr-*"]. Absent: only tags
         * under the job's own client, "<client>/…"; so no job can overwrite a base image.
         */
        allowedSnapshotImages: z
          .array(z.string().min(1))
          .min(1, 'list at least one image glob, or leave the field out')
          .optional(),
        /** Jobs that receive secrets may snapshot (what they wrote with them ships in the image). Default false. */
        allowSnapshotWithSecrets: z.boolean().default(false),
        /** Host directories jobs may share into their VM; none unless listed. */
        allowedVolumes: z
          .array(
            z
              .object({
                path: z.string().startsWith('/', 'an absolute path glob, e.g. /Users/ci/caches/**'),
                readOnly: z.boolean().default(true),
              })
              .strict(),
          )
          .default([]),
      })
      .strict()
      .optional(),
    /** VMs kept booted ahead of demand: a job for the same image takes one and starts in seconds. */
    standby: z
      .array(
        z
          .object({
            image: z.string().regex(/^[\w][\w./-]*(:[\w][\w.-]*)?$/, 'an image reference, e.g. macos-xcode:16'),
            count: z.number().int().nonnegative(),
            /** What each standby VM holds (and the largest job that may take it). */
            resources: resources.default({ vm: 1 }),
            labels: labels.default({}),
          })
          .strict(),
      )
      .default([]),
    /** Each host's image cache: a disk budget (least recently used versions go first) and images pulled ahead of jobs. */
    imageCache: z
      .object({
        budgetGiB: z.number().positive('a size in GiB, e.g. 300').default(300),
        /** Caps each pull's download rate on a host (MB/s), so pulls leave bandwidth to running jobs; absent: no cap. */
        pullMBps: z.number().positive('a rate in MB/s, e.g. 200, or leave it out').optional(),
        /** Pulled onto new and idle hosts before any job asks (with the standby images). */
        prePull: z
          .array(z.string().regex(/^[\w][\w./-]*(:[\w][\w.-]*)?$/, 'an image reference, e.g. macos-xcode:16'))
          .default([]),
      })
      .strict()
      .default({ budgetGiB: 300, prePull: [] }),
    hosts: z.array(host).default([]),
    /** GitHub Actions jobs whose labels match run in this pool (README, GitHub Actions). */
    github: gh.pool.optional(),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (p.aws && p.hypervisor === 'parallels')
      ctx.addIssue({
        code: 'custom',
        path: ['hypervisor'],
        message:
          'the EC2 Mac hosts Marina allocates run Tart; list Parallels Desktop hosts under hosts: in a pool without aws:',
      });
    p.imageCache.prePull.forEach((image, i) => {
      const verdict = checkSecurity(p.name, p.security, { image });
      if (verdict.violations.length > 0)
        ctx.addIssue({
          code: 'custom',
          path: ['imageCache', 'prePull', i],
          message: `${verdict.violations.join('; ')}: pre-pull only images the pool allows`,
        });
    });
    p.standby.forEach((s, i) => {
      const verdict = checkSecurity(p.name, p.security, { image: s.image });
      if (verdict.violations.length > 0)
        ctx.addIssue({
          code: 'custom',
          path: ['standby', i, 'image'],
          message: `${verdict.violations.join('; ')}: a standby VM may only boot an image the pool allows`,
        });
    });
    const seen = new Set<string>();
    p.hosts.forEach((h, i) => {
      if (seen.has(h.name)) {
        ctx.addIssue({ code: 'custom', path: ['hosts', i, 'name'], message: `duplicate host name "${h.name}"` });
      }
      seen.add(h.name);
      const kind = h.hypervisor ?? p.hypervisor;
      if (kind === 'parallels') {
        const slots = (h.resources ?? p.hostResources).vm;
        if (slots !== undefined && slots > MAX_MACOS_VMS_PER_HOST)
          ctx.addIssue({
            code: 'custom',
            path: h.resources ? ['hosts', i, 'resources', 'vm'] : ['hostResources', 'vm'],
            message: `a Parallels host runs at most ${MAX_MACOS_VMS_PER_HOST} macOS VMs (Apple's licence, which Parallels Desktop enforces); set vm: ${MAX_MACOS_VMS_PER_HOST} or fewer`,
          });
        if ((h.resourceModifiers ?? p.resourceModifiers).length > 0)
          ctx.addIssue({
            code: 'custom',
            path: h.resourceModifiers ? ['hosts', i, 'resourceModifiers'] : ['resourceModifiers'],
            message:
              'resource modifiers are `tart run` options, which a Parallels host cannot take; remove them for this host, or set hypervisor: tart',
          });
        if (p.vm.network === 'softnet')
          ctx.addIssue({
            code: 'custom',
            path: ['vm', 'network'],
            message: `softnet is Tart's; host ${h.name} runs Parallels, whose VMs use its Shared network: set vm.network: shared, or move the host to a Tart pool`,
          });
      }
      const ssh = { ...p.ssh, ...h.ssh };
      if (!ssh.privateKey) {
        ctx.addIssue({
          code: 'custom',
          path: ['hosts', i, 'ssh', 'privateKey'],
          message: 'no SSH key: set ssh.privateKey on the pool or the host, e.g. { file: ~/.ssh/marina }',
        });
      }
      if (!ssh.knownHosts) {
        ctx.addIssue({
          code: 'custom',
          path: ['hosts', i, 'ssh', 'knownHosts'],
          message: 'host keys must be pinned: set ssh.knownHosts to { file: path/to/known_hosts }',
        });
      }
    });
  });

const temporal = z
  .object({
    address: z.string().min(1).default('127.0.0.1:7233'),
    namespace: z.string().min(1).default('default'),
    taskQueue: z.string().min(1).default('marina'),
    /** true for TLS with system CAs, or files for mTLS / a private CA. */
    tls: z
      .union([
        z.boolean(),
        z
          .object({
            serverName: z.string().optional(),
            ca: fileRef.optional(),
            cert: fileRef.optional(),
            key: secretRef.optional(),
          })
          .strict(),
      ])
      .default(false),
    /** Temporal Cloud API key, by reference; turns TLS on. */
    apiKey: secretRef.optional(),
  })
  .strict();

const s3Location = z
  .object({
    bucket: z.string().min(3, 'an S3 bucket name, at least 3 characters'),
    prefix: z.string().default(''),
    region: z.string().min(1).default('us-east-1'),
    /** Custom endpoint, e.g. a local S3-compatible server; omit for AWS. */
    endpoint: z.url('must be a URL such as http://127.0.0.1:9000').optional(),
    forcePathStyle: z.boolean().default(false),
    credentials: z
      .object({ accessKeyId: secretRef, secretAccessKey: secretRef, sessionToken: secretRef.optional() })
      .strict()
      .optional(),
  })
  .strict();

const worker = z
  .object({
    /**
     * On SIGTERM/SIGINT the worker stops taking tasks and gives running activities this long to
     * finish; then they are told to give up. A job's script is never stopped by this: it runs on
     * in its VM, and the retry on another worker re-attaches to it.
     */
    shutdownGraceSeconds: z
      .number()
      .nonnegative('seconds running activities get to finish on SIGTERM, e.g. 10')
      .default(10),
  })
  .strict();

export const DEFAULT_DEPLOYMENT = 'default';

const bindAddress = (example: string) =>
  z.string().regex(/^[\w.:[\]-]+:\d{1,5}$/, `an address and port to listen on, e.g. ${example}`);

/** Metrics and traces (README "Operating Marina"); everything off unless set. */
const telemetry = z
  .object({
    metrics: z
      .object({
        /** Marina's own metrics (OpenTelemetry, Prometheus text format at /metrics). */
        prometheus: bindAddress('0.0.0.0:9464').optional(),
        /** The Temporal SDK's metrics and the metrics workflows record (jobs, queue wait), at /metrics. */
        temporalPrometheus: bindAddress('0.0.0.0:9465').optional(),
        /** How often the worker reads each pool's state for the pool gauges. */
        poolPollSeconds: z.number().positive('seconds between reads of pool state, e.g. 15').default(15),
      })
      .strict()
      .optional(),
    traces: z
      .object({
        /** OTLP/HTTP traces endpoint, e.g. an OpenTelemetry Collector's http://collector:4318/v1/traces. */
        otlpEndpoint: z.string().url('an OTLP/HTTP URL, e.g. http://127.0.0.1:4318/v1/traces'),
        serviceName: z.string().min(1).default('marina'),
      })
      .strict()
      .optional(),
  })
  .strict();

export const configSchema = z
  .object({
    /**
     * This Marina's name among those sharing one AWS account (staging, production): every host and instance it
     * makes is tagged `marina:deployment` with it, and its reconciler touches nothing tagged otherwise.
     */
    deployment: z
      .string()
      .regex(
        /^[a-z0-9][a-z0-9._-]{0,62}$/,
        'name this deployment with lower-case letters, digits, ".", "_" or "-" (at most 63), e.g. deployment: production',
      )
      .default(DEFAULT_DEPLOYMENT),
    temporal: temporal.default({
      address: '127.0.0.1:7233',
      namespace: 'default',
      taskQueue: 'marina',
      tls: false,
    }),
    imageStore: s3Location,
    /** Where job logs go; defaults to the image store's bucket under `logs/`. */
    logs: s3Location.partial({ bucket: true }).optional(),
    /** Named secrets that jobs reference by name in `secrets:`. */
    secrets: z.record(z.string().regex(/^[A-Za-z0-9_.-]+$/), secretRef).default({}),
    pools: z.array(pool).min(1, 'configure at least one pool'),
    worker: worker.default({ shutdownGraceSeconds: 10 }),
    telemetry: telemetry.default({}),
    github: gh.github.optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    const seen = new Set<string>();
    c.pools.forEach((p, i) => {
      if (seen.has(p.name)) {
        ctx.addIssue({ code: 'custom', path: ['pools', i, 'name'], message: `duplicate pool name "${p.name}"` });
      }
      seen.add(p.name);
    });
  });

export type MarinaConfig = z.infer<typeof configSchema>;
export type PoolConfig = MarinaConfig['pools'][number];
export type HostConfig = PoolConfig['hosts'][number];
export type S3Location = z.infer<typeof s3Location>;
export type GithubConfig = NonNullable<MarinaConfig['github']>;
export type GithubPoolConfig = NonNullable<PoolConfig['github']>;
