/**
 * An emulated Mac host: a real OpenSSH server on loopback whose `tart` is the
 * Linux stand-in in tart-emulator.sh and whose `prlctl` (and `prl_disk_tool`) the one in
 * prlctl-emulator.sh. It is not macOS, nor Tart, nor Parallels Desktop; it lets the whole stack
 * (SSH, host keys, detached runs, VM slots) run for real on a Linux machine.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { sshd } from '../tools/binaries';
import { portOpen, startProcess, waitFor, type Managed } from './processes';

export const TART_EMULATOR = resolve(__dirname, 'tart-emulator.sh');
export const PRLCTL_EMULATOR = resolve(__dirname, 'prlctl-emulator.sh');
export const PRL_DISK_TOOL_EMULATOR = resolve(__dirname, 'prl-disk-tool-emulator.sh');

export interface EmulatedHostOptions {
  name: string;
  dir: string;
  /** loopback address sshd binds (default 127.0.0.1); EC2 instances each get their own 127.78.x.y */
  address?: string;
  port: number;
  /** public key the worker logs in with */
  authorizedKey: string;
  /** third octet of 127.77.X.0/24, the host's private "NAT" network for its VMs */
  netIndex: number;
  vmPort: number;
  bootSeconds: number;
  /** Record every command sent (the login's `sessions/` directory): a witness of what ran on the host. */
  recordSessions?: boolean;
}

export interface EmulatedHost {
  name: string;
  port: number;
  dir: string;
  /** known_hosts line pinning this host's key */
  knownHostsLine: string;
  process: Managed;
  stop(): Promise<void>;
}

export function sshKeygen(file: string, comment: string): void {
  if (existsSync(file)) return;
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file]);
}

export async function startEmulatedHost(o: EmulatedHostOptions): Promise<EmulatedHost> {
  const dir = resolve(o.dir);
  mkdirSync(join(dir, 'bin'), { recursive: true });
  mkdirSync(join(dir, 'home'), { recursive: true });
  mkdirSync(join(dir, 'tart'), { recursive: true });
  if (o.recordSessions) mkdirSync(join(dir, 'sessions'), { recursive: true });
  mkdirSync('/run/sshd', { recursive: true });
  sshKeygen(join(dir, 'ssh_host_ed25519_key'), `marina-emulated-host-${o.name}`);
  writeFileSync(join(dir, 'authorized_keys'), `${o.authorizedKey.trim()}\n`);
  // Both hypervisors' CLIs: which one Marina drives is the config's choice (a host's `hypervisor`).
  for (const [bin, target] of [
    ['tart', TART_EMULATOR],
    ['prlctl', PRLCTL_EMULATOR],
    ['prl_disk_tool', PRL_DISK_TOOL_EMULATOR],
  ] as const) {
    rmSync(join(dir, 'bin', bin), { force: true });
    symlinkSync(target, join(dir, 'bin', bin));
  }
  writeFileSync(
    join(dir, 'login'),
    `#!/usr/bin/env bash
export HOME='${dir}/home' TART_HOME='${dir}/tart' PRL_HOME='${dir}/parallels' MARINA_PRL_LEASES='${dir}/parallels/parallels_dhcp_leases' PATH='${dir}/bin:/usr/local/bin:/usr/bin:/bin'
export MARINA_EMU_HOST='${o.name}' MARINA_EMU_NET='127.77.${o.netIndex}' MARINA_EMU_VM_PORT='${o.vmPort}' MARINA_EMU_BOOT_SECONDS='${o.bootSeconds}' MARINA_EMU_SSHD='${sshd()}'
cd "$HOME"
[ -n "\${SSH_ORIGINAL_COMMAND:-}" ] || exec /bin/bash -l
# With a sessions/ directory present, every command, its environment and its stdin are recorded:
# tests read what a host was sent (e.g. that no AWS credential ever reached it).
rec='${dir}/sessions'
if [ -d "$rec" ]; then
  rec="$rec/$(date +%s%N).$$"
  printf '%s\n' "$SSH_ORIGINAL_COMMAND" > "$rec.cmd"; env > "$rec.env"
  tee "$rec.stdin" | /bin/bash -c "$SSH_ORIGINAL_COMMAND"; exit $?
fi
exec /bin/bash -c "$SSH_ORIGINAL_COMMAND"
`,
  );
  chmodSync(join(dir, 'login'), 0o755);
  writeFileSync(
    join(dir, 'sshd_config'),
    `Port ${o.port}
ListenAddress ${o.address ?? '127.0.0.1'}
HostKey ${dir}/ssh_host_ed25519_key
AuthorizedKeysFile ${dir}/authorized_keys
PidFile ${dir}/sshd.pid
StrictModes no
UsePAM no
PermitRootLogin yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
X11Forwarding no
MaxSessions 64
MaxStartups 64:30:128
ForceCommand ${dir}/login
# sshd starts the login through the user's shell, and Debian's bash then reads this machine's ~/.bashrc
# (here: pyenv init, which rehashes under a lock: 200 hosts checked at once stalled the machine). A nested
# shell level tells bash it was not started by sshd; the emulated Mac's own login sets its environment.
SetEnv SHLVL=1
LogLevel ERROR
`,
  );
  const proc = startProcess(
    `sshd ${o.name}`,
    sshd(),
    ['-D', '-e', '-f', join(dir, 'sshd_config')],
    join(dir, 'sshd.log'),
  );
  const address = o.address ?? '127.0.0.1';
  await waitFor(`emulated host ${o.name} (sshd on ${address}:${o.port})`, () => portOpen(o.port, address), 15_000);
  const pub = readFileSync(join(dir, 'ssh_host_ed25519_key.pub'), 'utf8').trim().split(/\s+/);
  return {
    name: o.name,
    port: o.port,
    dir,
    knownHostsLine: `[${address}]:${o.port} ${pub[0]} ${pub[1]}`,
    process: proc,
    async stop() {
      await proc.stop();
      stopEmulatedVms(dir);
    },
  };
}

/** Stops every VM of an emulated host (their `tart run` and Parallels VM processes outlive sshd, as on a real Mac). */
export function stopEmulatedVms(hostDir: string): void {
  try {
    execFileSync(
      'bash',
      [
        '-c',
        `for p in "$1"/tart/vms/*/run.pid "$1"/home/Parallels/*.pvm/run.pid; do [ -f "$p" ] && kill -TERM "$(cat "$p")" 2>/dev/null; done; sleep 0.5; true`,
        '_',
        hostDir,
      ],
      { stdio: 'ignore' },
    );
  } catch {
    /* nothing to stop */
  }
}
