/**
 * Builds the small base images the local stack seeds: a VM directory in Tart's archive shape (tar.gz),
 * and the same guest as a Parallels `.pvm` bundle (for the stand-ins; neither is a real macOS VM).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sshKeygen } from './mac-host';
import { parseVmHostKey } from '../images/vm-host-key';
import { PVM_BASE_GUID, PVM_DISK, PVM_HDD } from '../images/chunked/pvm';

export const SEED_IMAGE = 'macos-base:15';
/** The same guest as a Parallels Desktop bundle, for Parallels pools. */
export const PVM_SEED_IMAGE = 'macos-base-pvm:15';

export function buildSeedImage(out: string, vmPublicKey: string, diskMiB = 8): void {
  const dir = mkdtempSync(join(tmpdir(), 'marina-seed-'));
  try {
    writeFileSync(join(dir, 'config.env'), 'os=darwin\ncpu=2\nmemory=4096\ndisk=50\nmac=7e:00:00:00:00:01\n');
    // Like Cirrus images, the guest's host key is baked into the image.
    sshKeygen(join(dir, 'ssh_host_ed25519_key'), 'marina-emulated-vm');
    mkdirSync(join(dir, 'root', '.ssh'), { recursive: true });
    writeFileSync(join(dir, 'root', '.ssh', 'authorized_keys'), `${vmPublicKey.trim()}\n`);
    writeFileSync(
      join(dir, 'root', 'README'),
      'Marina emulated VM: a Linux stand-in for a macOS guest. Scripts run as real bash processes.\n',
    );
    // A disk that is mostly zeros with some data, like a real one, so fetch has bytes to move.
    const disk = Buffer.alloc(diskMiB * 1024 * 1024);
    randomBytes(disk.length / 8).copy(disk, 0);
    writeFileSync(join(dir, 'disk.img'), disk);
    execFileSync('tar', ['-czf', out, '-C', dir, '.']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export const publicKeyOf = (privateKeyFile: string): string => readFileSync(`${privateKeyFile}.pub`, 'utf8');

/**
 * The guest host key baked into an emulated VM archive, as `marina image push --vm-host-key` takes it. A real
 * image's key is inside its disk: read it with `ssh-keyscan` from a VM booted from it.
 */
export const vmHostKeyOfArchive = (archive: string): string =>
  parseVmHostKey(execFileSync('tar', ['-xzOf', archive, './ssh_host_ed25519_key.pub'], { encoding: 'utf8' }));

/**
 * A `.pvm` bundle holding the seed's guest: config.pvs (the fields Parallels' tools read: VmUuid,
 * VmName, CPU, RAM, the disk's SystemName and size, net0's MAC), harddisk.hdd with its
 * DiskDescriptor.xml and base-image data file, and the stand-in guest's files beside them.
 */
export function buildSeedPvm(out: string, vmPublicKey: string, name = 'macos-base', diskMiB = 8): void {
  const dir = mkdtempSync(join(tmpdir(), 'marina-seed-pvm-'));
  try {
    const archive = join(dir, 'seed.tgz');
    buildSeedImage(archive, vmPublicKey, diskMiB);
    const vm = join(dir, 'vm');
    mkdirSync(vm);
    execFileSync('tar', ['-xzf', archive, '-C', vm]);
    rmSync(out, { recursive: true, force: true });
    mkdirSync(join(out, PVM_HDD), { recursive: true });
    cpSync(join(vm, 'root'), join(out, 'root'), { recursive: true });
    for (const f of ['ssh_host_ed25519_key', 'ssh_host_ed25519_key.pub']) cpSync(join(vm, f), join(out, f));
    cpSync(join(vm, 'disk.img'), join(out, PVM_DISK));
    writeFileSync(
      join(out, 'config.pvs'),
      `<?xml version="1.0" encoding="UTF-8"?>
<ParallelsVirtualMachine schemaVersion="1.0">
<Identification><VmUuid>{${randomUUID()}}</VmUuid><VmName>${name}</VmName></Identification>
<Settings><Startup><View>headless</View></Startup></Settings>
<Hardware><Cpu><Number>2</Number></Cpu><Memory><RAM>4096</RAM></Memory>
<Hdd id="0"><SystemName>${PVM_HDD}</SystemName><Size>65536</Size></Hdd>
<NetworkAdapter id="0"><MAC>001C42000001</MAC></NetworkAdapter>
</Hardware>
</ParallelsVirtualMachine>
`,
    );
    writeFileSync(
      join(out, PVM_HDD, 'DiskDescriptor.xml'),
      `<?xml version="1.0" encoding="UTF-8"?>
<Parallels_disk_image Version="1.0">
<Disk_Parameters><Disk_size>${diskMiB * 2048}</Disk_size><Cylinders>${diskMiB}</Cylinders><Heads>16</Heads><Sectors>32</Sectors><Padding>0</Padding></Disk_Parameters>
<StorageData><Storage><Start>0</Start><End>${diskMiB * 2048}</End><Blocksize>2048</Blocksize>
<Image><GUID>${PVM_BASE_GUID}</GUID><Type>Compressed</Type><File>${PVM_DISK.split('/')[1]}</File></Image>
</Storage></StorageData>
<Snapshots><Shot><GUID>${PVM_BASE_GUID}</GUID><ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID></Shot></Snapshots>
</Parallels_disk_image>
`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The guest host key baked into an emulated `.pvm` bundle. */
export const vmHostKeyOfPvm = (bundle: string): string =>
  parseVmHostKey(readFileSync(join(bundle, 'ssh_host_ed25519_key.pub'), 'utf8'));
