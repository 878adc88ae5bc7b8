/** Pure parts: config validation, job spec validation, placement policy, known_hosts pinning. */
import { describe, expect, it } from 'vitest';
import { createHmac, randomBytes } from 'node:crypto';
import { ConfigError, parseConfig } from '../src/config/load';
import { normalizeJobSpec, JobSpecError, poolOfStandbyVm, validateJobSpec } from '../src/domain/job';
import {
  healthAfterCheck,
  pickModifier,
  pickStandby,
  placeQueue,
  whyNeverFits,
  UNHEALTHY_AFTER_FAILURES,
} from '../src/policy/placement';
import type { HostState, Lease, LeaseRequest } from '../src/domain/pool';
import { checkSecurity } from '../src/domain/security';
import { capacityAt, scheduleErrors } from '../src/policy/schedule';
import { parseKnownHosts, verifyHostKey } from '../activities/ssh/known-hosts';

const minimal = `
imageStore: { bucket: images }
pools:
  - name: ci
    ssh: { privateKey: { file: key }, knownHosts: { file: known_hosts } }
    hosts: [{ name: m1, address: 10.0.0.1 }]
`;

function configErrors(yaml: string): string[] {
  try {
    parseConfig(yaml, '/etc/marina.yaml');
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

describe('config', () => {
  it('refuses a standby VM of an image the pool security policy does not allow', () => {
    const yaml = `
imageStore: { bucket: images }
pools:
  - name: mac
    ssh: { privateKey: { file: key }, knownHosts: { file: kh } }
    security: { allowedImages: ['macos-*'] }
    standby: [{ image: 'macos-xcode:16', count: 1 }, { image: 'ubuntu:22', count: 1 }]
`;
    expect(configErrors(yaml)).toEqual([
      expect.stringMatching(
        /^pools\.0\.standby\.1\.image: .*ubuntu:22.*a standby VM may only boot an image the pool allows/,
      ),
    ]);
  });

  it('fills documented defaults', () => {
    const c = parseConfig(minimal, '/etc/marina.yaml');
    expect(c.temporal).toMatchObject({ address: '127.0.0.1:7233', namespace: 'default', taskQueue: 'marina' });
    expect(c.pools[0]!.hostResources).toEqual({ vm: 2 });
    expect(c.pools[0]!.vm.port).toBe(22);
  });

  it('refuses an inline secret and says how to reference it', () => {
    const errs = configErrors(
      minimal.replace('privateKey: { file: key }', 'privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----"'),
    );
    expect(errs.join('\n')).toMatch(
      /pools\.0\.ssh\.privateKey: must be a reference: \{ env: VAR_NAME \} or \{ file: .* inline secret values are refused/,
    );
  });

  it('requires pinned host keys', () => {
    const errs = configErrors(minimal.replace(', knownHosts: { file: known_hosts }', ''));
    expect(errs.join('\n')).toMatch(/pools\.0\.hosts\.0\.ssh\.knownHosts: host keys must be pinned/);
  });

  it('names unknown fields, bad values and duplicate names', () => {
    const errs = configErrors(`
imageStore: { bucket: images, endpoint: not-a-url }
pools:
  - name: ci
    healthCheckSecs: 5
    ssh: { privateKey: { file: key }, knownHosts: { file: known_hosts } }
    hosts: [{ name: m1, address: a, resources: { vm: -1 } }, { name: m1, address: b }]
`);
    const all = errs.join('\n');
    expect(all).toMatch(/imageStore\.endpoint: must be a URL/);
    expect(all).toMatch(/pools\.0: unknown field\(s\) "healthCheckSecs"/);
    expect(all).toMatch(/pools\.0\.hosts\.0\.resources\.vm: resource amounts are non-negative/);
    expect(all).toMatch(/pools\.0\.hosts\.1\.name: duplicate host name "m1"/);
  });

  it('fills the AWS fleet policy defaults and names bad policy values', () => {
    const aws = `
imageStore: { bucket: images }
pools:
  - name: mac
    ssh: { privateKey: { file: key } }
    aws: { instanceType: mac2-m2.metal, zones: [us-east-1a], imageId: ami-0a1b2c3d4e5f60715 ARGS }
`;
    const c = parseConfig(aws.replace(' ARGS', ''), '/etc/marina.yaml');
    expect(c.pools[0]!.aws).toMatchObject({
      park: true,
      billing: 'minimum-of-metered',
      keepWarmSeconds: 600,
      headroomSlots: 1,
      minHosts: 0,
      refreshAfterJobs: 0,
      rootVolumeReplacement: true,
    });
    const all = configErrors(
      aws.replace(' ARGS', ', billing: free, minHosts: 12, maxHosts: 4, refreshAfterJobs: -1'),
    ).join('\n');
    expect(all).toMatch(/pools\.0\.aws\.billing: .*minimum-of-metered/);
    expect(all).toMatch(/pools\.0\.aws\.refreshAfterJobs: /);
    const cap = configErrors(aws.replace(' ARGS', ', minHosts: 12, maxHosts: 4')).join('\n');
    expect(cap).toMatch(/pools\.0\.aws\.minHosts: must not exceed maxHosts; lower minHosts or raise maxHosts/);
  });

  it('names the deployment (default `default`) and the EC2 host-key check, and refuses bad values by field', () => {
    const aws = `
imageStore: { bucket: images }
DEPLOYMENT
pools:
  - name: mac
    ssh: { privateKey: { file: key } }
    aws: { instanceType: mac2-m2.metal, zones: [us-east-1a], imageId: ami-0a1b2c3d4e5f60715 ARGS }
`;
    const c = parseConfig(aws.replace('DEPLOYMENT', '').replace(' ARGS', ''), '/etc/marina.yaml');
    expect(c.deployment).toBe('default');
    expect(c.pools[0]!.aws).toMatchObject({
      hostKeyVerification: 'console',
      consoleKeyTimeoutSeconds: 1200,
      adoptUntagged: false,
    });
    const all = configErrors(
      aws.replace('DEPLOYMENT', 'deployment: Production!').replace(' ARGS', ', hostKeyVerification: trust'),
    ).join('\n');
    expect(all).toMatch(/^deployment: name this deployment with lower-case letters.*e\.g\. deployment: production/m);
    expect(all).toMatch(/pools\.0\.aws\.hostKeyVerification: must be "console" .* or "first-use"/);
  });

  it('reports YAML syntax errors with a line number', () => {
    expect(configErrors('pools: [\n  - name: x\n').join('\n')).toMatch(/YAML syntax at line \d+/);
  });
});

describe('job spec', () => {
  const good = { id: 'build-1', pool: 'ci', image: 'macos-base', script: 'make', timeoutSeconds: 60 };

  it('defaults the tag and one vm slot', () => {
    const s = normalizeJobSpec(good);
    expect(s.image).toBe('macos-base:latest');
    expect(s.resources).toEqual({ vm: 1 });
  });

  it('lists every bad field at once', () => {
    const errs = validateJobSpec({
      ...good,
      id: 'bad id!',
      script: '',
      timeoutSeconds: -1,
      env: { '1X': 'a' },
      resources: { vm: -2 },
    });
    expect(errs.map((e) => e.field).sort()).toEqual(['env.1X', 'id', 'resources.vm', 'script', 'timeoutSeconds']);
    expect(() => normalizeJobSpec({ ...good, script: '' })).toThrow(JobSpecError);
  });
});

const host = (name: string, over: Partial<HostState> = {}): HostState => ({
  name,
  resources: { vm: 2, cpu: 8 },
  labels: { os: 'macos' },
  consecutiveHealthFailures: 0,
  ...over,
});
const req = (id: string, over: Partial<LeaseRequest> = {}): LeaseRequest => ({
  jobWorkflowId: id,
  resources: { vm: 1 },
  labels: {},
  requestedAt: 0,
  ...over,
});

describe('placement policy', () => {
  it('gives a queued job the oldest booted standby VM of its image that fits it, never one on a cordoned host', () => {
    const standbys = {
      'standby/p/0-0': {
        host: 'a',
        vm: 'marina-standby-p-0-0-3',
        ip: '10.0.0.2',
        image: 'marina-img-aa',
        readySince: 20,
      },
      'standby/p/0-1': {
        host: 'b',
        vm: 'marina-standby-p-0-1-0',
        ip: '10.0.0.3',
        image: 'marina-img-aa',
        readySince: 10,
      },
      'standby/p/1-0': {
        host: 'b',
        vm: 'marina-standby-p-1-0-0',
        ip: '10.0.0.4',
        image: 'marina-img-bb',
        readySince: 5,
      },
    };
    const held = (id: string, host: string): Lease => ({
      leaseId: id,
      jobWorkflowId: id,
      host,
      resources: { vm: 1, cpu: 4 },
      grantedAt: 0,
    });
    const leases = [held('standby/p/0-0', 'a'), held('standby/p/0-1', 'b'), held('standby/p/1-0', 'b')];
    const hosts = [host('a'), host('b')];
    const job = (over: Partial<LeaseRequest> = {}) => ({ ...req('j'), image: 'marina-img-aa', ...over });
    expect(pickStandby(job(), standbys, leases, hosts)).toBe('standby/p/0-1');
    expect(pickStandby(job(), standbys, leases, [host('a'), { ...host('b'), cordoned: 'drain' }])).toBe(
      'standby/p/0-0',
    );
    expect(pickStandby(job({ image: 'marina-img-cc' }), standbys, leases, hosts)).toBeUndefined();
    expect(pickStandby(job({ resources: { vm: 1, cpu: 8 } }), standbys, leases, hosts)).toBeUndefined();
    expect(pickStandby(job({ volumes: [{ hostPath: '/x' }] }), standbys, leases, hosts)).toBeUndefined();
    expect(poolOfStandbyVm('marina-standby-mac-ci-0-1-12')).toBe('mac-ci');
    expect(poolOfStandbyVm('marina-job-standby-1')).toBeUndefined();
  });

  it('hands each device (resource modifier) to one job at a time, and only to jobs that take its resource', () => {
    const mac = {
      ...host('a'),
      resources: { vm: 2, gpu: 2 },
      modifiers: [
        { match: { gpu: 1 }, run: ['--disk=/dev/disk4'] },
        { match: { gpu: 1 }, run: ['--disk=/dev/disk5'] },
      ],
    };
    const lease = (id: string, modifier?: number): Lease => ({
      leaseId: id,
      jobWorkflowId: id,
      host: 'a',
      resources: { vm: 1, gpu: 1 },
      grantedAt: 0,
      ...(modifier !== undefined ? { modifier } : {}),
    });
    expect(pickModifier(mac, [], { vm: 1, gpu: 1 })).toEqual({ index: 0, run: ['--disk=/dev/disk4'] });
    expect(pickModifier(mac, [lease('x', 0)], { vm: 1, gpu: 1 })).toEqual({ index: 1, run: ['--disk=/dev/disk5'] });
    expect(pickModifier(mac, [lease('x', 0), lease('y', 1)], { vm: 1, gpu: 1 })).toBeUndefined();
    // A job that takes no gpu, or more than a modifier offers, gets none.
    expect(pickModifier(mac, [], { vm: 1 })).toBeUndefined();
    expect(pickModifier(mac, [], { vm: 1, gpu: 2 })).toBeUndefined();
    // Another host's lease holds nothing here.
    expect(pickModifier(mac, [{ ...lease('z', 0), host: 'b' }], { vm: 1, gpu: 1 })?.index).toBe(0);
  });

  it('fills 2 hosts x 2 slots with 4 jobs, spread, and queues the 5th', () => {
    const grants = placeQueue(
      [host('a'), host('b')],
      [],
      ['1', '2', '3', '4', '5'].map((i) => req(i)),
    );
    expect(grants.map((g) => g.host)).toEqual(['a', 'b', 'a', 'b']);
  });

  it('never places on a cordoned host or beyond a resource', () => {
    const leases: Lease[] = [
      { leaseId: 'x', jobWorkflowId: 'x', host: 'a', resources: { vm: 1, cpu: 6 }, grantedAt: 0 },
    ];
    const grants = placeQueue([host('a'), host('b', { cordoned: 'operator' })], leases, [
      req('1', { resources: { vm: 1, cpu: 4 } }),
      req('2', { resources: { vm: 1, cpu: 2 } }),
    ]);
    expect(grants).toEqual([{ request: expect.objectContaining({ jobWorkflowId: '2' }), host: 'a' }]);
  });

  it('matches labels and explains jobs no host could ever run', () => {
    expect(whyNeverFits([host('a')], { resources: { vm: 1 }, labels: { os: 'linux' } })).toMatch(/no host has labels/);
    expect(whyNeverFits([host('a')], { resources: { vm: 3 }, labels: {} })).toMatch(/no host offers resources/);
    expect(
      whyNeverFits([host('a', { cordoned: 'health' })], { resources: { vm: 1 }, labels: { os: 'macos' } }),
    ).toBeUndefined();
  });

  it("shares slots fairly between clients: one client's backlog cannot starve another", () => {
    // Client "big" queued 6 jobs before "small" queued 2; 4 slots free.
    const queue = [
      ...['b1', 'b2', 'b3', 'b4', 'b5', 'b6'].map((i, n) => req(i, { client: 'big', requestedAt: n })),
      ...['s1', 's2'].map((i, n) => req(i, { client: 'small', requestedAt: 10 + n })),
    ];
    const grants = placeQueue([host('a'), host('b')], [], queue);
    expect(grants.map((g) => g.request.jobWorkflowId).sort()).toEqual(['b1', 'b2', 's1', 's2']);
    // Weights: "big" with weight 3 gets 3 of the 4 slots.
    const weighted = placeQueue([host('a'), host('b')], [], queue, { clientWeights: { big: 3 } });
    expect(weighted.filter((g) => g.request.client === 'big')).toHaveLength(3);
    // Running leases count: "big" already holds 2 slots, so "small" goes first.
    const running: Lease[] = ['x', 'y'].map((id) => ({
      leaseId: id,
      jobWorkflowId: id,
      host: 'a',
      resources: { vm: 1 },
      grantedAt: 0,
      client: 'big',
    }));
    const next = placeQueue([host('a'), host('b')], running, queue);
    expect(next.map((g) => g.request.jobWorkflowId)).toEqual(['s1', 's2']);
  });

  it("runs a client's higher-priority job first", () => {
    const grants = placeQueue(
      [host('a', { resources: { vm: 1 } })],
      [],
      [req('low', { client: 'c', requestedAt: 0 }), req('high', { client: 'c', requestedAt: 5, priority: 10 })],
    );
    expect(grants.map((g) => g.request.jobWorkflowId)).toEqual(['high']);
  });

  it('prefers a host that holds the image, within the affinity slack', () => {
    const warm = host('b', { images: ['marina-img-abc'] });
    const one = placeQueue([host('a'), warm], [], [req('1', { image: 'marina-img-abc' })]);
    expect(one.map((g) => g.host)).toEqual(['b']);
    // b runs 1 job, a none: still b (slack 1); with 2 running on b, a (the cap).
    const onB = (n: number): Lease[] =>
      Array.from({ length: n }, (_, i) => ({
        leaseId: `l${i}`,
        jobWorkflowId: `l${i}`,
        host: 'b',
        resources: { vm: 0 },
        grantedAt: 0,
      }));
    expect(placeQueue([host('a'), warm], onB(1), [req('2', { image: 'marina-img-abc' })])[0]!.host).toBe('b');
    expect(placeQueue([host('a'), warm], onB(2), [req('3', { image: 'marina-img-abc' })])[0]!.host).toBe('a');
    expect(
      placeQueue([host('a'), warm], onB(1), [req('4', { image: 'marina-img-abc' })], { affinitySlack: 0 })[0]!.host,
    ).toBe('a');
    // Equal load, no cached image anywhere: the first least-loaded host.
    expect(placeQueue([host('a'), host('b')], [], [req('5', { image: 'marina-img-zzz' })])[0]!.host).toBe('a');
  });

  it('cordons after repeated failed health checks and uncordons on recovery', () => {
    let h = host('a');
    for (let i = 0; i < UNHEALTHY_AFTER_FAILURES - 1; i++) h = healthAfterCheck(h, false, 'ssh refused');
    expect(h.cordoned).toBeUndefined();
    h = healthAfterCheck(h, false, 'ssh refused');
    expect(h.cordoned).toBe('health');
    h = healthAfterCheck(h, true);
    expect(h.cordoned).toBeUndefined();
    expect(healthAfterCheck(host('b', { cordoned: 'operator' }), true).cordoned).toBe('operator');
  });
});

describe('capacity by schedule', () => {
  const schedules = [
    { periods: ['* 8-17 * * mon-fri'], timezone: 'Europe/Berlin', minHosts: 4, headroomSlots: 2 },
    { periods: ['* 12 * * *'], timezone: 'Europe/Berlin', minHosts: 1 },
  ];

  it("switches at the boundary in the period's time zone, the last matching entry winning", () => {
    // Berlin is UTC+1 in November: 08:00 local is 07:00Z.
    expect(capacityAt(schedules, new Date('2026-11-23T06:59:59Z'))).toBeUndefined();
    expect(capacityAt(schedules, new Date('2026-11-23T07:00:00Z'))).toEqual({
      index: 0,
      minHosts: 4,
      headroomSlots: 2,
    });
    expect(capacityAt(schedules, new Date('2026-11-23T11:30:00Z'))).toEqual({ index: 1, minHosts: 1 });
    expect(capacityAt(schedules, new Date('2026-11-23T16:59:59Z'))).toMatchObject({ index: 0 });
    expect(capacityAt(schedules, new Date('2026-11-23T17:00:00Z'))).toBeUndefined();
    // Summer time moves the boundary: 08:00 local is 06:00Z in June.
    expect(capacityAt(schedules, new Date('2026-06-15T06:00:00Z'))).toMatchObject({ index: 0 });
    // Weekends are outside the first period.
    expect(capacityAt(schedules, new Date('2026-11-22T09:00:00Z'))).toBeUndefined();
  });

  it('names a bad period or time zone in the config', () => {
    const aws = `
imageStore: { bucket: images }
pools:
  - name: mac
    ssh: { privateKey: { file: key } }
    aws:
      instanceType: mac2-m2.metal
      zones: [us-east-1a]
      imageId: ami-0a1b2c3d4e5f60715
      schedules: [{ periods: ['* 25 * * *', '* *'], timezone: Europe/Berlin }, { periods: ['* * * * *'], timezone: Mars/Base }]
`;
    const all = configErrors(aws).join('\n');
    expect(all).toMatch(/pools\.0\.aws\.schedules\.0\.periods\.0: "\* 25 \* \* \*" in Europe\/Berlin: .*hour/);
    expect(all).toMatch(/pools\.0\.aws\.schedules\.0\.periods\.1: "\* \*" must have 5 fields/);
    expect(all).toMatch(/pools\.0\.aws\.schedules\.1\.periods\.0: .*Mars\/Base/);
  });

  it("checks a planner's schedules (the pool update's validator) field by field", () => {
    expect(scheduleErrors([{ periods: ['* 8-18 * * mon-fri'], timezone: 'Europe/Berlin', minHosts: 2 }])).toEqual([]);
    expect(scheduleErrors([])).toEqual([]);
    expect(scheduleErrors({ periods: [] })).toEqual([expect.stringMatching(/^schedules: must be a list/)]);
    const errors = scheduleErrors([
      { periods: [], timezone: 'UTC' },
      { periods: ['* * * * *'], timezone: 'Mars/Base', minHosts: -1 },
      { periods: ['* * * * *'], minHosts: 3, maxHosts: 2, idle: 1 },
    ]);
    expect(errors).toEqual([
      expect.stringMatching(/^schedules\[0\]\.periods: list at least one cron period/),
      expect.stringMatching(/^schedules\[1\]\.periods\[0\]: .*Mars\/Base/),
      expect.stringMatching(/^schedules\[1\]\.minHosts: must be a whole number ≥ 0, got -1/),
      expect.stringMatching(/^schedules\[2\]\.idle: unknown field/),
      expect.stringMatching(/^schedules\[2\]: minHosts 3 exceeds maxHosts 2/),
    ]);
  });
});

describe('pool security policy', () => {
  const policy = {
    allowedImages: ['macos-*', 'ghcr.io/acme/*:stable'],
    allowedVolumes: [
      { path: '/Users/ci/caches/**', readOnly: true },
      { path: '/Users/ci/scratch/*', readOnly: false },
    ],
  };

  it('allows images by glob, a bare name for any tag, a name:tag glob for that tag only', () => {
    expect(checkSecurity('ci', policy, { image: 'macos-base:15' }).violations).toEqual([]);
    expect(checkSecurity('ci', policy, { image: 'ghcr.io/acme/xcode:stable' }).violations).toEqual([]);
    const [why] = checkSecurity('ci', policy, { image: 'ghcr.io/acme/xcode:nightly' }).violations;
    expect(why).toMatch(
      /image "ghcr.io\/acme\/xcode:nightly" is not allowed in pool ci \(security.allowedImages: macos-\*, ghcr.io\/acme\/\*:stable\)/,
    );
    expect(checkSecurity('ci', undefined, { image: 'anything:1' }).violations).toEqual([]);
  });

  it('allows only listed host paths and forces read-only where the rule says', () => {
    const v = checkSecurity('ci', policy, {
      image: 'macos-base:15',
      volumes: [{ hostPath: '/Users/ci/caches/spm', readOnly: false }, { hostPath: '/Users/ci/scratch/tmp' }],
    });
    expect(v.violations).toEqual([]);
    expect(v.volumes.map((x) => x.readOnly)).toEqual([true, false]);
    const bad = checkSecurity('ci', policy, { image: 'macos-base:15', volumes: [{ hostPath: '/etc' }] });
    expect(bad.violations[0]).toMatch(/volume "\/etc" is not allowed in pool ci/);
    expect(checkSecurity('ci', {}, { image: 'x:1', volumes: [{ hostPath: '/tmp' }] }).violations[0]).toMatch(
      /allowedVolumes: none/,
    );
  });

  it("refuses a snapshot that would overwrite a base image or another client's tag", () => {
    const attack = checkSecurity('ci', policy, { image: 'macos-base:15', snapshot: 'macos-base:15', client: 'pr-bot' });
    expect(attack.problems).toEqual([
      {
        field: 'snapshot.image',
        message: expect.stringMatching(
          /snapshot "macos-base:15" is outside client pr-bot's images .* under "pr-bot\/"/,
        ),
      },
    ]);
    expect(checkSecurity('ci', policy, { snapshot: 'other-team/cache:1', client: 'pr-bot' }).violations).toHaveLength(
      1,
    );
    // Without a client no one owns the tag: refused, saying how to fix it.
    expect(checkSecurity('ci', undefined, { snapshot: 'cache:1' }).violations[0]).toMatch(/needs an owner/);
    // Its own namespace is fine, any tag.
    expect(checkSecurity('ci', undefined, { snapshot: 'pr-bot/cache:pr-42', client: 'pr-bot' }).violations).toEqual([]);
    // A pool that lists tags allows those, to any client, and nothing else.
    const listed = { allowedSnapshotImages: ['cache-*:pr-*'] };
    expect(checkSecurity('ci', listed, { snapshot: 'cache-spm:pr-1' }).violations).toEqual([]);
    expect(checkSecurity('ci', listed, { snapshot: 'macos-base:15', client: 'x' }).violations[0]).toMatch(
      /not allowed in pool ci \(security.allowedSnapshotImages: cache-\*:pr-\*\)/,
    );
  });

  it('refuses a snapshot of a job that received secrets unless the pool allows it', () => {
    const job = { snapshot: 'bot/cache:1', client: 'bot', secrets: { TOKEN: 'gh-token' } };
    expect(checkSecurity('ci', undefined, job).violations[0]).toMatch(
      /receives secrets \(TOKEN\) may not snapshot .*allowSnapshotWithSecrets/,
    );
    expect(checkSecurity('ci', { allowSnapshotWithSecrets: true }, job).violations).toEqual([]);
    // Known only as "has secrets" (the activity's strict default for an older caller): refused as well.
    expect(checkSecurity('ci', undefined, { ...job, secrets: true }).violations).toHaveLength(1);
    expect(checkSecurity('ci', undefined, { ...job, secrets: {} }).violations).toEqual([]);
  });

  it('refuses malformed volumes and priorities in the job spec', () => {
    const errs = validateJobSpec({
      id: 'j1',
      pool: 'ci',
      image: 'macos-base:15',
      script: 'true',
      timeoutSeconds: 60,
      priority: 1000,
      volumes: [{ hostPath: 'relative/path' }, { hostPath: '/a/../etc' }],
    }).map((e) => e.field);
    expect(errs).toEqual(['priority', 'volumes.0.hostPath', 'volumes.1.hostPath']);
  });
});

describe('known_hosts pinning', () => {
  const key = randomBytes(51);
  const other = randomBytes(51);
  const b64 = key.toString('base64');

  it('matches plain, [host]:port and hashed entries, and detects a mismatch', () => {
    const salt = randomBytes(20);
    const hashed = createHmac('sha1', salt).update('[10.0.0.9]:2222').digest('base64');
    const entries = parseKnownHosts(
      `# comment\nmac1.example,10.0.0.1 ssh-ed25519 ${b64}\n[127.0.0.1]:2201 ssh-ed25519 ${b64}\n|1|${salt.toString('base64')}|${hashed} ssh-ed25519 ${b64}\n`,
    );
    expect(verifyHostKey(entries, '10.0.0.1', 22, key)).toBe('match');
    expect(verifyHostKey(entries, '127.0.0.1', 2201, key)).toBe('match');
    expect(verifyHostKey(entries, '10.0.0.9', 2222, key)).toBe('match');
    expect(verifyHostKey(entries, '10.0.0.1', 22, other)).toBe('mismatch');
    expect(verifyHostKey(entries, '127.0.0.1', 22, key)).toBe('unknown');
    expect(verifyHostKey(parseKnownHosts(`@revoked * ssh-ed25519 ${b64}`), 'x', 22, key)).toBe('revoked');
  });
});
