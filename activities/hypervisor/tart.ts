/** The Tart CLI driven over SSH (the contract is in shared/reference/tart.md). */
import type { SshConnection } from '../ssh/connection';
import { shq } from '../ssh/connection';
import { traceparentPrefix } from '../../src/telemetry/trace-context';
import type { BootRequest, HypervisorDriver, SharedDir, VmInfo, VmSettings } from './driver';

// Tart: 2 = VM does not exist / not running / already running.
const EXIT_STATE = 2;
/** How often a boot asks `tart ip` (whose own `--wait` polls once a second: too coarse for a VM that boots in one). */
const IP_POLL_SECONDS = 0.05;
/** A `tart get` answer for a running VM (Tart's JSON may be pretty-printed). */
const RUNNING = `'"State" *: *"running"'`;

export class TartError extends Error {
  override name = 'TartError';
}

export class TartDriver implements HypervisorDriver {
  readonly kind = 'tart';
  readonly findsVmsByFolder = true;
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
    await this.tart(setArgs(vm, settings));
  }

  async start(vm: string, opts: { dirs?: SharedDir[]; args?: string[] } = {}): Promise<void> {
    const state = (await this.list()).find((v) => v.name === vm);
    if (!state) throw new TartError(`cannot start ${vm}: it does not exist`);
    if (state.running) return;
    await this.ssh.run(
      `${runDetached(vm, opts)} sleep 0.2; ` +
        `if ! kill -0 $! 2>/dev/null; then wait $!; rc=$?; [ $rc = 2 ] && exit 0; tail -n 5 ${vmLog(vm)} >&2; exit $rc; fi`,
    );
  }

  /**
   * The whole boot in one SSH round trip: clone unless the VM exists, set and run it unless it runs,
   * then ask `tart ip` every 0.05 s. A `tart run` that dies on the way (the 2-VM limit, a bad disk) ends
   * the wait with its log's tail; one that exits 2 found the VM already running (a concurrent attempt).
   */
  async boot(req: BootRequest): Promise<string | undefined> {
    const vm = shq(req.vm);
    const tries = Math.max(1, Math.round(req.waitSeconds / IP_POLL_SECONDS));
    const r = await this.ssh.exec(
      `${traceparentPrefix() ? `export ${traceparentPrefix()}; ` : ''}` +
        `st=$(tart get ${vm} --format json 2>/dev/null) || { tart clone ${shq(req.source)} ${vm} || exit $?; st=; }
pid=
if ! printf '%s' "$st" | grep -Eq ${RUNNING}; then
  tart ${setArgs(req.vm, req.settings)} || exit $?
  ${runDetached(req.vm, req)} pid=$!
fi
i=0
while [ $i -lt ${tries} ]; do
  ip=$(tart ip ${vm} 2>/dev/null) && [ -n "$ip" ] && { echo "$ip"; exit 0; }
  if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid"; rc=$?; pid=
    [ $rc = 2 ] || { tail -n 5 ${vmLog(req.vm)} >&2; exit $rc; }
  fi
  sleep ${IP_POLL_SECONDS}; i=$((i + 1))
done
exit 0`,
    );
    if (r.code !== 0) {
      const reason = r.stderr.trim().split('\n').slice(-5).join('\n') || `signal ${r.signal}`;
      throw new TartError(`booting ${req.vm} on ${this.ssh.target.label} failed (exit ${r.code}): ${reason}`);
    }
    return r.stdout.trim() || undefined;
  }

  async ip(vm: string, waitSeconds: number): Promise<string> {
    return (await this.tart(`ip ${shq(vm)} --wait ${Math.max(1, Math.round(waitSeconds))}`)).stdout.trim();
  }

  async stop(vm: string, timeoutSeconds: number): Promise<void> {
    await this.tart(`stop ${shq(vm)} --timeout ${timeoutSeconds}`, [0, EXIT_STATE]);
  }

  async adopt(name: string): Promise<void> {
    // A pull renames the finished folder into Tart's VM directory: that is all Tart needs.
    const r = await this.ssh.exec(`tart get ${shq(name)} --format json`);
    if (r.code !== 0) throw new TartError(`${name} is not in Tart's VM directory after its pull`);
  }

  async logTail(vm: string, lines: number): Promise<string> {
    return this.ssh.run(
      `tail -n ${Math.max(1, Math.round(lines))} "$HOME"/.marina/vms/${shq(`${vm}.log`)} 2>/dev/null; true`,
    );
  }

  /** Stop (a power-off: the VM is going) and delete in one round trip; false if there was no such VM. */
  async destroy(vm: string): Promise<boolean> {
    const q = shq(vm);
    const r = await this.ssh.exec(
      `${traceparentPrefix() ? `export ${traceparentPrefix()}; ` : ''}` +
        `st=$(tart get ${q} --format json 2>/dev/null) || { echo ABSENT; exit 0; }
if printf '%s' "$st" | grep -Eq ${RUNNING}; then tart stop ${q} --timeout 10; rc=$?; [ $rc = 0 ] || [ $rc = ${EXIT_STATE} ] || exit $rc; fi
tart delete ${q}; rc=$?; [ $rc = 0 ] || [ $rc = ${EXIT_STATE} ] || exit $rc
echo DELETED`,
    );
    if (r.code !== 0) {
      const reason = r.stderr.trim().split('\n')[0] || `signal ${r.signal}`;
      throw new TartError(`destroying ${vm} on ${this.ssh.target.label} failed (exit ${r.code}): ${reason}`);
    }
    return r.stdout.includes('DELETED');
  }
}

/** `set …` arguments for a fresh clone. */
function setArgs(vm: string, settings: VmSettings): string {
  // A fresh MAC per clone avoids the DHCP lease collisions seen with Tart's shared NAT.
  let args = `set ${shq(vm)} --random-mac`;
  if (settings.cpu) args += ` --cpu ${Math.max(1, Math.round(settings.cpu))}`;
  if (settings.memory) args += ` --memory ${Math.round(settings.memory)}`;
  // Tart only grows a disk: a smaller size than the image's is refused by `tart set`.
  if (settings.diskGiB) args += ` --disk-size ${Math.max(1, Math.round(settings.diskGiB))}`;
  return args;
}

const vmLog = (vm: string) => `"$HOME"/.marina/vms/${shq(`${vm}.log`)}`;

/** `tart run` stays in the foreground for the VM's life: detached from the SSH session, its output to a log. */
function runDetached(vm: string, opts: { dirs?: SharedDir[]; args?: string[] }): string {
  const dirs = (opts.dirs ?? []).map((d) => `${shq(`--dir=${d.name}:${d.path}${d.readOnly ? ':ro' : ''}`)} `).join('');
  const extra = (opts.args ?? []).map((a) => `${shq(a)} `).join('');
  return `mkdir -p "$HOME/.marina/vms"; ${traceparentPrefix()}nohup tart run --no-graphics ${dirs}${extra}${shq(vm)} >${vmLog(vm)} 2>&1 </dev/null &`;
}
