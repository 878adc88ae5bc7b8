/**
 * The chunked image store on loopback S3 with a generated image: tens of GB logical in a
 * full run, mostly zeros, some compressible, some random. Prints, side by side from one run:
 * cold pull throughput next to this disk's raw write speed and a single-stream download of the
 * same bytes; a new version made by an OS update (bytes moved to push
 * and pull it next to the changed bytes); and the same change in Tart-style 512 MiB layers.
 * The new version is an OS update (os-update.ts), stored once with whole chunks (the format before
 * patches) and once with patches against the first version, each pulled warm and cold.
 *   node --import tsx bench/image-store.ts [logicalGiB=16] [chunkKiB=256] [gofakes3|moto]
 *   env: MARINA_BENCH_UPDATE_SHARE (0.03), MARINA_BENCH_META_PER_FILE (4), MARINA_BENCH_SKIP_S3_SHAPED=1
 * S3 is gofakes3 (a Go S3 server, built through the Go module proxy, files on this disk) by
 * default: moto, the suite's S3, is one Python process that tops out near 100 MB/s.
 */
import {
  closeSync,
  fsyncSync,
  ftruncateSync,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeleteObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { keys, type VersionManifest } from '../src/images/chunked/format';
import { applyOsUpdate, planOsUpdate } from './os-update';
import { deflateRawSync } from 'node:zlib';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { DEV_S3_CREDENTIALS, ensureBucket, startS3Server } from '../src/emulator/s3-server';
import { freePort, portOpen, startProcess, waitFor } from '../src/emulator/processes';
import { ChunkedStore } from '../src/images/chunked/store';
import { localHelper } from '../src/images/chunked/helper';
import { pullVersion, pushDisk } from '../src/images/chunked/transfer';
import { startStreamCap } from './stream-cap';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const MiB = 1024 * 1024;
const LAYER = 512 * MiB;

/** Deterministic pseudo-random bytes (xorshift), fast enough to generate GBs. */
function prng(seed: number) {
  let x = seed | 0 || 1;
  return (buf: Buffer) => {
    const u = new Uint32Array(buf.buffer, buf.byteOffset, buf.length >> 2);
    for (let i = 0; i < u.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      u[i] = x >>> 0;
    }
  };
}

type Kind = 'zero' | 'text' | 'random';
/** Which MiB of the disk holds what: 75 % zero, 17 % compressible, 8 % random, in runs like real files. */
function layout(mib: number): Kind[] {
  const kinds: Kind[] = [];
  let k = 0;
  while (kinds.length < mib) {
    const run = 1 + (((k * 2654435761) >>> 0) % 64);
    const r = ((k * 40503 + 17) >>> 0) % 100;
    const kind: Kind = r < 75 ? 'zero' : r < 92 ? 'text' : 'random';
    for (let i = 0; i < run && kinds.length < mib; i++) kinds.push(kind);
    k++;
  }
  return kinds;
}

function fillMiB(buf: Buffer, kind: Kind, i: number, rand: (b: Buffer) => void): void {
  if (kind === 'text') buf.fill(`/System/Library/Frameworks/Foo.framework/Versions/A/Resources/file-${i}.plist\n`);
  else if (kind === 'random') rand(buf);
}

function writeDisk(path: string, kinds: Kind[], seed: number, changed: Set<number> = new Set()): void {
  const fd = openSync(path, 'w');
  const buf = Buffer.alloc(MiB);
  const rand = prng(seed);
  const fresh = prng(seed + 999);
  try {
    kinds.forEach((kind, i) => {
      if (changed.has(i)) {
        fresh(buf);
        writeSync(fd, buf, 0, MiB, i * MiB);
      } else if (kind !== 'zero') {
        fillMiB(buf, kind, i, rand);
        writeSync(fd, buf, 0, MiB, i * MiB);
      }
    });
  } finally {
    closeSync(fd);
  }
  const fd2 = openSync(path, 'r+');
  try {
    // The logical size, holes included.
    ftruncateSync(fd2, kinds.length * MiB);
  } finally {
    closeSync(fd2);
  }
}

const GOFAKES3 = 'github.com/johannesboyne/gofakes3/cmd/gofakes3@v1.2.0';

/** gofakes3 with its filesystem backend: built once into .marina/bin through the Go module proxy. */
async function startGoS3(port: number, dir: string) {
  const bin = join(__dirname, '..', '.marina', 'bin', 'gofakes3');
  if (!existsSync(bin)) {
    const go = existsSync('/usr/local/go/bin/go') ? '/usr/local/go/bin/go' : 'go';
    execFileSync(go, ['install', GOFAKES3], {
      env: { ...process.env, GOBIN: join(__dirname, '..', '.marina', 'bin') },
      stdio: 'inherit',
    });
  }
  mkdirSync(join(dir, 'gofakes3'), { recursive: true });
  const proc = startProcess(
    'gofakes3',
    bin,
    ['-backend', 'fs', '-fs.path', join(dir, 'gofakes3'), '-fs.create', '-host', `127.0.0.1:${port}`],
    join(dir, 'gofakes3.log'),
  );
  await waitFor('gofakes3', () => portOpen(port), 15_000);
  return { endpoint: `http://127.0.0.1:${port}`, stop: () => proc.stop() };
}

/** Writes `bytes` into `dir` and fsyncs: the speed the pull's writes are held to. */
function rawWriteMs(dir: string, bytes: number): number {
  const raw = join(dir, 'raw-write.bin');
  const buf = Buffer.alloc(8 * MiB, 1);
  const t = performance.now();
  const fd = openSync(raw, 'w');
  for (let w = 0; w < bytes; w += buf.length) writeSync(fd, buf);
  fsyncSync(fd);
  closeSync(fd);
  const ms = performance.now() - t;
  rmSync(raw);
  return ms;
}

/** One stream: every pack of the version, whole, one after the other, by curl into a file in `dir`. */
async function singleStream(store: ChunkedStore, r: Resolved, dir: string): Promise<{ bytes: number; ms: number }> {
  const urls = await store.presignPacks(new Set(r.manifest.chunks.flatMap((c) => (c ? [c.pack] : []))));
  const sink = join(dir, 'single-stream.bin');
  const t = performance.now();
  let bytes = 0;
  for (const u of Object.values(urls)) {
    // Asynchronously: the stream cap's proxy runs on this event loop.
    await execFileAsync('curl', ['-fsS', '-o', sink, u]);
    bytes += statSync(sink).size;
  }
  const ms = performance.now() - t;
  rmSync(sink);
  return { bytes, ms };
}

type Resolved = NonNullable<Awaited<ReturnType<ChunkedStore['resolve']>>>;

const execFileAsync = promisify(execFile);

/** CPU seconds (user + system) of this process's finished children: the helper, once it has exited. */
function childCpuSeconds(): number {
  if (!existsSync('/proc/self/stat')) return NaN;
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  // cutime and cstime are fields 16 and 17 of stat(5), in clock ticks (100 per second on Linux).
  return (Number(fields[13]) + Number(fields[14])) / 100;
}

/** Decimal MB/s per connection: AWS's guidance is one request per 85–90 MB/s. */
const STREAM_MBPS = Number(process.env.MARINA_BENCH_STREAM_MBPS ?? 90);

/**
 * The same cold pull against S3's shape: every connection capped at STREAM_MBPS through a proxy,
 * and the VM written to RAM (/dev/shm) standing in for an SSD faster than this machine's disk,
 * so what is left to compare is one stream against ranges at once.
 */
async function s3Shaped(endpoint: string, r1: Resolved, dataBytes: number): Promise<void> {
  const url = new URL(endpoint);
  const cap = await startStreamCap({ host: url.hostname, port: Number(url.port) }, STREAM_MBPS * 1e6);
  const ram = existsSync('/dev/shm')
    ? mkdtempSync('/dev/shm/marina-bench-')
    : mkdtempSync(join(tmpdir(), 'marina-bench-ram-'));
  const s3 = new S3Client({
    region: 'us-east-1',
    endpoint: cap.endpoint,
    forcePathStyle: true,
    credentials: DEV_S3_CREDENTIALS,
  });
  const store = new ChunkedStore(s3, { bucket: 'bench', prefix: 'images/', region: 'us-east-1', forcePathStyle: true });
  try {
    const rawMs = rawWriteMs(ram, dataBytes);
    const { bytes: single, ms: singleMs } = await singleStream(store, r1, ram);

    console.log(`S3-shaped: each connection capped at ${STREAM_MBPS} MB/s by a proxy, the VM written to RAM (${ram})`);
    console.log(`  RAM write (same data volume): ${mbps(dataBytes, rawMs)}`);
    console.log(
      `  single stream of the packs: ${(singleMs / 1000).toFixed(1)} s = ${mbps(single, singleMs)} on the wire`,
    );
    for (const concurrency of [1, 8, 16]) {
      const out = join(ram, `pulled-${concurrency}`);
      const before = cap.connections();
      const cpuBefore = childCpuSeconds();
      const t = performance.now();
      const { stats } = await pullVersion(
        store,
        localHelper(),
        r1,
        [],
        { dir: out, disk: 'disk.img' },
        { concurrency },
      );
      const ms = performance.now() - t;
      const cpu = childCpuSeconds() - cpuBefore;
      rmSync(out, { recursive: true, force: true });
      console.log(
        `  cold pull, ${String(concurrency).padStart(2)} ranges at once: ${(ms / 1000).toFixed(1)} s = ${mbps(dataBytes, ms)} of disk data (${mbps(stats.fetchedBytes, ms)} on the wire, ${cap.connections() - before} connections, helper ${(cpu / (dataBytes / 1e9)).toFixed(2)} CPU-s per GB) = ${(singleMs / ms).toFixed(2)}x the single stream`,
      );
    }
  } finally {
    s3.destroy();
    await cap.stop();
    rmSync(ram, { recursive: true, force: true });
  }
}

/** The OS update v2 makes (os-update.ts): share of the data rewritten as files, 4 KiB writes per file. */
const UPDATE_SHARE = Number(process.env.MARINA_BENCH_UPDATE_SHARE ?? 0.03);
const META_PER_FILE = Number(process.env.MARINA_BENCH_META_PER_FILE ?? 4);

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const part of createReadStream(path)) h.update(part as Buffer);
  return h.digest('hex');
}

/**
 * Deletes the indexes of the packs only `m` uses (not `keep`): the version still pulls (its manifest
 * says where its chunks are), but a push no longer finds them and uploads the same disk afresh.
 */
async function hidePacks(s3: S3Client, store: ChunkedStore, m: VersionManifest, keep: ReadonlySet<string>) {
  const { bucket, prefix } = store.location;
  for (const pack of new Set(m.chunks.flatMap((c) => (c && !keep.has(c.pack) ? [c.pack] : []))))
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: keys.packIndex(prefix, pack) }));
}

/** Cold pulls of each v2, alternated. */
const COLD_ROUNDS = Number(process.env.MARINA_BENCH_COLD_ROUNDS ?? 3);

const gb = (b: number) => `${(b / 1e9).toFixed(2)} GB`;
const mbps = (b: number, ms: number) => `${(b / 1e6 / (ms / 1000)).toFixed(0)} MB/s`;

async function main() {
  const logicalGiB = Number(process.argv[2] ?? 16);
  const chunkSize = Number(process.argv[3] ?? 256) * 1024;
  const dir = mkdtempSync(join(tmpdir(), 'marina-bench-images-'));
  const server = process.argv[4] ?? 'gofakes3';
  const s3srv =
    server === 'moto'
      ? await startS3Server(await freePort(), join(dir, 's3.log'))
      : await startGoS3(await freePort(), dir);
  try {
    await ensureBucket(s3srv.endpoint, 'bench');
    const s3 = new S3Client({
      region: 'us-east-1',
      endpoint: s3srv.endpoint,
      forcePathStyle: true,
      credentials: DEV_S3_CREDENTIALS,
    });
    const store = new ChunkedStore(s3, {
      bucket: 'bench',
      prefix: 'images/',
      region: 'us-east-1',
      forcePathStyle: true,
    });
    const kinds = layout(logicalGiB * 1024);
    const dataBytes = kinds.filter((k) => k !== 'zero').length * MiB;
    const v1 = join(dir, 'v1.raw');
    writeDisk(v1, kinds, 1);
    console.log(
      `image: ${logicalGiB} GiB logical, ${gb(dataBytes)} of data (${kinds.filter((k) => k === 'random').length} MiB random), chunk ${chunkSize / 1024} KiB, S3: ${server} on loopback`,
    );

    // Raw write speed of this disk: the same data volume, written and fsynced, once the generated
    // image's own dirty pages are on disk (their write-back would slow this measurement down).
    execFileSync('sync');
    const rawMs = rawWriteMs(dir, dataBytes);
    let t: number;

    const helper = localHelper();
    t = performance.now();
    const p1 = await pushDisk(store, helper, 'bench:1', v1, { chunkSize });
    const pushMs = performance.now() - t;

    const r1 = (await store.resolve('bench:1'))!;
    const out1 = join(dir, 'pulled-v1');
    t = performance.now();
    const { stats: s1 } = await pullVersion(
      store,
      helper,
      r1,
      [],
      { dir: out1, disk: 'disk.img' },
      {
        concurrency: 8,
      },
    );
    const pullMs = performance.now() - t;

    const { bytes: single, ms: singleMs } = await singleStream(store, r1, dir);

    console.log(`raw disk write (same data volume, fsync):   ${mbps(dataBytes, rawMs)}`);
    console.log(
      `push v1: ${(pushMs / 1000).toFixed(1)} s, ${gb(p1.bytesUploaded)} uploaded in ${new Set(r1.manifest.chunks.filter(Boolean).map((c) => c!.pack)).size} packs`,
    );
    console.log(
      `cold pull (8 ranged GETs at once, hash-checked, sparse): ${(pullMs / 1000).toFixed(1)} s = ${mbps(dataBytes, pullMs)} of disk data written (${mbps(s1.fetchedBytes, pullMs)} compressed on the wire, ${s1.ranges} GETs)`,
    );
    console.log(
      `single-stream download of the same packs:  ${(singleMs / 1000).toFixed(1)} s = ${mbps(single, singleMs)} on the wire`,
    );
    console.log(
      `  cold pull / raw write: ${(rawMs / pullMs).toFixed(2)}x   cold pull / single stream (wall time for the same image): ${(singleMs / pullMs).toFixed(2)}x`,
    );
    const disk1 = statSync(join(out1, 'disk.img'));
    console.log(`  pulled disk: ${gb(disk1.size)} logical, ${gb(disk1.blocks * 512)} allocated`);

    // v2: an OS update, pushed and pulled twice from the same v1: chunks whole (the format before
    // patches, `marina-chunked/1`) and with patches against v1's chunks; then the cold pulls of both.
    const dataIdx = kinds.flatMap((k, i) => (k === 'zero' ? [] : [i]));
    const update = planOsUpdate(dataIdx, UPDATE_SHARE, META_PER_FILE);
    const v2 = join(dir, 'v2.raw');
    applyOsUpdate(v1, v2, update);
    const changedBytes = update.changedBytes;
    const v2sha = await sha256File(v2);
    console.log(
      `v2: an OS update: ${update.files} files rewritten (64 KiB-8 MiB runs, ${(UPDATE_SHARE * 100).toFixed(0)} % of the data) and ${update.scattered} scattered 4 KiB writes (${META_PER_FILE} per file); ${gb(changedBytes)} changed in distinct 4 KiB blocks, random bytes`,
    );
    const cached = [{ digest: r1.digest, dir: out1, disk: 'disk.img' }];
    const modes = [
      { name: 'whole chunks (before)', tag: 'bench:2-whole', candidates: [] },
      { name: 'with patches (after) ', tag: 'bench:2', candidates: cached },
    ];
    const v1Packs = new Set(r1.manifest.chunks.flatMap((c) => (c ? [c.pack] : [])));
    const versions: Resolved[] = [];
    for (const mode of modes) {
      t = performance.now();
      const p2 = await pushDisk(store, helper, mode.tag, v2, { chunkSize, candidates: mode.candidates });
      const pushMs2 = performance.now() - t;
      const r2 = (await store.resolve(mode.tag))!;
      versions.push(r2);
      const warmDir = join(dir, 'pulled-v2-warm');
      const { stats: s2 } = await pullVersion(store, helper, r2, cached, { dir: warmDir, disk: 'disk.img' });
      const warmOk = (await sha256File(join(warmDir, 'disk.img'))) === v2sha;
      rmSync(warmDir, { recursive: true, force: true });
      console.log(
        `  ${mode.name}: ${r2.manifest.format}, ${p2.chunks.uploaded} chunks uploaded, ${p2.chunks.patched} as patches`,
      );
      console.log(
        `    delta push: ${gb(p2.bytesUploaded)} in ${(pushMs2 / 1000).toFixed(1)} s = ${(p2.bytesUploaded / changedBytes).toFixed(3)}x the changed bytes`,
      );
      console.log(
        `    delta pull: ${gb(s2.fetchedBytes)} = ${(s2.fetchedBytes / changedBytes).toFixed(3)}x the changed bytes (${s2.ranges} GETs, ${gb(s2.copiedBytes)} copied locally from v1, bit-identical: ${warmOk})`,
      );
      // The whole-chunk version stays pullable, but the next push must not find its chunks.
      if (mode.candidates.length === 0) await hidePacks(s3, store, r2.manifest, v1Packs);
    }
    // Cold pulls of both, alternated, so this shared machine's load weighs on both alike.
    const coldMs: number[][] = versions.map(() => []);
    for (let round = 0; round < COLD_ROUNDS; round++)
      for (const [k, r2] of versions.entries()) {
        execFileSync('sync');
        const coldDir = join(dir, 'pulled-v2-cold');
        t = performance.now();
        const { stats: c2 } = await pullVersion(store, helper, r2, [], { dir: coldDir, disk: 'disk.img' });
        coldMs[k]!.push(performance.now() - t);
        if (round === 0) {
          const ok = (await sha256File(join(coldDir, 'disk.img'))) === v2sha;
          console.log(
            `  cold pull of v2, ${modes[k]!.name}: ${gb(c2.fetchedBytes)} fetched in ${c2.ranges} GETs, bit-identical: ${ok}`,
          );
        }
        rmSync(coldDir, { recursive: true, force: true });
      }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
    for (const [k, ms] of coldMs.entries())
      console.log(
        `  cold pull of v2, ${modes[k]!.name}: median ${(median(ms) / 1000).toFixed(1)} s = ${mbps(dataBytes, median(ms))} of disk data (runs: ${ms.map((x) => (x / 1000).toFixed(1)).join(', ')} s)`,
      );
    console.log(`  cold pull after / before: ${(median(coldMs[0]!) / median(coldMs[1]!)).toFixed(2)}x the speed`);

    // Tart-style: 512 MiB layers, each compressed whole; a layer with any change ships again.
    const layersChanged = new Set(
      update.writes.flatMap((w) => [Math.floor(w.offset / LAYER), Math.floor((w.offset + w.length - 1) / LAYER)]),
    );
    let tartBytes = 0;
    const fdv2 = openSync(v2, 'r');
    const layerBuf = Buffer.alloc(LAYER);
    for (const l of layersChanged) {
      const n = readSync(fdv2, layerBuf, 0, LAYER, l * LAYER);
      tartBytes += deflateRawSync(layerBuf.subarray(0, n), { level: 1 }).length;
    }
    closeSync(fdv2);
    console.log(
      `  Tart-style 512 MiB layers: ${layersChanged.size} of ${Math.ceil((kinds.length * MiB) / LAYER)} layers changed, ${gb(tartBytes)} to move = ${(tartBytes / changedBytes).toFixed(1)}x the changed bytes (deflate -1 standing in for LZ4, which compresses less)`,
    );
    s3.destroy();

    if (process.env.MARINA_BENCH_SKIP_S3_SHAPED !== '1') await s3Shaped(s3srv.endpoint, r1, dataBytes);
  } finally {
    await s3srv.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
