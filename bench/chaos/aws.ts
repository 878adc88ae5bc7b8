/**
 * The chaos run's AWS pool: the EC2 Mac emulator at compressed time (as test/host.test.ts sets it up), its
 * instances answering SSH as emulated Mac hosts, and EC2's own faults injected through the emulator's admin API
 * (throttling, 500s, commit-then-drop, eventual consistency). At the end it checks the EC2 ledger (the admin API's
 * `/_emulator/ledger`): every host owned by a host workflow, still running if the host is still allocated; no
 * two hosts for one host workflow or one ClientToken; no instance left running for a workflow that ended; no job
 * VM left on a running instance.
 */
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { defaultEmulatorOptions, startEc2Emulator, type Ec2Emulator } from '../../src/emulator/ec2/server';
import { SEEDED_IMAGES } from '../../src/emulator/ec2/cloud';
import type { Ledger } from '../../src/emulator/ec2/ledger';
import { freePort } from '../../src/emulator/processes';
import { publicKeyOf } from '../../src/emulator/seed-image';
import { isJobVm } from '../../src/domain/job';

export const AWS_POOL = 'chaos-aws';
const BASELINE_CONSISTENCY = { hostMs: 2000, instanceMs: 2000 };

/** EC2 faults, each a window of this many real seconds opened through the admin API. */
export const EC2_FAULT_KINDS = ['ec2-throttle', 'ec2-500', 'ec2-drop', 'ec2-consistency'] as const;
export type Ec2FaultKind = (typeof EC2_FAULT_KINDS)[number];

type Anomaly = { kind: string; job?: string; detail: string };

export interface ChaosAws {
  emu: Ec2Emulator;
  /** The pool's config, from the stack's local pool (ssh, vm, resources) with no hosts and an `aws` block. */
  pool(local: Record<string, unknown>): Record<string, unknown>;
  inject(kind: Ec2FaultKind, seed: number, windowMs: number): Promise<void>;
  /** What the emulator answered wrongly on purpose, for the report. */
  injected(): Record<string, number>;
  /** Every fault off (the run is settling); the baseline lag stays, as on EC2. */
  calm(): Promise<void>;
  /** The oldest EC2 host still allocated and not picked before, and its workflow (the load retires it: churn). */
  oldestHostWorkflow(): { workflowId: string; hostId: string } | undefined;
  check(client: Client, anomalies: Anomaly[]): Promise<Record<string, number>>;
}

export async function startChaosAws(o: {
  state: string;
  vmPort: number;
  speed: number;
  maxHosts: number;
}): Promise<ChaosAws> {
  const opts = defaultEmulatorOptions();
  opts.speed = o.speed;
  opts.cloud.zones = [
    { name: 'us-east-1a', id: 'use1-az6', capacity: 20 },
    { name: 'us-east-1b', id: 'use1-az4', capacity: 20 },
  ];
  const sshPort = await freePort();
  const sshDir = join(o.state, 'ec2-instances');
  opts.ssh = {
    authorizedKey: publicKeyOf(join(o.state, 'keys', 'worker_ed25519')),
    dir: sshDir,
    port: sshPort,
    vmPort: o.vmPort,
    vmBootSeconds: 1,
  };
  const emu = await startEc2Emulator(opts);
  mkdirSync(join(o.state, 'secrets'), { recursive: true });
  writeFileSync(join(o.state, 'secrets', 'ec2-key-id'), 'emulator');
  writeFileSync(join(o.state, 'secrets', 'ec2-secret'), 'emulator');

  const admin = async (path: string, body: unknown): Promise<unknown> => {
    const r = await fetch(`${emu.endpoint}/_emulator/${path}`, { method: 'POST', body: JSON.stringify(body) });
    if (!r.ok) throw new Error(`emulator admin ${path}: ${r.status} ${await r.text()}`);
    return r.json();
  };
  const timers = new Set<NodeJS.Timeout>();
  /** Hosts already handed to the churn (a retired host stays allocated until its 24 h are paid). */
  const picked = new Set<string>();
  /** Each kind's window patches only its own field, so windows of different kinds may overlap. */
  const on: Record<Ec2FaultKind, [string, Record<string, number>, Record<string, number>]> = {
    'ec2-throttle': ['faults', { throttleRate: 0.3 }, { throttleRate: 0 }],
    'ec2-500': ['faults', { serverErrorRate: 0.2 }, { serverErrorRate: 0 }],
    'ec2-drop': ['faults', { dropAfterCommitRate: 0.2 }, { dropAfterCommitRate: 0 }],
    // A new host or instance id unknown to every other call for 8 s (2 s the rest of the run).
    'ec2-consistency': ['consistency', { hostMs: 8000, instanceMs: 8000 }, BASELINE_CONSISTENCY],
  };
  // EC2 is eventually consistent all the time (README, "The EC2 Mac emulator"): new ids lag 2 s the whole run.
  await admin('consistency', BASELINE_CONSISTENCY);

  return {
    emu,
    pool: (local) => ({
      ...local,
      name: AWS_POOL,
      hosts: [],
      ssh: { user: 'root', port: sshPort, privateKey: { file: 'keys/worker_ed25519' } },
      standby: [],
      aws: {
        region: 'us-east-1',
        endpoint: emu.endpoint,
        credentials: { accessKeyId: { file: 'secrets/ec2-key-id' }, secretAccessKey: { file: 'secrets/ec2-secret' } },
        instanceType: 'mac2-m2.metal',
        zones: ['us-east-1a', 'us-east-1b'],
        imageId: SEEDED_IMAGES[0]!.id,
        timeScale: o.speed,
        pollSeconds: 60,
        maxHosts: o.maxHosts,
        // A week of EC2 time: an outage of a minute is most of a day at this speed, and must not retire a
        // host that was waiting for its SSH or console.
        sshReadyTimeoutSeconds: 7 * 86400,
        consoleKeyTimeoutSeconds: 7 * 86400,
        reconcileSeconds: 3600,
        // Idle hosts are released once their 24 h are paid (not parked): the run sees hosts come and go.
        park: false,
        headroomSlots: 0,
      },
    }),
    async inject(kind, seed, windowMs) {
      const [path, set, reset] = on[kind];
      await admin(path, path === 'faults' ? { ...set, seed } : set);
      // Open for windowMs, and on until it has bitten a few requests (EC2 traffic comes in bursts: an outage
      // or a quiet pool may leave a window empty), up to four windows.
      const bites = () => {
        const i = emu.injected;
        return {
          'ec2-throttle': i.throttled,
          'ec2-500': i.serverErrors,
          'ec2-drop': i.droppedAfterCommit,
          'ec2-consistency': emu.cloud.hiddenLookups,
        }[kind];
      };
      const before = bites();
      const closeBy = Date.now() + 4 * windowMs;
      const close = () => {
        if (bites() - before < 3 && Date.now() < closeBy) return schedule(2000);
        void admin(path, reset).catch(() => undefined);
      };
      const schedule = (ms: number) => {
        const t = setTimeout(() => {
          timers.delete(t);
          close();
        }, ms);
        timers.add(t);
      };
      schedule(windowMs);
    },
    injected: () => ({
      ec2Throttled: emu.injected.throttled,
      ec2ServerErrors: emu.injected.serverErrors,
      ec2DroppedAfterCommit: emu.injected.droppedAfterCommit,
      ec2HiddenByConsistency: emu.cloud.hiddenLookups,
    }),
    async calm() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      await admin('faults', { throttleRate: 0, serverErrorRate: 0, dropAfterCommitRate: 0 });
      await admin('consistency', BASELINE_CONSISTENCY);
    },
    oldestHostWorkflow() {
      const live = [...emu.cloud.hosts.values()]
        .filter(
          (h) =>
            h.tags.get('marina:pool') === AWS_POOL &&
            h.state !== 'released' &&
            h.tags.has('marina:workflow') &&
            !picked.has(h.id),
        )
        .sort((a, b) => a.allocatedAt - b.allocatedAt);
      const h = live[0];
      if (h) picked.add(h.id);
      return h ? { workflowId: h.tags.get('marina:workflow')!, hostId: h.id } : undefined;
    },
    async check(client, anomalies) {
      const ledger = (await (await fetch(`${emu.endpoint}/_emulator/ledger`)).json()) as Ledger;
      const hosts = ledger.hosts.filter((h) => h.tags['marina:pool'] === AWS_POOL);
      const running = new Map<string, boolean>();
      const isRunning = async (wf: string): Promise<boolean> => {
        if (!running.has(wf)) {
          const d = await client.workflow
            .getHandle(wf)
            .describe()
            .catch((e: unknown) => {
              if (e instanceof WorkflowNotFoundError) return undefined;
              throw e;
            });
          running.set(wf, d?.status.name === 'RUNNING');
        }
        return running.get(wf)!;
      };
      const byWorkflow = new Map<string, string[]>();
      const byToken = new Map<string, string[]>();
      for (const h of hosts) {
        const wf = h.tags['marina:workflow'];
        if (!wf) {
          anomalies.push({ kind: 'ec2-host-unowned', detail: `${h.hostId} has no marina:workflow tag` });
          continue;
        }
        byWorkflow.set(wf, [...(byWorkflow.get(wf) ?? []), h.hostId]);
        if (h.clientToken) byToken.set(h.clientToken, [...(byToken.get(h.clientToken) ?? []), h.hostId]);
        const allocated = h.state !== 'released' && h.state !== 'released-permanent-failure';
        // An orphan the reconciler adopted is owned by its adopter.
        if (allocated && !(await isRunning(wf)) && !(await isRunning(`host/${AWS_POOL}/adopted-${h.hostId}`)))
          anomalies.push({
            kind: 'ec2-host-leaked',
            detail: `${h.hostId} (${h.state}) allocated, its workflow ${wf} ended`,
          });
      }
      for (const [wf, ids] of byWorkflow)
        if (ids.length > 1)
          anomalies.push({
            kind: 'ec2-double-allocation',
            detail: `${wf} owns ${ids.length} hosts: ${ids.join(', ')}`,
          });
      for (const [token, ids] of byToken)
        if (ids.length > 1)
          anomalies.push({ kind: 'ec2-double-allocation', detail: `ClientToken ${token}: ${ids.join(', ')}` });
      let instancesRunning = 0;
      for (const i of emu.cloud.instances.values()) {
        if (i.tags.get('marina:pool') !== AWS_POOL || i.state === 'terminated') continue;
        const wf = i.tags.get('marina:workflow');
        if (i.state === 'running' || i.state === 'pending') instancesRunning++;
        if (!wf || (!(await isRunning(wf)) && !(await isRunning(`host/${AWS_POOL}/adopted-${i.hostId}`))))
          anomalies.push({
            kind: 'ec2-instance-leaked',
            detail: `${i.id} (${i.state}) on ${i.hostId}, workflow ${wf ?? 'none'}`,
          });
        // No job VM on an instance still up (a terminated one took its VMs with it).
        const vms = join(sshDir, `${i.id}-${i.generation}`, 'tart', 'vms');
        if (i.state === 'running' && existsSync(vms))
          for (const vm of readdirSync(vms))
            if (isJobVm(vm) && !vm.startsWith('marina-standby-'))
              anomalies.push({ kind: 'vm-left', detail: `${vm} on EC2 instance ${i.id}` });
      }
      return {
        hostsEver: hosts.length,
        hostsStillAllocated: hosts.filter((h) => h.state !== 'released' && h.state !== 'released-permanent-failure')
          .length,
        hostWorkflows: byWorkflow.size,
        instancesRunning,
        ec2Days:
          Math.round(((Date.parse(ledger.now) - Date.parse(hosts[0]?.allocatedAt ?? ledger.now)) / 86400_000) * 10) /
          10,
      };
    },
  };
}
