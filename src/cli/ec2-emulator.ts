/** `marina ec2-emulator`: the EC2 Mac emulator on its own, for the AWS CLI, the SDK or a Marina worker. */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { defaultEmulatorOptions, startEc2Emulator } from '../emulator/ec2/server';
import { parseDuration, UsageError } from './args';

interface Flags {
  port: string;
  speed: string;
  zones?: string;
  quota: string;
  scrub?: string;
  stopping?: string;
  occupied?: string;
  settle?: string;
  notFoundFor?: string;
  sshKey?: string;
  sshPort: string;
  stateDir: string;
  throttleRate: string;
  seed: string;
}

const rate = (flag: string, v: string): number => {
  const n = Number(v);
  if (!(n >= 0 && n <= 1)) throw new UsageError(`${flag}: "${v}" must be a share between 0 and 1, e.g. 0.3`);
  return n;
};

export function registerEc2EmulatorCommand(program: Command): void {
  program
    .command('ec2-emulator')
    .description('run the EC2 Mac emulator (EC2 Query protocol on loopback) until Ctrl-C')
    .option('--port <port>', 'listen port on 127.0.0.1', '4599')
    .option('--speed <factor>', 'virtual seconds per real second (3600: a day in 24 s)', '1')
    .option('--zones <list>', 'zones and their Mac hosts, e.g. us-east-1a=10,us-east-1b=10')
    .option('--quota <n>', 'dedicated hosts per family the account may hold', '20')
    .option('--scrub <range>', 'scrub duration range, e.g. 1h-2h')
    .option('--stopping <duration>', 'stop/terminate → the instance is gone and the scrub begins (default 15m)')
    .option('--occupied <duration>', 'after a terminate, ReleaseHosts answers Client.InvalidHost.Occupied this long (default 20m)')
    .option('--settle <duration>', 'after a scrub, listed available but launches fail this long (default 5m)')
    .option('--not-found-for <duration>', 'eventual consistency: a new host or instance id is unknown this long, real time (default off)')
    .option('--ssh-key <pubkey-file>', 'let running instances answer SSH (as emulated Mac hosts) for this public key')
    .option('--ssh-port <port>', "port of each instance's SSH server at its 127.78.x.y address", '2222')
    .option('--state-dir <dir>', 'where emulated instances keep their state', '.marina/ec2')
    .option('--throttle-rate <share>', 'share of requests answered 503 RequestLimitExceeded', '0')
    .option('--seed <n>', 'seed for scrub durations and faults', '1')
    .action(async (o: Flags) => {
      const opts = defaultEmulatorOptions();
      opts.port = Number(o.port);
      opts.speed = Number(o.speed);
      if (!(opts.speed > 0)) throw new UsageError(`--speed: "${o.speed}" must be a number > 0`);
      opts.cloud.seed = Number(o.seed);
      opts.cloud.quotaPerFamily = Number(o.quota);
      if (o.zones) {
        opts.cloud.zones = o.zones.split(',').map((z, i) => {
          const [name = '', cap = '10'] = z.split('=');
          if (!name || !/^\d+$/.test(cap))
            throw new UsageError(`--zones: "${z}" must be NAME=HOSTS, e.g. us-east-1a=10`);
          return { name, id: `use1-az${i + 1}`, capacity: Number(cap) };
        });
      }
      if (o.scrub) {
        const [lo, hi] = o.scrub.split('-');
        if (!lo || !hi) throw new UsageError(`--scrub: "${o.scrub}" must be MIN-MAX, e.g. 1h-2h`);
        opts.cloud.timings = {
          ...opts.cloud.timings,
          scrubSeconds: [parseDuration('--scrub', lo), parseDuration('--scrub', hi)],
        };
      }
      const window = (flag: string, v: string | undefined): number | undefined =>
        v === undefined ? undefined : parseDuration(flag, v);
      const windows = {
        stoppingSeconds: window('--stopping', o.stopping),
        occupiedSeconds: window('--occupied', o.occupied),
        settleSeconds: window('--settle', o.settle),
      };
      for (const [k, v] of Object.entries(windows))
        if (v !== undefined) opts.cloud.timings = { ...opts.cloud.timings, [k]: v };
      const notFoundMs = window('--not-found-for', o.notFoundFor);
      if (notFoundMs !== undefined) opts.cloud.consistency = { hostMs: notFoundMs * 1000, instanceMs: notFoundMs * 1000 };
      opts.faults = { ...opts.faults, throttleRate: rate('--throttle-rate', o.throttleRate), seed: Number(o.seed) };
      if (o.sshKey) {
        opts.ssh = {
          authorizedKey: readFileSync(o.sshKey, 'utf8'),
          dir: resolve(o.stateDir),
          port: Number(o.sshPort),
          vmPort: 2200,
          vmBootSeconds: 1,
        };
      }
      const emu = await startEc2Emulator(opts);
      console.error(
        `marina ec2-emulator: EC2 endpoint ${emu.endpoint} (region ${opts.cloud.region}, speed ×${opts.speed})`,
      );
      console.error(`  try: aws --endpoint-url ${emu.endpoint} ec2 describe-availability-zones`);
      console.error(
        `  admin: GET ${emu.endpoint}/_emulator/ledger · POST /_emulator/clock {"advanceSeconds":86400} · POST /_emulator/faults {"throttleRate":0.3}`,
      );
      await new Promise<void>((done) => {
        for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => done());
      });
      await emu.stop();
    });
}
