/** The Tart CLI driven over SSH (the contract is in shared/reference/tart.md). */
import type { SshConnection } from '../ssh/connection';
import { shq } from '../ssh/connection';
import { traceparentPrefix } from '../../src/telemetry/trace-context';
import type { HypervisorDriver, SharedDir, VmInfo, VmSettings } from './driver';

// Tart: 2 = VM does not exist / not running / already running.
const EXIT_STATE = 2;

export class TartError extends Error {
  override name = 'TartError';
}

export class TartDriver implements HypervisorDriver {
  readonly kind = 'tart';
  constructor(private readonly ssh: SshConnection) {}

  private async tart(args: string, okCodes: number[] = [0]): Promise<{ code: number; stdout: string; stderr: string }> {
    const r = await this.ssh.exec(`${traceparentPrefix()}tart ${args}`);
    const code = r.code ?? -1;
    if (!okCodes.includes(code)) {
      // Tart prints one human sentence on stderr; keep the first line, as Orchard does.
      const reason = r.stderr.trim().split('\n')[0] || r.stdout.trim() || `signal ${r.signal}`;
      throw new TartError(`tart ${args.split(' ')[0]} on ${this.ssh.target.label} exited ${code}: ${reason}`);
    }
    return { code, stdout: r.stdout, stderr: r.stderr };
  }

  async version(): Promise<string> {
    return (await this.tart('--version')).stdout.trim();
  }

  async list(): Promise<VmInfo[]> {
    const out = (await this.tart('list --format json --source local')).stdout;
    const rows = JSON.parse(out || '[]') as Array<{ Name: string; State?: string; Running?: boolean }>;
    return rows.map((r) => ({ name: r.Name, running: r.State ? r.State === 'running' : Boolean(r.Running) }));
  }

  private async exists(vm: string): Promise<boolean> {
    return (await this.list()).some((v) => v.name === vm);
  }

  async clone(source: string, vm: string): Promise<void> {
    if (await this.exists(vm)) return;
    await this.tart(`clone ${shq(source)} ${shq(vm)}`);
  }

  async configure(vm: string, settings: VmSettings): Promise<void> {
    // A fresh MAC per clone avoids the DHCP lease collisions seen with Tart's shared NAT.
    let args = `set ${shq(vm)} --random-mac`;
    if (settings.cpu) args += ` --cpu ${Math.max(1, Math.round(settings.cpu))}`;
    if (settings.memory) args += ` --memory ${Math.round(settings.memory)}`;
    // Tart only grows a disk: a smaller size than the image's is refused by `tart set`.
    if (settings.diskGiB) args += ` --disk-size ${Math.max(1, Math.round(settings.diskGiB))}`;
    await this.tart(args);
  }

  async start(vm: string, opts: { dirs?: SharedDir[]; args?: string[] } = {}): Promise<void> {
    const state = (await this.list()).find((v) => v.name === vm);
    if (!state) throw new TartError(`cannot start ${vm}: it does not exist`);
    if (state.running) return;
    // `tart run` stays in the foreground for the VM's life: detach it from the SSH session.
    const log = `"$HOME"/.marina/vms/${shq(`${vm}.log`)}`;
    const dirs = (opts.dirs ?? [])
      .map((d) => `${shq(`--dir=${d.name}:${d.path}${d.readOnly ? ':ro' : ''}`)} `)
      .join('');
    const extra = (opts.args ?? []).map((a) => `${shq(a)} `).join('');
    await this.ssh.run(
      `mkdir -p "$HOME/.marina/vms"; ${traceparentPrefix()}nohup tart run --no-graphics ${dirs}${extra}${shq(vm)} >${log} 2>&1 </dev/null & sleep 0.2; ` +
        `if ! kill -0 $! 2>/dev/null; then wait $!; rc=$?; [ $rc = 2 ] && exit 0; tail -n 5 ${log} >&2; exit $rc; fi`,
    );
  }

  async ip(vm: string, waitSeconds: number): Promise<string> {
    return (await this.tart(`ip ${shq(vm)} --wait ${Math.max(1, Math.round(waitSeconds))}`)).stdout.trim();
  }

  async stop(vm: string, timeoutSeconds: number): Promise<void> {
    await this.tart(`stop ${shq(vm)} --timeout ${timeoutSeconds}`, [0, EXIT_STATE]);
  }

  async adopt(name: string): Promise<void> {
    // A pull renames the finished folder into Tart's VM directory: that is all Tart needs.
    if (!(await this.exists(name))) throw new TartError(`${name} is not in Tart's VM directory after its pull`);
  }

  async logTail(vm: string, lines: number): Promise<string> {
    return this.ssh.run(
      `tail -n ${Math.max(1, Math.round(lines))} "$HOME"/.marina/vms/${shq(`${vm}.log`)} 2>/dev/null; true`,
    );
  }

  async destroy(vm: string): Promise<boolean> {
    const state = (await this.list()).find((v) => v.name === vm);
    if (!state) return false;
    // `tart delete` refuses a running VM: stop first.
    if (state.running) await this.stop(vm, 10);
    await this.tart(`delete ${shq(vm)}`, [0, EXIT_STATE]);
    return true;
  }
}
