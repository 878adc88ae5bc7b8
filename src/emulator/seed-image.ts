/** Builds the small base image the local stack seeds: a VM directory in Tart's archive shape (tar.gz). */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sshKeygen } from './mac-host';
import { parseVmHostKey } from '../images/vm-host-key';

export const SEED_IMAGE = 'macos-base:15';

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
