/**
 * The embedded local default: Temporal dev server, S3 on loopback, emulated Mac
 * hosts, a seeded base image, and the config that ties them together.
 */
import { mkdirSync, writeFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { S3Client } from '@aws-sdk/client-s3';
import { freePort } from './processes';
import { startTemporalDevServer } from './temporal-dev-server';
import { DEV_S3_CREDENTIALS, ensureBucket, startS3Server } from './s3-server';
import { sshKeygen, startEmulatedHost, type EmulatedHost } from './mac-host';
import {
  buildSeedImage,
  buildSeedPvm,
  publicKeyOf,
  PVM_SEED_IMAGE,
  SEED_IMAGE,
  vmHostKeyOfArchive,
  vmHostKeyOfPvm,
} from './seed-image';
import { pushPvmBundle } from '../images/chunked/pvm';
import { ChunkedStore } from '../images/chunked/store';
import { pushVmArchive } from '../images/chunked/vm-files';
import { loadConfig, type LoadedConfig } from '../config/load';

export interface DevStackOptions {
  stateDir: string;
  hosts?: number;
  /** Emulated hosts in a second pool, `local-parallels`, driven with `prlctl` (default none). */
  parallelsHosts?: number;
  temporalPort?: number;
  uiPort?: number;
  s3Port?: number;
  headless?: boolean;
  /** Temporal keeps its state in memory (benchmarks): nothing survives a restart. */
  inMemory?: boolean;
  vmBootSeconds?: number;
  /** health / lease checks; tests shorten them */
  healthCheckSeconds?: number;
  leaseCheckSeconds?: number;
  /** Temporal server dynamic config. */
  temporalDynamicConfig?: Record<string, number | string | boolean>;
  /** An already running Temporal (a cluster, `src/emulator/temporal-cluster.ts`): no dev server is started. */
  temporalAddress?: string;
  log?: (line: string) => void;
}

export interface DevStack {
  config: LoadedConfig;
  configPath: string;
  temporalAddress: string;
  uiUrl?: string;
  s3Endpoint: string;
  hosts: EmulatedHost[];
  /** SIGKILLs the Temporal dev server and starts it again on its database and port (chaos runs). */
  killAndRestartTemporal(downMs: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startDevStack(o: DevStackOptions): Promise<DevStack> {
  const log = o.log ?? (() => undefined);
  const state = resolve(o.stateDir);
  for (const d of ['keys', 'hosts', 'logs', 'secrets']) mkdirSync(join(state, d), { recursive: true });
  const stops: Array<() => Promise<void>> = [];
  const stop = async () => {
    for (const s of stops.reverse()) await s().catch(() => undefined);
  };
  try {
    const temporalPort = o.temporalPort ?? (await freePort());
    const uiPort = o.uiPort ?? (await freePort());
    const temporalOptions = {
      port: temporalPort,
      uiPort,
      ...(o.inMemory ? {} : { dbFile: join(state, 'temporal.db') }),
      logFile: join(state, 'logs', 'temporal.log'),
      headless: o.headless,
      ...(o.temporalDynamicConfig ? { dynamicConfig: o.temporalDynamicConfig } : {}),
    };
    // With temporalAddress (a cluster, src/emulator/temporal-cluster.ts) the stack starts no dev server.
    let dev: Awaited<ReturnType<typeof startTemporalDevServer>> | undefined;
    if (!o.temporalAddress) {
      log(
        `starting Temporal dev server on 127.0.0.1:${temporalPort}${o.headless ? '' : ` (Web UI http://127.0.0.1:${uiPort})`}`,
      );
      dev = await startTemporalDevServer(temporalOptions);
      stops.push(() => dev?.stop() ?? Promise.resolve());
    }
    const temporal = { address: o.temporalAddress ?? dev!.address };
    const killAndRestartTemporal = async (downMs: number) => {
      const running = dev;
      if (!running)
        throw new Error('this stack runs no dev server: restart a cluster with src/emulator/temporal-cluster.ts');
      const exited = new Promise((r) => running.child.once('exit', r));
      try {
        process.kill(-running.child.pid!, 'SIGKILL');
      } catch {
        /* already gone */
      }
      await exited;
      await new Promise((r) => setTimeout(r, downMs));
      dev = await startTemporalDevServer(temporalOptions);
    };

    const s3Port = o.s3Port ?? (await freePort());
    log(`starting S3 (moto) on 127.0.0.1:${s3Port}`);
    const s3 = await startS3Server(s3Port, join(state, 'logs', 's3.log'));
    stops.push(() => s3.stop());
    await ensureBucket(s3.endpoint, 'marina');
    writeFileSync(join(state, 'secrets', 's3-access-key-id'), DEV_S3_CREDENTIALS.accessKeyId);
    writeFileSync(join(state, 'secrets', 's3-secret-access-key'), DEV_S3_CREDENTIALS.secretAccessKey);
    writeFileSync(join(state, 'secrets', 'demo-token'), 'dev-demo-token-value');

    const workerKey = join(state, 'keys', 'worker_ed25519');
    const vmKey = join(state, 'keys', 'vm_ed25519');
    sshKeygen(workerKey, 'marina-worker');
    sshKeygen(vmKey, 'marina-vm');

    const hostCount = o.hosts ?? 2;
    const vmPort = await freePort();
    const hosts: EmulatedHost[] = [];
    for (let i = 0; i < hostCount; i++) {
      const name = `mac-${i + 1}`;
      const host = await startEmulatedHost({
        name,
        dir: join(state, 'hosts', name),
        port: await freePort(),
        authorizedKey: publicKeyOf(workerKey),
        netIndex: i + 1,
        vmPort,
        bootSeconds: o.vmBootSeconds ?? 1,
      });
      hosts.push(host);
      stops.push(() => host.stop());
    }
    const prlHosts: EmulatedHost[] = [];
    for (let i = 0; i < (o.parallelsHosts ?? 0); i++) {
      const name = `mac-p${i + 1}`;
      const host = await startEmulatedHost({
        name,
        dir: join(state, 'hosts', name),
        port: await freePort(),
        authorizedKey: publicKeyOf(workerKey),
        netIndex: hostCount + i + 1,
        vmPort,
        bootSeconds: o.vmBootSeconds ?? 1,
      });
      prlHosts.push(host);
      stops.push(() => host.stop());
    }
    log(
      `started ${hostCount + prlHosts.length} emulated Mac hosts (Linux stand-ins): ${[...hosts, ...prlHosts].map((h) => `${h.name}@${h.port}`).join(', ')}`,
    );
    writeFileSync(join(state, 'known_hosts'), [...hosts, ...prlHosts].map((h) => h.knownHostsLine).join('\n') + '\n');

    const localPool = (name: string, hypervisor: 'tart' | 'parallels', poolHosts: EmulatedHost[]) => ({
      name,
      hypervisor,
      ssh: { user: 'root', privateKey: { file: 'keys/worker_ed25519' }, knownHosts: { file: 'known_hosts' } },
      vm: { user: 'root', port: vmPort, privateKey: { file: 'keys/vm_ed25519' }, bootTimeoutSeconds: 60 },
      hostResources: { vm: 2, cpu: 8, memory: 16384 },
      healthCheckSeconds: o.healthCheckSeconds ?? 30,
      leaseCheckSeconds: o.leaseCheckSeconds ?? 15,
      hosts: poolHosts.map((h) => ({
        name: h.name,
        address: '127.0.0.1',
        ssh: { port: h.port },
        labels: { os: 'macos', arch: 'arm64' },
      })),
    });
    const config = {
      temporal: { address: temporal.address, namespace: 'default', taskQueue: 'marina' },
      imageStore: {
        bucket: 'marina',
        prefix: 'images/',
        endpoint: s3.endpoint,
        region: 'us-east-1',
        forcePathStyle: true,
        credentials: {
          accessKeyId: { file: 'secrets/s3-access-key-id' },
          secretAccessKey: { file: 'secrets/s3-secret-access-key' },
        },
      },
      logs: { prefix: 'logs/' },
      secrets: { 'demo-token': { file: 'secrets/demo-token' } },
      pools: [
        localPool('local', 'tart', hosts),
        ...(prlHosts.length ? [localPool('local-parallels', 'parallels', prlHosts)] : []),
      ],
    };
    const configPath = join(state, 'marina.yaml');
    writeFileSync(
      configPath,
      `# Written by \`marina dev\`: the local stack (emulated Mac hosts are Linux stand-ins).\n${stringify(config)}`,
    );
    const loaded = loadConfig(configPath);

    const seed = join(state, 'seed-image.tgz');
    if (!existsSync(seed)) buildSeedImage(seed, publicKeyOf(vmKey));
    const s3c = new S3Client({
      region: 'us-east-1',
      endpoint: s3.endpoint,
      forcePathStyle: true,
      credentials: DEV_S3_CREDENTIALS,
    });
    const store = new ChunkedStore(s3c, loaded.imageStore);
    // Pushed again if a store from an older Marina holds it without its guest's host key (jobs would refuse it).
    if (!(await store.resolve(SEED_IMAGE))?.manifest.vmHostKey)
      await pushVmArchive(store, SEED_IMAGE, seed, { vmHostKey: vmHostKeyOfArchive(seed) });
    if (prlHosts.length && !(await store.resolve(PVM_SEED_IMAGE))) {
      const bundle = join(state, 'seed-image.pvm');
      buildSeedPvm(bundle, publicKeyOf(vmKey));
      await pushPvmBundle(store, PVM_SEED_IMAGE, bundle, { vmHostKey: vmHostKeyOfPvm(bundle) });
    }
    s3c.destroy();
    log(`seeded image ${SEED_IMAGE}${prlHosts.length ? ` and ${PVM_SEED_IMAGE}` : ''}`);

    return {
      config: loaded,
      configPath,
      temporalAddress: temporal.address,
      uiUrl: o.headless || o.temporalAddress ? undefined : `http://127.0.0.1:${uiPort}`,
      s3Endpoint: s3.endpoint,
      hosts: [...hosts, ...prlHosts],
      killAndRestartTemporal,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
