/**
 * The EC2 Mac emulator's HTTP face: the real EC2 Query protocol on loopback, so the
 * unmodified @aws-sdk/client-ec2 (or the AWS CLI) works against it by `endpoint`, plus
 * the admin API under /_emulator/ (admin.ts). Here: fault injection, DryRun and IAM
 * refusals around each action (actions.ts), and SSH for instances that reach SSH-ready.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { seeded, type Uniform } from '../../ec2mac/random';
import { startEmulatedHost, type EmulatedHost } from '../mac-host';
import { normaliseKey } from '../../ec2mac/console-host-keys';
import { DEFAULT_EMULATOR_TIMINGS, Ec2MacCloud, type CloudOptions, type Instance } from './cloud';
import { EmulatorClock } from './clock';
import { DRY_RUN_ACTIONS, act } from './actions';
import { NO_FAULTS, serveAdmin, type AdminTarget, type Faults } from './admin';
import { PageTokens } from './checks';
import { Ec2Error, errorXml, responseXml } from './wire';

export { NO_FAULTS, type Faults } from './admin';

export interface InstanceSsh {
  /** Public key the worker logs in with. */
  authorizedKey: string;
  /** Where emulated hosts keep their state. */
  dir: string;
  /** Port each instance's SSH server listens on, at its own 127.78.x.y address. */
  port: number;
  vmPort: number;
  vmBootSeconds: number;
  /** Each instance records every command it is sent (a `sessions/` directory in its state): tests' witness. */
  recordSessions?: boolean;
  /**
   * Where the count of instances' VM networks (127.77.X.0/24) starts: two emulators beside each other in one
   * test give different ones, so their VMs never share an address.
   */
  netIndexStart?: number;
}

export interface Ec2EmulatorOptions {
  port: number;
  cloud: CloudOptions;
  /** Virtual seconds per real second. */
  speed: number;
  faults: Faults;
  ssh?: InstanceSsh;
}

export function defaultEmulatorOptions(): Ec2EmulatorOptions {
  return {
    port: 0,
    cloud: {
      region: 'us-east-1',
      zones: [
        { name: 'us-east-1a', id: 'use1-az6', capacity: 50 },
        { name: 'us-east-1b', id: 'use1-az4', capacity: 50 },
      ],
      quotaPerFamily: 20,
      timings: DEFAULT_EMULATOR_TIMINGS,
      seed: 1,
    },
    speed: 1,
    faults: NO_FAULTS,
  };
}

export interface Ec2Emulator {
  endpoint: string;
  cloud: Ec2MacCloud;
  clock: EmulatorClock;
  setFaults(f: Partial<Faults>): void;
  /** Requests the fault injection answered (throttled, 500) or committed and dropped, since the start: chaos runs' proof. */
  injected: { throttled: number; serverErrors: number; droppedAfterCommit: number };
  /** SSH endpoint of a running instance, once it answers. */
  sshOf(instanceId: string): { host: string; port: number; knownHostsLine: string } | undefined;
  stop(): Promise<void>;
}

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function startEc2Emulator(o: Ec2EmulatorOptions): Promise<Ec2Emulator> {
  const clock = new EmulatorClock(o.speed);
  const cloud = new Ec2MacCloud(o.cloud, clock);
  let faults = o.faults;
  let rng: Uniform = seeded(faults.seed);
  const ssh = new Map<string, { generation: number; host?: EmulatedHost; starting?: Promise<EmulatedHost> }>();
  let netIndex = o.ssh?.netIndexStart ?? 100;

  const syncSsh = (): void => {
    if (!o.ssh) return;
    cloud.settle();
    const now = clock.now();
    // An instance dropped from the cloud (its host vanished) stops answering too.
    for (const [id, cur] of [...ssh]) {
      if (cloud.instances.has(id)) continue;
      ssh.delete(id);
      void (cur.starting ?? Promise.resolve(cur.host!)).then((h) => h.stop()).catch(() => undefined);
    }
    for (const i of cloud.instances.values()) {
      const want = i.state === 'running' && i.sshAt !== undefined && i.sshAt <= now;
      const cur = ssh.get(i.id);
      if (cur && (!want || cur.generation !== i.generation)) {
        ssh.delete(i.id);
        void (cur.starting ?? Promise.resolve(cur.host!)).then((h) => h.stop()).catch(() => undefined);
      }
      if (want && !ssh.has(i.id)) {
        const entry: { generation: number; host?: EmulatedHost; starting?: Promise<EmulatedHost> } = {
          generation: i.generation,
        };
        const dir = join(o.ssh.dir, `${i.id}-${i.generation}`);
        mkdirSync(dir, { recursive: true });
        entry.starting = startEmulatedHost({
          name: i.id,
          dir,
          address: i.privateIp,
          port: o.ssh.port,
          authorizedKey: o.ssh.authorizedKey,
          netIndex: (netIndex++ % 150) + 100,
          vmPort: o.ssh.vmPort,
          bootSeconds: o.ssh.vmBootSeconds,
          recordSessions: o.ssh.recordSessions === true,
        });
        entry.starting.then(
          (h) => {
            entry.host = h;
            entry.starting = undefined;
          },
          () => ssh.delete(i.id),
        );
        ssh.set(i.id, entry);
      }
    }
  };
  const timer = o.ssh ? setInterval(syncSsh, 200) : undefined;

  const hostKeyOf = (i: Instance): string | undefined => {
    const e = ssh.get(i.id);
    if (!o.ssh || !e || e.generation !== i.generation) return undefined;
    try {
      // Written before sshd starts: the key the instance prints is the one its sshd will offer.
      return normaliseKey(readFileSync(join(o.ssh.dir, `${i.id}-${i.generation}`, 'ssh_host_ed25519_key.pub'), 'utf8'));
    } catch {
      return undefined;
    }
  };

  const injected = { throttled: 0, serverErrors: 0, droppedAfterCommit: 0 };
  const denied = new Set<string>();
  const pageTokens = new PageTokens();
  const adminTarget: AdminTarget = {
    cloud,
    clock,
    faults: () => faults,
    setFaults: (f) => {
      faults = { ...faults, ...f };
      rng = seeded(faults.seed);
    },
    pageCap: 1000,
    denied,
    syncSsh,
  };

  const server: Server = createServer((req, res) => {
    const requestId = randomUUID();
    const path = (req.url ?? '/').split('?')[0]!;
    void (async () => {
      if (path.startsWith('/_emulator/')) return serveAdmin(adminTarget, req, res, path);
      const p = new URLSearchParams(await body(req));
      const action = p.get('Action') ?? '';
      const send = (status: number, xmlText: string): void => {
        // Date carries the emulated clock, as AWS's carries AWS's: clients read EC2's "now" from it.
        res
          .writeHead(status, {
            'content-type': 'text/xml;charset=UTF-8',
            'x-amzn-requestid': requestId,
            date: new Date(clock.now() * 1000).toUTCString(),
          })
          .end(xmlText);
      };
      const faulty = faults.actions.length === 0 || faults.actions.includes(action);
      if (faulty && faults.slowMs > 0) await new Promise((r) => setTimeout(r, faults.slowMs));
      if (faulty && rng() < faults.throttleRate) {
        injected.throttled++;
        return send(503, errorXml('RequestLimitExceeded', 'Request limit exceeded.', requestId));
      }
      if (faulty && rng() < faults.serverErrorRate) {
        injected.serverErrors++;
        return send(500, errorXml('InternalError', 'An internal error has occurred.', requestId));
      }
      try {
        const env = { hostKeyOf, pageCap: adminTarget.pageCap, pageTokens };
        const dryRun = p.get('DryRun');
        if (dryRun !== null && !DRY_RUN_ACTIONS.has(action))
          throw new Ec2Error('UnknownParameter', `The parameter DryRun is not recognized for ${action}`);
        if (denied.has(action))
          throw new Ec2Error('UnauthorizedOperation', 'You are not authorized to perform this operation.', 403);
        if (dryRun === 'true') {
          // The call runs and is undone: its own refusal (unknown id, busy host, wrong state) answers as it
          // would; a call that would succeed answers DryRunOperation, 412, as EC2 does. Nothing happens.
          cloud.dryRun(() => act(cloud, action, p, env));
          return send(
            412,
            errorXml('DryRunOperation', 'Request would have succeeded, but DryRun flag is set.', requestId),
          );
        }
        const out = act(cloud, action, p, env);
        if (faulty && faults.holdAfterCommitMs > 0) await new Promise((r) => setTimeout(r, faults.holdAfterCommitMs));
        if (faulty && rng() < faults.dropAfterCommitRate) {
          injected.droppedAfterCommit++;
          req.socket.destroy(); // committed, answer lost
          return;
        }
        send(200, responseXml(action, requestId, out));
      } catch (e) {
        if (e instanceof Ec2Error) return send(e.status, errorXml(e.code, e.message, requestId));
        send(500, errorXml('InternalError', (e as Error).message, requestId));
      }
    })().catch((e: unknown) => {
      if (!res.headersSent) res.writeHead(500).end(String(e));
    });
  });
  await new Promise<void>((resolve) => server.listen(o.port, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  // Instances answer SSH at 127.78.B.N on one port: B from the emulator's own port keeps emulators apart.
  cloud.ipPrefix = `127.78.${(port % 250) + 1}`;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    cloud,
    clock,
    setFaults: adminTarget.setFaults,
    injected,
    sshOf(id) {
      const h = ssh.get(id)?.host;
      const i = cloud.instances.get(id);
      return h && i ? { host: i.privateIp, port: h.port, knownHostsLine: h.knownHostsLine } : undefined;
    },
    async stop() {
      if (timer) clearInterval(timer);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await Promise.all(
        [...ssh.values()].map(async (e) => (e.host ?? (await e.starting))?.stop().catch(() => undefined)),
      );
    },
  };
}
