/**
 * Which chunk size (256 KiB-4 MiB): dedup against per-chunk overhead, on a modelled OS update. A
 * 100 GiB disk with 30 GiB of data gets a new version that changes 5 % of its data the way an
 * Xcode or macOS update does: most changed bytes in new or rewritten files (contiguous runs of
 * 64 KiB-64 MiB, placed at random inside the data), the rest in scattered 4-16 KiB metadata writes
 * (file-system B-trees, catalogs). For each chunk size it prints what a delta pull moves (chunks
 * touched x chunk size) next to the changed bytes, the manifest's size and entry count, and the
 * ranged GETs a cold and a delta pull make (merged as the planner merges them). Deterministic, no I/O.
 *   node --import tsx bench/chunk-size.ts [scatteredShare=0.2]
 */
import { seeded } from '../src/ec2mac/random';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const DISK = 100 * GiB;
const DATA = 30 * GiB;
const CHANGED = 0.05 * DATA;
/** Bytes per manifest entry of a data chunk (JSON: hash, pack id, offset, length); a zero chunk is `null,`. */
const ENTRY_BYTES = 150;
const MAX_RANGE = 16 * MiB;

const scatteredShare = Number(process.argv[2] ?? 0.2);
const uniform = seeded(42);
const int = (lo: number, hi: number) => lo + Math.floor(uniform() * (hi - lo + 1));

// Data sits in the first DATA bytes' worth of extents spread over the disk: 1,024 extents of 30 MiB.
const extents = Array.from({ length: 1024 }, (_, i) => ({
  start: Math.floor((i * DISK) / 1024),
  length: DATA / 1024,
}));
const randomDataOffset = (len: number) => {
  const e = extents[int(0, extents.length - 1)]!;
  return e.start + int(0, Math.max(0, e.length - len));
};

/** Changed byte ranges: contiguous file rewrites plus scattered small writes. */
const changes: Array<[number, number]> = [];
let budget = CHANGED * (1 - scatteredShare);
while (budget > 0) {
  const len = Math.min(budget, 2 ** int(16, 26)); // 64 KiB .. 64 MiB
  changes.push([randomDataOffset(len), len]);
  budget -= len;
}
budget = CHANGED * scatteredShare;
while (budget > 0) {
  const len = 4 * KiB * int(1, 4);
  changes.push([randomDataOffset(len), len]);
  budget -= len;
}
const changedBytes = changes.reduce((n, [, l]) => n + l, 0);

/** Ranged GETs for a set of chunk indexes, written in disk order into packs: neighbours merge up to MAX_RANGE. */
function gets(indexes: number[], chunkSize: number): number {
  let n = 0;
  let runBytes = 0;
  let prev = -2;
  for (const i of indexes) {
    if (i === prev + 1 && runBytes + chunkSize <= MAX_RANGE) runBytes += chunkSize;
    else [n, runBytes] = [n + 1, chunkSize];
    prev = i;
  }
  return n;
}

console.log(
  `disk ${DISK / GiB} GiB, ${DATA / GiB} GiB data; new version: ${(changedBytes / GiB).toFixed(2)} GiB changed, ${(scatteredShare * 100).toFixed(0)} % of it in scattered 4-16 KiB writes`,
);
console.log('chunk     delta moves   x changed   manifest   entries   GETs cold   GETs delta');
for (const chunkSize of [256 * KiB, 512 * KiB, MiB, 2 * MiB, 4 * MiB]) {
  const touched = new Set<number>();
  for (const [off, len] of changes)
    for (let c = Math.floor(off / chunkSize); c <= Math.floor((off + len - 1) / chunkSize); c++) touched.add(c);
  const moved = touched.size * chunkSize;
  const dataChunks = extents.flatMap((e) =>
    Array.from({ length: Math.ceil(e.length / chunkSize) }, (_, k) => Math.floor(e.start / chunkSize) + k),
  );
  const entries = DISK / chunkSize;
  console.log(
    [
      `${chunkSize / KiB} KiB`.padEnd(9),
      `${(moved / GiB).toFixed(2)} GiB`.padStart(11),
      `${(moved / changedBytes).toFixed(2)}x`.padStart(11),
      `${((dataChunks.length * ENTRY_BYTES + (entries - dataChunks.length) * 5) / MiB).toFixed(1)} MiB`.padStart(10),
      String(entries).padStart(9),
      String(gets(dataChunks, chunkSize)).padStart(11),
      String(
        gets(
          [...touched].sort((a, b) => a - b),
          chunkSize,
        ),
      ).padStart(12),
    ].join(' '),
  );
}
