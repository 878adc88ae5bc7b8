/**
 * Parallels Desktop as a second hypervisor: a pool mixing Tart and Parallels hosts, `.pvm` bundles in and
 * out of the chunked store (and `prlctl register` of what comes out), config refusals, and the pure parts
 * of the driver. The job tests themselves run on both hypervisors in job.test.ts and crash.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import { startJob } from '../src/client/jobs';
import { JobSpecError } from '../src/domain/job';
import { ConfigError, parseConfig, type LoadedConfig } from '../src/config/load';
import { buildSeedPvm, publicKeyOf, PVM_SEED_IMAGE, SEED_IMAGE } from '../src/emulator/seed-image';
import { PRLCTL_EMULATOR } from '../src/emulator/mac-host';
import { PVM_BASE_GUID, PVM_DISK } from '../src/images/chunked/pvm';
import { leaseFor, parsePrlJson } from '../activities/hypervisor/parallels';
import { fileConfig, leftoverVms, readJobLog, runCli, stack, startWorker, uniqueId } from './helpers';

const POOL = 'mixed';
let config: LoadedConfig;
let client: Client;
let stopWorker: () => Promise<void>;

beforeAll(async () => {
  // One Tart host and one Parallels host in one pool.
  config = fileConfig(
    POOL,
    (raw) => {
      const tartHost = raw.pools[0].hosts[2];
      const prlHost = { ...raw.pools[1].hosts[1], hypervisor: 'parallels' };
      // Each host in one pool only: a pool reaps the VMs on its hosts that none of its leases owns.
      raw.pools = [
        {
          ...raw.pools[0],
          hosts: [tartHost, prlHost],
          hostResources: { ...raw.pools[0].hostResources, disk: 500 },
          security: { allowedVolumes: [{ path: '/tmp/marina-prl-share/**' }] },
        },
        { ...raw.pools[1], name: 'prl-only', hosts: [raw.pools[1].hosts[0]] },
      ];
    },
    { parallels: 'prl-only' },
  );
  const started = await startWorker(config);
  client = started.w.client;
  stopWorker = started.stop;
});

afterAll(async () => {
  await stopWorker?.();
});

describe('a pool of Tart and Parallels hosts', () => {
  it('places each job on a host of its image’s hypervisor, on both hosts at once', async () => {
    const [tartHost, prlHost] = config.pools[0]!.hosts.map((h) => h.name);
    const script = 'echo "on $(basename "$MARINA_EMU_VM")"; sleep 1';
    const specs = [SEED_IMAGE, PVM_SEED_IMAGE, SEED_IMAGE, PVM_SEED_IMAGE].map((image) => ({
      id: uniqueId('mix'),
      pool: POOL,
      image,
      script,
      timeoutSeconds: 120,
    }));
    const results = await Promise.all(specs.map(async (s) => (await startJob(client, config, s)).result()));
    expect(results.map((r) => r.state)).toEqual(Array(4).fill('succeeded'));
    expect(results.map((r) => r.host)).toEqual([tartHost, prlHost, tartHost, prlHost]);
    // The Parallels job ran in a clone in the host's Parallels folder (a .pvm bundle), the Tart job in a Tart VM.
    expect(await readJobLog(config, results[1]!.log.key)).toBe(`on marina-${specs[1]!.id}.pvm\n`);
    expect(await readJobLog(config, results[0]!.log.key)).toBe(`on marina-${specs[0]!.id}\n`);
    for (const s of specs) expect(leftoverVms(s.id)).toEqual([]);
  });

  it("gives a Parallels VM its shared folders (read-only as the pool forces) and grows its disk to the job's disk resource", async () => {
    const spec = {
      id: uniqueId('shf'),
      pool: POOL,
      image: PVM_SEED_IMAGE,
      resources: { vm: 1, disk: 100 },
      volumes: [{ hostPath: '/tmp/marina-prl-share/cache', name: 'cache' }],
      // The stand-in keeps what `prlctl set` and `prl_disk_tool resize` did in the bundle's config.pvs.
      script: `grep -o '<SharedFolder[^>]*>' "$MARINA_EMU_VM/config.pvs"; grep -o '<Size>[0-9]*</Size>' "$MARINA_EMU_VM/config.pvs"`,
      timeoutSeconds: 60,
    };
    const r = await (await startJob(client, config, spec)).result();
    expect(r.state).toBe('succeeded');
    expect(await readJobLog(config, r.log.key)).toBe(
      '<SharedFolder name="cache" path="/tmp/marina-prl-share/cache" mode="ro"/>\n<Size>102400</Size>\n',
    );
  });

  it('refuses, before any workflow, an image for a hypervisor the pool or the asked label cannot give', async () => {
    const refused = async (spec: Record<string, unknown>) =>
      (
        (await startJob(client, config, { id: uniqueId('no'), script: 'true', timeoutSeconds: 60, ...spec }).catch(
          (e: unknown) => e,
        )) as JobSpecError
      ).errors;
    expect(await refused({ pool: 'prl-only', image: SEED_IMAGE })).toEqual([
      { field: 'image', message: expect.stringMatching(/is a Tart image, and pool "prl-only" has no tart host/) },
    ]);
    expect(await refused({ pool: POOL, image: PVM_SEED_IMAGE, labels: { hypervisor: 'tart' } })).toEqual([
      {
        field: 'labels.hypervisor',
        message: expect.stringMatching(/is a parallels image: it cannot run on a tart host/),
      },
    ]);
  });
});

describe('.pvm bundles in the chunked store', () => {
  it('pushes a bundle (its disk as chunks, a changed disk as a delta) and pulls a .pvm that prlctl register takes', async () => {
    const work = mkdtempSync(join(tmpdir(), 'marina-pvm-'));
    const ref = `pvm/${uniqueId('rt').toLowerCase()}`;
    // A bundle as Parallels names things: the disk folder after the VM, a data file with another GUID.
    const bundle = join(work, 'Sonoma CI.pvm');
    buildSeedPvm(bundle, publicKeyOf(join(stack().stateDir, 'keys', 'vm_ed25519')), 'Sonoma CI', 16);
    const guid = '{0d6e2f3a-1111-2222-3333-444455556666}';
    renameSync(join(bundle, 'harddisk.hdd'), join(bundle, 'Sonoma CI-0.hdd'));
    renameSync(
      join(bundle, 'Sonoma CI-0.hdd', `harddisk.hdd.0.${PVM_BASE_GUID}.hds`),
      join(bundle, 'Sonoma CI-0.hdd', `Sonoma CI-0.hdd.0.${guid}.hds`),
    );
    const cfg = join(bundle, 'config.pvs');
    writeFileSync(cfg, readFileSync(cfg, 'utf8').replace('>harddisk.hdd<', '>Sonoma CI-0.hdd<'));
    const desc = join(bundle, 'Sonoma CI-0.hdd', 'DiskDescriptor.xml');
    writeFileSync(
      desc,
      readFileSync(desc, 'utf8')
        .split(PVM_BASE_GUID)
        .join(guid)
        .replace(/<File>[^<]*<\/File>/, `<File>Sonoma CI-0.hdd.0.${guid}.hds</File>`),
    );
    const key = join(bundle, 'ssh_host_ed25519_key.pub');

    const push1 = await runCli(config, ['image', 'push', `${ref}:1`, bundle, '--vm-host-key', key]);
    expect(push1.stderr).toBe('');
    expect(push1.code).toBe(0);
    expect(push1.stdout).toMatch(/64 chunks .* uploaded/);
    // The guest changes 100 bytes: the next push uploads one chunk.
    const data = join(bundle, 'Sonoma CI-0.hdd', `Sonoma CI-0.hdd.0.${guid}.hds`);
    execFileSync('bash', [
      '-c',
      `printf '%0100d' 7 | dd of="$1" bs=1 seek=9000000 conv=notrunc 2>/dev/null`,
      '_',
      data,
    ]);
    const push2 = await runCli(config, ['image', 'push', `${ref}:2`, bundle, '--vm-host-key', key]);
    expect(push2.code).toBe(0);
    expect(push2.stdout).toMatch(/, 1 uploaded/);

    const out = join(work, 'pulled.pvm');
    const pull = await runCli(config, ['image', 'pull', `${ref}:2`, '--cache-dir', join(work, 'cache'), '--out', out]);
    expect(pull.stderr).toBe('');
    expect(pull.code).toBe(0);
    // Marina's layout: harddisk.hdd, the base image's GUID, config.pvs and DiskDescriptor.xml agreeing.
    expect(readFileSync(join(out, PVM_DISK)).equals(readFileSync(data))).toBe(true);
    expect(readFileSync(join(out, 'config.pvs'), 'utf8')).toContain('<SystemName>harddisk.hdd</SystemName>');
    expect(readFileSync(join(out, 'harddisk.hdd', 'DiskDescriptor.xml'), 'utf8')).toContain(
      `<File>${PVM_DISK.split('/')[1]}</File>`,
    );
    expect(readdirSync(out).sort()).toEqual([
      'config.pvs',
      'harddisk.hdd',
      'root',
      'ssh_host_ed25519_key',
      'ssh_host_ed25519_key.pub',
    ]);
    // The stand-in's `prlctl register` (which refuses a folder without config.pvs) takes it and lists it.
    const env = { ...process.env, HOME: join(work, 'home'), PRL_HOME: join(work, 'prl') };
    mkdirSync(env.HOME, { recursive: true });
    expect(
      execFileSync(PRLCTL_EMULATOR, ['register', out, '--regenerate-src-uuid'], { env, encoding: 'utf8' }),
    ).toMatch(/successfully registered/);
    expect(JSON.parse(execFileSync(PRLCTL_EMULATOR, ['list', '--all', '--json'], { env, encoding: 'utf8' }))).toEqual([
      { uuid: expect.stringMatching(/^\{[0-9a-f-]{36}\}$/), status: 'stopped', ip_configured: '-', name: 'Sonoma CI' },
    ]);
    // Not a Parallels image: --out says so.
    const wrong = await runCli(config, [
      'image',
      'pull',
      SEED_IMAGE,
      '--cache-dir',
      join(work, 'cache'),
      '--out',
      join(work, 'x.pvm'),
    ]);
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/not a Parallels image/);
  });

  it('refuses a bundle with snapshots, naming the fix', async () => {
    const work = mkdtempSync(join(tmpdir(), 'marina-pvm-'));
    const bundle = join(work, 'snap.pvm');
    buildSeedPvm(
      bundle,
      'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBkZ6gkuGYpG1tWn8kWwqW9m9k3PeJ9d0Ckp8a5i1mX1 x',
      'snap',
      1,
    );
    writeFileSync(join(bundle, 'harddisk.hdd', 'harddisk.hdd.0.{aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee}.hds'), 'delta');
    const r = await runCli(config, ['image', 'push', 'pvm/snapped:1', bundle]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /the VM has snapshots; delete them \(prlctl snapshot-delete\) or merge them with `prl_disk_tool merge --hdd/,
    );
  });
});

describe('config', () => {
  const errors = (pool: string) => {
    try {
      parseConfig(`imageStore: { bucket: images }\npools:\n${pool}`, '/etc/marina.yaml');
      return [];
    } catch (e) {
      if (e instanceof ConfigError) return e.problems;
      throw e;
    }
  };
  const ssh = 'ssh: { privateKey: { file: key }, knownHosts: { file: kh } }';

  it('takes hypervisor per pool and per host, and names the fix for what Parallels cannot do', () => {
    expect(
      errors(
        `  - { name: p, hypervisor: parallels, ${ssh}, hosts: [{ name: m1, address: a }, { name: m2, address: b, hypervisor: tart }] }`,
      ),
    ).toEqual([]);
    expect(errors(`  - { name: p, hypervisor: vmware, ${ssh} }`)).toEqual([
      expect.stringMatching(/^pools\.0\.hypervisor: must be "tart" or "parallels"/),
    ]);
    expect(
      errors(`  - { name: p, ${ssh}, hosts: [{ name: m1, address: a, hypervisor: parallels, resources: { vm: 3 } }] }`),
    ).toEqual([expect.stringMatching(/^pools\.0\.hosts\.0\.resources\.vm: a Parallels host runs at most 2 macOS VMs/)]);
    expect(
      errors(
        `  - { name: p, hypervisor: parallels, ${ssh}, resourceModifiers: [{ match: { gpu: 1 }, run: ['--disk=/dev/disk4'] }], hosts: [{ name: m1, address: a }] }`,
      ),
    ).toEqual([expect.stringMatching(/^pools\.0\.resourceModifiers: resource modifiers are `tart run` options/)]);
    expect(
      errors(
        `  - { name: p, hypervisor: parallels, ${ssh}, vm: { network: softnet }, hosts: [{ name: m1, address: a }] }`,
      ),
    ).toEqual([expect.stringMatching(/^pools\.0\.vm\.network: softnet is Tart's/)]);
  });
});

describe('driver parsing', () => {
  it('reads the most recent Shared-network lease for a MAC, and JSON with notices around it', () => {
    const leases = [
      '10.211.55.4="1700000900,1800,001c42aabbcc,01001c42aabbcc"',
      '10.211.55.9="1700001800,1800,001c42aabbcc,01001c42aabbcc"',
      '10.211.55.7="1700009999,1800,001c42000000,01001c42000000"',
    ].join('\n');
    expect(leaseFor(leases, '00:1C:42:AA:BB:CC')).toBe('10.211.55.9');
    expect(leaseFor(leases, '001C42FFFFFF')).toBeUndefined();
    expect(
      parsePrlJson<{ name: string }>(
        'This feature is not available in this edition of Parallels Desktop.\n[{"name":"a"}]\n',
      ),
    ).toEqual([{ name: 'a' }]);
    expect(parsePrlJson('')).toEqual([]);
  });
});
