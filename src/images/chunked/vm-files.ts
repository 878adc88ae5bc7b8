/**
 * A VM directory is its raw disk (`disk.img`, chunked) and a few small files (Tart: config.json,
 * nvram.bin), which travel as one tar.gz blob beside the chunks (the version's `extras`).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { localHelper } from './helper';
import type { ChunkedStore, PushResult } from './store';
import { pushDisk, type PushOptions } from './transfer';

export const VM_DISK = 'disk.img';

/**
 * Never part of an image: what a running VM or a pull leaves behind (the emulators' run files, a
 * Parallels VM's log and lock). The disk itself is chunked apart.
 */
export const VM_RUNTIME_FILES = ['.complete', 'run.pid', 'ip', 'login', 'sshd_config', 'parallels.log', '.lock'];

/**
 * The shell command that writes a VM directory's small files as tar.gz to stdout (run on a host).
 * `disk` is where the disk sits in the directory (`disk.img` for Tart; a path in the `.hdd` of a bundle).
 */
export const vmFilesTarCommand = (dirExpr: string, disk: string = VM_DISK): string => {
  const skip = [disk, `${disk}.journal`, ...VM_RUNTIME_FILES];
  // Each pattern quoted: a Parallels disk's name holds braces. Anchored (./), so a guest file of the same name stays.
  return `tar -czf - -C ${dirExpr} ${skip.map((f) => `'--exclude=./${f.replace(/'/g, `'\\''`)}'`).join(' ')} .`;
};

/** Splits a `tart export` archive (tar.gz of a VM directory) into its disk and its small files. */
export function unpackVmArchive(archive: string): { disk: string; extras: Buffer; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'marina-vm-'));
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  try {
    execFileSync('tar', ['-xzf', archive, '-C', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
    if (!existsSync(join(dir, VM_DISK))) throw new Error(`${archive} holds no ${VM_DISK}: not a VM archive`);
    const extras = execFileSync('bash', ['-c', vmFilesTarCommand(JSON.stringify(dir))], { maxBuffer: 1 << 28 });
    return { disk: join(dir, VM_DISK), extras, cleanup };
  } catch (e) {
    cleanup();
    throw e;
  }
}

/** Pushes a `tart export` archive from this machine: its disk chunked, its small files beside. */
export async function pushVmArchive(
  store: ChunkedStore,
  ref: string,
  archive: string,
  opts: Omit<PushOptions, 'extras'> = {},
): Promise<PushResult> {
  const vm = unpackVmArchive(archive);
  try {
    return await pushDisk(store, localHelper(), ref, vm.disk, { ...opts, extras: vm.extras });
  } finally {
    vm.cleanup();
  }
}
