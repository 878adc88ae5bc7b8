/**
 * What Marina needs from a hypervisor on a Mac host: Tart (tart.ts) and Parallels Desktop
 * (parallels.ts) implement it over SSH. Every method is safe to repeat: activities call them
 * again after a crash.
 */
export interface VmSettings {
  cpu?: number;
  /** MiB */
  memory?: number;
  /** GiB the VM's disk grows to (never shrinks): a job's `disk` resource. */
  diskGiB?: number;
}

export interface VmInfo {
  name: string;
  running: boolean;
}

/** What `boot` is asked to do: the steps of a VM's start, each skipped when already done. */
export interface BootRequest {
  source: string;
  vm: string;
  settings: VmSettings;
  dirs?: SharedDir[];
  args?: string[];
  /** How long to wait for the address before answering without one (the caller heartbeats and asks again). */
  waitSeconds: number;
}

export interface HypervisorDriver {
  readonly kind: string;
  /** A VM folder in the hypervisor's place is a VM it knows (Tart); else `adopt` registers it (Parallels). */
  readonly findsVmsByFolder: boolean;
  /**
   * Clone (unless the VM exists), configure and start (unless it runs), then wait for its address:
   * `undefined` if none came within `waitSeconds`. Safe to repeat; a retry finds its VM by name.
   */
  boot(req: BootRequest): Promise<string | undefined>;
  version(): Promise<string>;
  list(): Promise<VmInfo[]>;
  /** Clones `source` into `vm`; no-op if `vm` already exists (a retried step finds its own VM). */
  clone(source: string, vm: string): Promise<void>;
  configure(vm: string, settings: VmSettings): Promise<void>;
  /**
   * Boots the VM detached (no-op if running); `dirs` are host directories shared into it
   * (Tart: `--dir=name:path[:ro]`), `args` extra run options (a resource modifier's devices).
   */
  start(vm: string, opts?: { dirs?: SharedDir[]; args?: string[] }): Promise<void>;
  /** The VM's address on the host's private network, waiting up to `waitSeconds`. */
  ip(vm: string, waitSeconds: number): Promise<string>;
  /** Stops if running; no-op otherwise. */
  stop(vm: string, timeoutSeconds: number): Promise<void>;
  /** Stops, then deletes; no-op if absent. */
  destroy(vm: string): Promise<boolean>;
  /**
   * Makes a pulled image folder `dir` a VM known as `name`, ready to clone. Tart finds it by its
   * folder; Parallels registers the bundle. No-op if `name` is known.
   */
  adopt(name: string, dir: string): Promise<void>;
  /** The last lines of the VM's own log (boot and hypervisor trouble); '' if there is none. */
  logTail(vm: string, lines: number): Promise<string>;
}

export interface SharedDir {
  name: string;
  path: string;
  readOnly: boolean;
}

/** `boot` from a driver's separate steps, for a hypervisor without a faster way (a round trip each). */
export async function bootByParts(driver: HypervisorDriver, req: BootRequest): Promise<string | undefined> {
  await driver.clone(req.source, req.vm);
  if (!(await driver.list()).find((v) => v.name === req.vm)?.running) {
    await driver.configure(req.vm, req.settings);
    await driver.start(req.vm, { dirs: req.dirs ?? [], args: req.args ?? [] });
  }
  return driver.ip(req.vm, req.waitSeconds).catch(() => undefined);
}
