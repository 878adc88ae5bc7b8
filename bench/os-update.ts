/**
 * A realistic OS update for the image benchmark: new versions of files (contiguous runs of
 * 64 KiB–8 MiB, log-uniform, like the sizes of a system's files) over `share` of the data, and for
 * each file a few scattered 4 KiB writes elsewhere (inode, extent and directory B-tree nodes).
 * Everything 4 KiB aligned (APFS's block), new bytes random (incompressible), positions inside the
 * disk's data, deterministic.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

const KiB = 1024;
const MiB = 1024 * KiB;
const BLOCK = 4 * KiB;

export interface OsUpdate {
  writes: Array<{ offset: number; length: number }>;
  files: number;
  scattered: number;
  /** Distinct 4 KiB blocks rewritten, in bytes: what a perfect delta would move. */
  changedBytes: number;
}

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

/** `dataMiB`: the MiB-sized regions of the disk that hold data (updates land there). */
export function planOsUpdate(dataMiB: readonly number[], share: number, metaPerFile: number, seed = 7): OsUpdate {
  const rand = rng(seed);
  const target = share * dataMiB.length * MiB;
  const blocks = new Set<number>();
  const writes: OsUpdate['writes'] = [];
  const somewhere = () => dataMiB[Math.floor(rand() * dataMiB.length)]! * MiB + Math.floor(rand() * 256) * BLOCK;
  const add = (offset: number, length: number) => {
    writes.push({ offset, length });
    for (let b = offset / BLOCK; b < (offset + length) / BLOCK; b++) blocks.add(b);
  };
  let files = 0;
  let runBytes = 0;
  while (runBytes < target) {
    const length = Math.round((64 * KiB * Math.exp(rand() * Math.log(128))) / BLOCK) * BLOCK;
    add(somewhere(), length);
    runBytes += length;
    files++;
    for (let m = 0; m < metaPerFile; m++) add(somewhere(), BLOCK);
  }
  return { writes, files, scattered: files * metaPerFile, changedBytes: blocks.size * BLOCK };
}

/** Writes `dst` as `src` (holes kept) with the update's writes applied. */
export function applyOsUpdate(src: string, dst: string, update: OsUpdate, seed = 11): void {
  execFileSync('cp', ['--sparse=always', src, dst]);
  const rand = rng(seed);
  const fd = openSync(dst, 'r+');
  try {
    for (const w of update.writes) {
      const buf = Buffer.allocUnsafe(w.length);
      const u = new Uint32Array(buf.buffer, buf.byteOffset, buf.length >> 2);
      for (let i = 0; i < u.length; i++) u[i] = (rand() * 2 ** 32) >>> 0;
      writeSync(fd, buf, 0, w.length, w.offset);
    }
  } finally {
    closeSync(fd);
  }
}
