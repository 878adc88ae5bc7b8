/**
 * Parallels Desktop driven with `prlctl` over SSH (facts in shared/reference/parallels.md, from how
 * Parallels' own vagrant, packer and devops-service tools call it). Errors are matched on text, as for
 * Tart: Parallels documents no exit codes.
 */
import type { SshConnection } from '../ssh/connection';
import { shq } from '../ssh/connection';
import {
  bootByParts,
  type BootRequest,
  type HypervisorDriver,
  type SharedDir,
  type VmInfo,
  type VmSettings,
} from './driver';
import { PVM_HDD } from '../../src/images/chunked/pvm';

export class ParallelsError extends Error {
  override name = 'ParallelsError';
}

/** Where Marina keeps a host's Parallels VMs (a job's clone, a pulled image): the user's default VM folder. */
export const PARALLELS_VMS = 'Parallels';

/** States in which a VM holds one of the host's two macOS slots (devops-service `mac_vm.go`): all but these. */
const SLOT_FREE = new Set(['stopped', 'suspended', 'invalid']);

/** Parallels' DHCP leases on the Shared network; overridable for a host that keeps them elsewhere. */
const LEASES = '"${MARINA_PRL_LEASES:-/Library/Preferences/Parallels/parallels_dhcp_leases}"';

/** `prlctl list -a -f -j` row (devops `virtual_machine_status.go`). */
interface StatusRow {
  uuid: string;
  status: string;
  ip_configured?: string;
  name: string;
}

/** `prlctl list -i -j <vm>` row, the fields Marina reads. */
interface InfoRow {
  ID?: string;
  Name: string;
  State?: string;
  Home?: string;
  Hardware?: { net0?: { mac?: string }; hdd0?: { size?: string } };
}

/**
 * Parallels' JSON, with whatever a licence notice or progress line printed around it cut off (vagrant
 * strips it too, GH-204); `[]` if there is none.
 */
export function parsePrlJson<T>(out: string): T[] {
  const start = out.indexOf('[');
  const end = out.lastIndexOf(']');
  if (start < 0 || end < start) return [];
  return JSON.parse(out.slice(start, end + 1)) as T[];
}

/**
 * The address a lease file gives a MAC: lines `IP="expiry,leasetime,mac,clientid"`, MAC lower-case
 * without colons; the most recent lease (largest expiry - leasetime) wins (packer `ipWithLeases`).
 */
export function leaseFor(leases: string, mac: string): string | undefined {
  const want = mac.toLowerCase().replace(/[^0-9a-f]/g, '');
  let best: { ip: string; at: number } | undefined;
  for (const line of leases.split('\n')) {
    const m = /^\s*([0-9.]+)="(\d+),(\d+),([0-9a-fA-F:]+),?[^"]*"/.exec(line);
    if (!m || m[4]!.toLowerCase().replace(/:/g, '') !== want) continue;
    const at = Number(m[2]) - Number(m[3]);
    if (!best || at > best.at) best = { ip: m[1]!, at };
  }
  return best?.ip;
}

const IPV4 = /^(\d{1,3}\.){3}\d{1,3}$/;

export class ParallelsDriver implements HypervisorDriver {
  readonly kind = 'parallels';
  readonly findsVmsByFolder = false;
  private readonly macs = new Map<string, string>();
  constructor(private readonly ssh: SshConnection) {}

  private async prl(
    args: string,
    opts: { ok?: (code: number, stderr: string) => boolean; timeoutMs?: number } = {},
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    const r = await this.ssh.exec(`prlctl ${args}`, opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {});
    const code = r.code ?? -1;
    if (code !== 0 && !opts.ok?.(code, r.stderr)) {
      // prlctl prints a human sentence ("Failed to start the VM: ..."): keep its first line.
      const reason = r.stderr.trim().split('\n')[0] || r.stdout.trim().split('\n').pop() || `signal ${r.signal}`;
      throw new ParallelsError(`prlctl ${args.split(' ')[0]} on ${this.ssh.target.label} exited ${code}: ${reason}`);
    }
    return { code, stdout: r.stdout, stderr: r.stderr };
  }

  async version(): Promise<string> {
    return (await this.prl('--version')).stdout.trim();
  }

  private async rows(): Promise<StatusRow[]> {
    return parsePrlJson<StatusRow>((await this.prl('list --all --full --json')).stdout);
  }

  async list(): Promise<VmInfo[]> {
    return (await this.rows()).map((r) => ({ name: r.name, running: !SLOT_FREE.has(r.status) }));
  }

  /** One VM's details; bulk `list -i` leaves `Home` empty (a PD bug devops works around), so ask by name. */
  private async info(vm: string): Promise<InfoRow | undefined> {
    const r = await this.prl(`list --info --json ${shq(vm)}`, {
      ok: (_c, e) => /could not be found|not exist/i.test(e),
    });
    return r.code === 0 ? parsePrlJson<InfoRow>(r.stdout).find((x) => x.Name === vm) : undefined;
  }

  private async status(vm: string): Promise<StatusRow | undefined> {
    return (await this.rows()).find((r) => r.name === vm);
  }

  async clone(source: string, vm: string): Promise<void> {
    if (await this.status(vm)) return;
    // A full clone into Marina's folder, so the clone's files are where snapshots look for them.
    // (Linked clones are not made for macOS VMs: vagrant-parallels refuses them for .macvm.)
    await this.ssh.run(`mkdir -p "$HOME"/${PARALLELS_VMS}`);
    await this.prl(`clone ${shq(source)} --name ${shq(vm)} --dst "$HOME"/${PARALLELS_VMS}`);
  }

  async configure(vm: string, settings: VmSettings): Promise<void> {
    // Headless, and a VM that outlives a closed window; what packer sets on every VM it makes.
    let args = `set ${shq(vm)} --startup-view headless --on-window-close keep-running`;
    if (settings.cpu) args += ` --cpus ${Math.max(1, Math.round(settings.cpu))}`;
    if (settings.memory) args += ` --memsize ${Math.round(settings.memory)}`;
    await this.prl(args);
    // A fresh MAC per clone: duplicate MACs get duplicate leases on Shared (vagrant-parallels#441).
    await this.prl(`set ${shq(vm)} --device-set net0 --mac auto`);
    if (settings.diskGiB) {
      const home = (await this.info(vm))?.Home;
      if (!home) throw new ParallelsError(`cannot resize the disk of ${vm}: Parallels gives no folder for it`);
      // Grow only: prl_disk_tool refuses to shrink below what the guest's partitions use.
      const mb = Math.round(settings.diskGiB * 1024);
      const size = parseInt((await this.info(vm))?.Hardware?.hdd0?.size ?? '0', 10);
      if (mb > size)
        await this.ssh.run(`prl_disk_tool resize --hdd ${shq(`${home.replace(/\/$/, '')}/${PVM_HDD}`)} --size ${mb}M`);
    }
  }

  async start(vm: string, opts: { dirs?: SharedDir[]; args?: string[] } = {}): Promise<void> {
    if ((opts.args ?? []).length > 0)
      throw new ParallelsError(
        `cannot start ${vm} with ${opts.args!.join(' ')}: those are \`tart run\` options, which Parallels does not take`,
      );
    const state = await this.status(vm);
    if (!state) throw new ParallelsError(`cannot start ${vm}: it does not exist`);
    if (state.status === 'paused') return void (await this.prl(`resume ${shq(vm)}`));
    if (!SLOT_FREE.has(state.status)) return;
    // Host folder sharing on, then each folder (as vagrant-parallels does: `--mode ro|rw --enable`).
    if ((opts.dirs ?? []).length > 0) await this.prl(`set ${shq(vm)} --shf-host on`);
    for (const d of opts.dirs ?? []) {
      // Set again on a retried boot: a folder of that name from the first attempt is replaced.
      await this.prl(`set ${shq(vm)} --shf-host-del ${shq(d.name)}`, { ok: () => true });
      await this.prl(
        `set ${shq(vm)} --shf-host-add ${shq(d.name)} --path ${shq(d.path)} --mode ${d.readOnly ? 'ro' : 'rw'} --enable`,
      );
    }
    // `prlctl start` returns once the VM runs, not once the guest booted (packer step_run.go).
    await this.prl(`start ${shq(vm)}`, { ok: (_c, e) => /already running/i.test(e) });
  }

  async ip(vm: string, waitSeconds: number): Promise<string> {
    const deadline = Date.now() + Math.max(1, waitSeconds) * 1000;
    for (;;) {
      let mac = this.macs.get(vm);
      if (!mac) {
        mac = (await this.info(vm))?.Hardware?.net0?.mac;
        if (mac) this.macs.set(vm, mac);
      }
      // One round trip: Parallels Tools' report, then the Shared network's leases.
      const out = await this.ssh.run(
        `prlctl list ${shq(vm)} --all --full --json; echo; echo '#leases'; cat ${LEASES} 2>/dev/null; true`,
      );
      const [listed, leases = ''] = out.split('#leases');
      const row = parsePrlJson<StatusRow>(listed!).find((r) => r.name === vm);
      if (!row) throw new ParallelsError(`${vm} does not exist on ${this.ssh.target.label}`);
      if (row.status === 'running') {
        // ip_configured may list several addresses ("10.211.55.5 fdb2::..."): the first IPv4 one.
        const reported = (row.ip_configured ?? '').split(/[\s,]+/).find((a) => IPV4.test(a));
        const ip = reported ?? (mac ? leaseFor(leases, mac) : undefined);
        if (ip) return ip;
      }
      if (Date.now() >= deadline)
        throw new ParallelsError(
          `no IP address for ${vm} yet (state ${row.status}; Parallels Tools report none, no lease)`,
        );
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  boot(req: BootRequest): Promise<string | undefined> {
    return bootByParts(this, req);
  }

  async stop(vm: string, timeoutSeconds: number): Promise<void> {
    const state = await this.status(vm);
    if (!state || SLOT_FREE.has(state.status)) return;
    // A paused VM can be neither stopped nor deleted (vagrant-parallels PR #295).
    if (state.status === 'paused') await this.prl(`resume ${shq(vm)}`, { ok: () => true });
    const graceful = await this.prl(`stop ${shq(vm)}`, { timeoutMs: timeoutSeconds * 1000, ok: () => true }).catch(
      () => undefined,
    );
    if (graceful?.code === 0 && SLOT_FREE.has((await this.status(vm))?.status ?? 'stopped')) return;
    await this.prl(`stop ${shq(vm)} --kill`, { ok: (_c, e) => /not running|stopped/i.test(e) });
  }

  async destroy(vm: string): Promise<boolean> {
    const state = await this.status(vm);
    if (!state) return false;
    this.macs.delete(vm);
    if (state.status === 'invalid') {
      // Parallels cannot delete an invalid VM: unregister it and remove its bundle (devops DeleteVm).
      const home = (await this.info(vm))?.Home;
      await this.prl(`unregister ${shq(vm)}`);
      if (home && home.includes(`/${PARALLELS_VMS}/`)) await this.ssh.run(`rm -rf ${shq(home)}`);
      return true;
    }
    if (!SLOT_FREE.has(state.status)) await this.stop(vm, 10);
    await this.prl(`delete ${shq(vm)}`, { ok: (_c, e) => /could not be found|not exist/i.test(e) });
    return true;
  }

  async adopt(name: string, dir: string): Promise<void> {
    if (await this.status(name)) return;
    // A fresh UUID: versions pulled from one image share config.pvs, and two VMs may not share a UUID.
    const reg = await this.prl(`register ${shq(dir)} --regenerate-src-uuid`, { ok: () => true });
    // Registered under config.pvs's name; the UUID (new, or from an earlier attempt) is in config.pvs now.
    const uuid = /<VmUuid>([^<]+)<\/VmUuid>/.exec(await this.ssh.run(`cat ${shq(`${dir}/config.pvs`)}`))?.[1];
    if (!uuid)
      throw new ParallelsError(`${dir}/config.pvs names no VmUuid after \`prlctl register\`: ${reg.stderr.trim()}`);
    await this.prl(`set ${shq(uuid)} --name ${shq(name)}`);
  }

  async logTail(vm: string, lines: number): Promise<string> {
    const home = (await this.info(vm))?.Home;
    if (!home) return '';
    return this.ssh.run(
      `tail -n ${Math.max(1, Math.round(lines))} ${shq(`${home.replace(/\/$/, '')}/parallels.log`)} 2>/dev/null; true`,
    );
  }

  /** The VM's bundle folder on the host (Parallels' `Home`), if it exists. */
  async home(vm: string): Promise<string | undefined> {
    return (await this.info(vm))?.Home?.replace(/\/$/, '') || undefined;
  }
}
