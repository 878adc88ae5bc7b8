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

export interface HypervisorDriver {
  readonly kind: string;
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
