/**
 * What Marina needs from a hypervisor on a Mac host. Tart implements it over SSH
 * today; a Parallels (`prlctl`) driver implements the same methods next to it.
 * Every method is safe to repeat: activities call them again after a crash.
 */
export interface VmSettings {
  cpu?: number;
  /** MiB */
  memory?: number;
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
}

export interface SharedDir {
  name: string;
  path: string;
  readOnly: boolean;
}
