/**
 * Parallels Desktop `.pvm` bundles in the chunked store. A bundle is a folder: `config.pvs` (XML), one
 * `<name>.hdd` folder per disk holding `DiskDescriptor.xml` and its data file(s) `<name>.hdd.0.{GUID}.hds`,
 * NVRAM and, when suspended or snapshotted, `.sav`/`.mem` files and `Snapshots.xml`. The disk's data file
 * is chunked like a Tart disk (so pulls and snapshots are deltas); every other file travels in the
 * version's small-files blob. Marina keeps one layout: the disk as `harddisk.hdd` with the base image's
 * GUID, which Parallels gives the base image of every disk (qemu docs/interop/prl-xml.txt), so a pulled
 * bundle and a job's clone put the disk where the next pull's seed is looked for.
 */
import { execFileSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { vmFilesTarCommand } from './vm-files';
import { localHelper } from './helper';
import type { ChunkedStore, PushResult } from './store';
import { pushDisk, type PushOptions } from './transfer';

/** Parallels' fixed ID of a disk's base image (the only image of a disk without snapshots). */
export const PVM_BASE_GUID = '{5fbaabe3-6958-40ff-92a7-860e329aab41}';
export const PVM_HDD = 'harddisk.hdd';
/** Where Marina's Parallels images keep their disk, relative to the bundle. */
export const PVM_DISK = `${PVM_HDD}/${PVM_HDD}.0.${PVM_BASE_GUID}.hds`;

/** The hypervisor an image version was made for, from where its disk sits (a bundle's .hds: Parallels). */
export const imageHypervisor = (m: { disk?: string }): 'tart' | 'parallels' =>
  m.disk === PVM_DISK ? 'parallels' : 'tart';

export class PvmError extends Error {
  override name = 'PvmError';
}

/** Whether a local path is a Parallels bundle (a folder with config.pvs). */
export const isPvmBundle = (path: string): boolean =>
  existsSync(join(path, 'config.pvs')) && statSync(path).isDirectory();

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * A bundle ready to push: `disk` is the data file (read in place), `extras` the tar.gz of every other
 * file, renamed to Marina's layout. Refused, with the fix: a bundle with several disks, snapshots or a
 * suspended state (their data would be lost or half-kept).
 */
export function unpackPvm(bundle: string): { disk: string; extras: Buffer; cleanup(): void } {
  if (!existsSync(bundle) || !statSync(bundle).isDirectory())
    throw new PvmError(`${bundle} is not a folder: a Parallels VM is a .pvm bundle folder`);
  if (!existsSync(join(bundle, 'config.pvs')))
    throw new PvmError(`${bundle} holds no config.pvs: not a Parallels VM bundle`);
  const entries = readdirSync(bundle);
  const hdds = entries.filter((e) => e.endsWith('.hdd') && statSync(join(bundle, e)).isDirectory());
  if (hdds.length !== 1)
    throw new PvmError(
      `${bundle} has ${hdds.length} disks (${hdds.join(', ') || 'none'}); a Marina image carries exactly one: remove the others with \`prlctl set <vm> --device-del hddN\``,
    );
  const hdd = hdds[0]!;
  const suspended = entries.filter((e) => /\.(sav|mem)$/.test(e));
  if (suspended.length > 0)
    throw new PvmError(
      `${bundle} is suspended (${suspended.join(', ')}); shut the guest down and run \`prlctl stop <vm>\` (or \`prlctl stop <vm> --drop-state\`) first`,
    );
  const hds = readdirSync(join(bundle, hdd)).filter((e) => e.endsWith('.hds'));
  if (hds.length !== 1)
    throw new PvmError(
      `${bundle}/${hdd} has ${hds.length} data files (${hds.join(', ') || 'none'}): ${hds.length > 1 ? `the VM has snapshots; delete them (prlctl snapshot-delete) or merge them with \`prl_disk_tool merge --hdd ${join(bundle, hdd)}\`` : 'no disk data'}`,
    );
  const dataFile = hds[0]!;
  const dir = mkdtempSync(join(tmpdir(), 'marina-pvm-'));
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  try {
    const staged = join(dir, 'bundle');
    // Everything but the data file (which may be hundreds of GB and is read where it is).
    cpSync(bundle, staged, { recursive: true, filter: (src) => src !== join(bundle, hdd, dataFile) });
    if (hdd !== PVM_HDD) {
      renameSync(join(staged, hdd), join(staged, PVM_HDD));
      // config.pvs names the disk folder (relative or absolute <SystemName>, <UserFriendlyName>).
      const cfg = readFileSync(join(staged, 'config.pvs'), 'utf8');
      writeFileSync(
        join(staged, 'config.pvs'),
        cfg.replace(new RegExp(`(>|/)${escapeRe(hdd)}(<)`, 'g'), `$1${PVM_HDD}$2`),
      );
    }
    const descriptor = join(staged, PVM_HDD, 'DiskDescriptor.xml');
    const guid = /\{[0-9a-fA-F-]{36}\}/.exec(dataFile)?.[0];
    if (existsSync(descriptor)) {
      let xml = readFileSync(descriptor, 'utf8').split(dataFile).join(basename(PVM_DISK));
      if (guid && guid !== PVM_BASE_GUID) xml = xml.split(guid).join(PVM_BASE_GUID);
      writeFileSync(descriptor, xml);
    }
    const extras = execFileSync('bash', ['-c', vmFilesTarCommand(JSON.stringify(staged), PVM_DISK)], {
      maxBuffer: 1 << 28,
    });
    return { disk: join(bundle, hdd, dataFile), extras, cleanup };
  } catch (e) {
    cleanup();
    throw e;
  }
}

/**
 * Writes a pulled Parallels version (a cache folder: the bundle's files and the disk in Marina's layout)
 * out as a `.pvm` bundle that `prlctl register` takes. Copy-on-write where the file system allows.
 */
export function writePvmBundle(pulled: string, out: string): void {
  if (existsSync(out)) throw new PvmError(`${out} exists; give a new path for the bundle`);
  if (!existsSync(join(pulled, PVM_DISK)) || !existsSync(join(pulled, 'config.pvs')))
    throw new PvmError(`${pulled} holds no Parallels VM (no config.pvs or ${PVM_DISK})`);
  const tmp = `${out}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  execFileSync('cp', ['-a', '--reflink=auto', `${pulled}/.`, tmp], { stdio: ['ignore', 'ignore', 'pipe'] });
  // The cache's completion marker is Marina's, not the bundle's.
  rmSync(join(tmp, '.complete'), { force: true });
  renameSync(tmp, out);
}

/** Pushes a `.pvm` bundle from this machine: its disk's data file chunked, every other file beside. */
export async function pushPvmBundle(
  store: ChunkedStore,
  ref: string,
  bundle: string,
  opts: Omit<PushOptions, 'extras' | 'diskPath'> = {},
): Promise<PushResult> {
  const vm = unpackPvm(bundle);
  try {
    return await pushDisk(store, localHelper(), ref, vm.disk, { ...opts, extras: vm.extras, diskPath: PVM_DISK });
  } finally {
    vm.cleanup();
  }
}
