/**
 * The chunked image store against real S3 (moto on loopback): push, pull through presigned
 * URLs only, delta, corruption in transit, a killed pull resumed, push and gc at the same time.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { DEV_S3_CREDENTIALS } from '../src/emulator/s3-server';
import { ChunkedStore } from '../src/images/chunked/store';
import { localHelper, type HelperRunner } from '../src/images/chunked/helper';
import { pullVersion, pushDisk, type Candidate } from '../src/images/chunked/transfer';
import { GC_GRACE_MS } from '../src/images/chunked/gc';
import { FORMAT_PATCHED, keys } from '../src/images/chunked/format';
import { inspectPlaces } from '../src/images/chunked/integrity';
import { fileConfig, uniqueId } from './helpers';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { LoadedConfig } from '../src/config/load';

const run = promisify(execFile);

const MiB = 1024 * 1024;
let s3: S3Client;
let store: ChunkedStore;
let dir: string;
let config: LoadedConfig;

beforeAll(() => {
  config = fileConfig('images');
  s3 = new S3Client({
    region: 'us-east-1',
    endpoint: config.imageStore.endpoint,
    forcePathStyle: true,
    credentials: DEV_S3_CREDENTIALS,
  });
  // A prefix of its own: gc in one test must not see another file's images.
  store = new ChunkedStore(s3, { ...config.imageStore, prefix: `${uniqueId('chunked')}/` });
  dir = mkdtempSync(join(tmpdir(), 'marina-chunked-'));
});

afterAll(() => s3?.destroy());

/** A disk like a VM's: mostly zeros (sparse), some compressible text, some random bytes. */
function makeDisk(path: string, mib: number, seed: number): void {
  const disk = Buffer.alloc(mib * MiB);
  for (let i = 0; i < mib; i++) {
    const kind = (i * 7 + seed) % 10;
    if (kind < 5) continue; // zero
    const chunk = disk.subarray(i * MiB, (i + 1) * MiB);
    if (kind < 8) chunk.fill(`line ${i} of a macOS system file, seed ${seed}\n`);
    else randomBytes(MiB).copy(chunk);
  }
  writeFileSync(path, disk);
}

const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');
const helper = localHelper();
// 1 MiB chunks: the test disks change in 1 MiB blocks, so counts below are chunks of 1 MiB.
const push = (ref: string, disk: string, on = store) => pushDisk(on, helper, ref, disk, { chunkSize: MiB });

/** Pulls `ref` into directory `out` (the disk is `out/disk.img`), seeded from `cached` (digest -> its pulled directory). */
async function pull(
  ref: string,
  out: string,
  cached: Record<string, string> = {},
  extra: Parameters<typeof pullVersion>[5] = {},
  from = store,
  runner = helper,
) {
  const r = (await from.resolve(ref))!;
  const candidates: Candidate[] = Object.entries(cached).map(([digest, path]) => ({
    digest,
    dir: path,
    disk: 'disk.img',
  }));
  const { plan, stats } = await pullVersion(
    from,
    runner,
    r,
    candidates,
    { dir: out, disk: 'disk.img' },
    {
      merge: { maxGap: 64 * 1024, maxRange: 2 * MiB },
      ...extra,
    },
  );
  return { stats, plan, digest: r.digest };
}

/**
 * A man in the middle between the helper and S3: forwards every request, and can damage the body
 * of the n-th ranged GET or hold each response back a while (so a test can kill a pull halfway).
 */
async function s3Proxy(target: string, opts: { damageNth?: number; delayMs?: number }) {
  const up = new URL(target);
  let gets = 0;
  let served = 0;
  let inFlight = 0;
  const damaged: number[] = [];
  const server: Server = createServer((req, res) => {
    const n = req.method === 'GET' && req.headers.range ? ++gets : 0;
    inFlight++;
    const fwd = request(
      { host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers },
      (upRes) => {
        const parts: Buffer[] = [];
        upRes.on('data', (d: Buffer) => parts.push(d));
        upRes.on('end', () => {
          const body = Buffer.concat(parts);
          if (n && n === opts.damageNth) {
            body[body.length >> 1]! ^= 0xff;
            damaged.push(n);
          }
          setTimeout(() => {
            if (n) served += body.length;
            inFlight--;
            res.writeHead(upRes.statusCode ?? 502, upRes.headers);
            res.end(body);
          }, opts.delayMs ?? 0);
        });
      },
    );
    req.pipe(fwd);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = new S3Client({ region: 'us-east-1', endpoint, forcePathStyle: true, credentials: DEV_S3_CREDENTIALS });
  return {
    store: new ChunkedStore(client, store.location),
    damaged,
    /** Bytes of ranged GET bodies sent to the helper so far. */
    served: () => served,
    /** Resolves once no request is being held back (a killed client's last one included). */
    idle: () =>
      new Promise<void>((done) => {
        const check = () => (inFlight === 0 ? done() : setTimeout(check, 20));
        check();
      }),
    close: () => [client.destroy(), server.close()],
  };
}

describe('chunked image store', () => {
  it('round-trips a disk bit for bit, keeps zero regions sparse, and moves only the changed chunks of a new version', async () => {
    const v1 = join(dir, 'v1.raw');
    makeDisk(v1, 24, 1);
    const pushed = await push('img:1', v1);
    expect(pushed.chunks).toMatchObject({ total: 24, zero: 12 });
    const out1 = join(dir, 'out1');
    const { stats } = await pull('img:1', out1);
    expect(sha(join(out1, 'disk.img'))).toBe(sha(v1));
    // Holes where the zeros are: allocated blocks well under the logical size.
    const st = statSync(join(out1, 'disk.img'));
    expect(st.blocks * 512).toBeLessThan(0.7 * st.size);
    expect(stats.fetchedBytes).toBeLessThanOrEqual(pushed.bytesUploaded + 64 * 1024 * stats.ranges);

    // v2: two chunks changed; the push uploads only those, the pull from v1 fetches only those.
    const v2 = join(dir, 'v2.raw');
    const disk = readFileSync(v1);
    randomBytes(MiB).copy(disk, 9 * MiB);
    disk.fill('changed\n', 17 * MiB, 18 * MiB);
    writeFileSync(v2, disk);
    const p2 = await push('img:2', v2);
    expect(p2.chunks.uploaded).toBe(2);
    const out2 = join(dir, 'out2');
    const second = await pull('img:2', out2, { [pushed.digest]: out1 });
    expect(sha(join(out2, 'disk.img'))).toBe(sha(v2));
    expect(second.plan.seed).toBe(pushed.digest);
    expect(second.plan.fetch.flatMap((r) => r.chunks.map((c) => c.index)).sort((a, b) => a - b)).toEqual([9, 17]);
    expect(second.stats.fetchedBytes).toBeLessThanOrEqual(p2.bytesUploaded + 64 * 1024 * second.stats.ranges);
  });

  it('detects a chunk damaged in transit by its hash and fetches it again', async () => {
    const v = join(dir, 'c.raw');
    makeDisk(v, 8, 2);
    await push('img:corrupt', v);
    const mitm = await s3Proxy(config.imageStore.endpoint!, { damageNth: 1 });
    try {
      const out = join(dir, 'c.out');
      const { stats } = await pull('img:corrupt', out, {}, { concurrency: 1 }, mitm.store);
      expect(mitm.damaged).toEqual([1]);
      expect(stats.retries).toBe(1);
      expect(sha(join(out, 'disk.img'))).toBe(sha(v));
    } finally {
      mitm.close();
    }
  });

  it('resumes a pull whose helper was SIGKILLed halfway: bit-identical, fetching only what was missing', async () => {
    const v = join(dir, 'r.raw');
    makeDisk(v, 24, 3);
    await push('img:resume', v);
    // Each GET held back 250 ms, one at a time: the helper is SIGKILLed a few ranges in, as a crash would leave it.
    const slow = await s3Proxy(config.imageStore.endpoint!, { delayMs: 250 });
    try {
      const out = join(dir, 'r.out');
      const kill = new AbortController();
      await expect(
        pull(
          'img:resume',
          out,
          {},
          {
            concurrency: 1,
            signal: kill.signal,
            onProgress: (s) => {
              if (s.ranges >= 2) kill.abort();
            },
          },
          slow.store,
          localHelper(undefined, 'SIGKILL'),
        ),
      ).rejects.toThrow();
      const digest = (await store.resolve('img:resume'))!.digest;
      expect(await inspectPlaces(helper, [{ digest, dir: out, disk: 'disk.img' }])).toEqual(['partial']);
      await slow.idle(); // the response the killed helper was waiting for is counted as the first run's
      const beforeResume = slow.served();
      const resumed = await pull('img:resume', out, {}, { concurrency: 1 }, slow.store);
      const resumedBytes = slow.served() - beforeResume;
      const whole = await pull('img:resume', join(dir, 'r2.out'), {}, { concurrency: 1 });
      expect(sha(join(out, 'disk.img'))).toBe(sha(v));
      expect(resumed.stats.resumedChunks).toBeGreaterThan(0);
      expect(resumedBytes).toBe(resumed.stats.fetchedBytes);
      expect(resumedBytes).toBeLessThan(whole.stats.fetchedBytes);
      // Over both runs, at most the range in flight at the kill (≤ 2 MiB here) crossed the wire twice.
      expect(beforeResume + resumedBytes).toBeLessThanOrEqual(whole.stats.fetchedBytes + 2 * MiB);
      expect(await inspectPlaces(helper, [{ digest, dir: out, disk: 'disk.img' }])).toEqual(['verified']);
      // Verified: a third pull moves nothing.
      expect((await pull('img:resume', out)).stats.alreadyComplete).toBe(true);
    } finally {
      slow.close();
    }
  });

  it('a pull renamed into its final place (as into Tart on a host) stays verified there: the next pull moves nothing', async () => {
    const v = join(dir, 'final.raw');
    makeDisk(v, 8, 12);
    const p = await push('img:final', v);
    const where = { dir: join(dir, 'final.pulling'), disk: 'disk.img', final: join(dir, 'final.vm') };
    const r = (await store.resolve('img:final'))!;
    const first = await pullVersion(store, helper, r, [], where);
    expect(first.stats.alreadyComplete).toBeUndefined();
    expect(sha(join(where.final, 'disk.img'))).toBe(sha(v));
    expect(await inspectPlaces(helper, [{ digest: p.digest, dir: where.final, disk: 'disk.img' }])).toEqual([
      'verified',
    ]);
    expect((await pullVersion(store, helper, r, [], where)).stats.alreadyComplete).toBe(true);
    // A stray directory at the final place without the marker is replaced, never taken for the version.
    rmSync(join(where.final, '.complete'));
    writeFileSync(join(where.final, 'disk.img'), 'not a disk');
    await pullVersion(store, helper, r, [], where);
    expect(sha(join(where.final, 'disk.img'))).toBe(sha(v));
  });

  it('never trusts a digest or a manifest read back from the store', async () => {
    const { bucket, prefix } = store.location;
    const put = (Key: string, body: unknown) =>
      s3.send(new PutObjectCommand({ Bucket: bucket, Key, Body: JSON.stringify(body) }));
    await put(`${prefix}v2/tags/img/evil.json`, { digest: 'sha256:../../../escape' });
    await expect(store.resolve('img:evil')).rejects.toMatchObject({
      name: 'ManifestIntegrityError',
      message: expect.stringMatching(/tag img:evil: .* is not a version digest/),
    });
    // A manifest stored under a digest it does not hash to (edited, or damaged).
    const v = join(dir, 'forged.raw');
    makeDisk(v, 4, 13);
    const p = await push('img:forged', v);
    const m = (await store.version(p.digest))!;
    await put(keys.version(prefix, p.digest), { ...m, size: m.size - 1 });
    await expect(store.resolve('img:forged')).rejects.toMatchObject({ name: 'ManifestIntegrityError' });
    // gc, which reads every tag, would stop at the bad one (as it should): both are put right for the next test's gc.
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: `${prefix}v2/tags/img/evil.json` }));
    await put(keys.version(prefix, p.digest), m);
    expect((await store.resolve('img:forged'))!.digest).toBe(p.digest);
  });

  it('a corrupted pack fails every pull loudly; the partial disk is never cached nor a seed', async () => {
    const v1 = join(dir, 'bad1.raw');
    makeDisk(v1, 8, 8);
    const p1 = await push('img:badpack', v1);
    const m1 = (await store.version(p1.digest))!;
    const k = m1.chunks.findIndex((c) => c !== null && c.length > 4096);
    const c = m1.chunks[k]!;
    const key = keys.pack(store.location.prefix, c.pack);
    const body = Buffer.from(
      await (
        await s3.send(new GetObjectCommand({ Bucket: store.location.bucket, Key: key }))
      ).Body!.transformToByteArray(),
    );
    body[c.offset + (c.length >> 1)]! ^= 0xff;
    await s3.send(new PutObjectCommand({ Bucket: store.location.bucket, Key: key, Body: body }));
    const out = join(dir, 'bad1.out');
    for (let attempt = 0; attempt < 2; attempt++) {
      await expect(pull('img:badpack', out, {}, { attempts: 2 })).rejects.toMatchObject({
        code: 3,
        message: expect.stringMatching(/does not match its hash/),
      });
      expect(await inspectPlaces(helper, [{ digest: p1.digest, dir: out, disk: 'disk.img' }])).not.toEqual([
        'verified',
      ]);
    }
    // The CLI, on this store's prefix: the integrity exit code (3), twice, and never "already cached".
    const own = fileConfig('images-badpack', (raw) => {
      raw.imageStore.prefix = store.location.prefix;
    });
    const cache = join(dir, 'bad-cache');
    for (let attempt = 0; attempt < 2; attempt++)
      await expect(
        run('./bin/marina', ['-c', own.path, 'image', 'pull', 'img:badpack', '--cache-dir', cache]),
      ).rejects.toMatchObject({ code: 3, stderr: expect.stringMatching(/does not match its hash/) });
    // v2 no longer holds the damaged chunk; the partial v1 beside it seeds nothing.
    const disk = readFileSync(v1);
    disk.fill('rewritten\n', k * MiB, (k + 1) * MiB);
    const v2 = join(dir, 'bad2.raw');
    writeFileSync(v2, disk);
    await push('img:badpack2', v2);
    const out2 = join(dir, 'bad2.out');
    const second = await pull('img:badpack2', out2, { [p1.digest]: out });
    expect(second.plan.seed).toBeUndefined();
    expect(second.stats.copiedBytes).toBe(0);
    expect(sha(join(out2, 'disk.img'))).toBe(sha(v2));
  });

  it('a cached disk that rotted is caught by the hash of each chunk it seeds, loses its marker, and the pull ends right', async () => {
    const v3 = join(dir, 'rot3.raw');
    makeDisk(v3, 8, 9);
    const p3 = await push('img:rot3', v3);
    const out3 = join(dir, 'rot3.out');
    await pull('img:rot3', out3);
    const disk = readFileSync(v3);
    const k = (await store.version(p3.digest))!.chunks.findIndex((c) => c !== null);
    // Damage v3's pulled disk where v4 will copy from it.
    const rotten = readFileSync(join(out3, 'disk.img'));
    rotten[k * MiB + 100]! ^= 0xff;
    writeFileSync(join(out3, 'disk.img'), rotten);
    disk.fill('v4\n', 7 * MiB, 8 * MiB);
    const v4 = join(dir, 'rot4.raw');
    writeFileSync(v4, disk);
    await push('img:rot4', v4);
    const out4 = join(dir, 'rot4.out');
    const r = await pull('img:rot4', out4, { [p3.digest]: out3 });
    expect(sha(join(out4, 'disk.img'))).toBe(sha(v4));
    expect(r.plan.seed).toBeUndefined(); // planned again without the rotten seed
    expect(await inspectPlaces(helper, [{ digest: p3.digest, dir: out3, disk: 'disk.img' }])).toEqual(['unusable']);
  });

  it('stores a chunk changed in a few 4 KiB blocks as a patch: small to push and pull, right cold and warm', async () => {
    const v1 = join(dir, 'patch1.raw');
    makeDisk(v1, 16, 10);
    const p1 = await push('img:patch1', v1);
    const out1 = join(dir, 'patch1.out');
    await pull('img:patch1', out1);
    const base = [{ digest: p1.digest, dir: out1, disk: 'disk.img' }];
    const m1 = (await store.version(p1.digest))!;
    // Incompressible chunks: there a whole chunk costs its full size, and a patch its changed blocks.
    const data = m1.chunks.flatMap((c, i) => (c && c.length > MiB / 2 ? [i] : []));
    // v2: one random 4 KiB block in each of two data chunks; v3 (from v2): another block in the first.
    const d2 = readFileSync(v1);
    randomBytes(4096).copy(d2, data[0]! * MiB + 8192);
    randomBytes(4096).copy(d2, data[1]! * MiB + 65536);
    const v2 = join(dir, 'patch2.raw');
    writeFileSync(v2, d2);
    const p2 = await pushDisk(store, helper, 'img:patch2', v2, { chunkSize: MiB, candidates: base });
    expect(p2.chunks).toMatchObject({ uploaded: 2, patched: 2 });
    expect(p2.bytesUploaded).toBeLessThan(3 * 4096);
    expect((await store.version(p2.digest))!.format).toBe(FORMAT_PATCHED);
    const warm = await pull('img:patch2', join(dir, 'patch2.warm'), { [p1.digest]: out1 });
    expect(warm.stats.fetchedBytes).toBeLessThan(3 * 4096 + 64 * 1024 * warm.stats.ranges);
    expect(sha(join(dir, 'patch2.warm', 'disk.img'))).toBe(sha(v2));
    const cold = await pull('img:patch2', join(dir, 'patch2.cold'));
    expect(sha(join(dir, 'patch2.cold', 'disk.img'))).toBe(sha(v2));
    expect(cold.plan.patched.map((p) => p.index)).toEqual([data[0], data[1]]); // bases fetched whole, then patched
    const d3 = Buffer.from(d2);
    randomBytes(4096).copy(d3, data[0]! * MiB + 500_000);
    const v3 = join(dir, 'patch3.raw');
    writeFileSync(v3, d3);
    const p3 = await pushDisk(store, helper, 'img:patch3', v3, {
      chunkSize: MiB,
      candidates: [{ digest: p2.digest, dir: join(dir, 'patch2.warm'), disk: 'disk.img' }],
    });
    expect(p3.chunks.patched).toBe(1);
    const chain = (await store.version(p3.digest))!.chunks[data[0]!]!;
    expect(chain.base?.base?.hash).toBe(m1.chunks[data[0]!]!.hash); // a patch of a patch of v1's chunk
    await pull('img:patch3', join(dir, 'patch3.cold'));
    expect(sha(join(dir, 'patch3.cold', 'disk.img'))).toBe(sha(v3));
  });

  it('loses nothing when gc runs during a push, and deletes unreferenced packs only a grace period after condemning them', async () => {
    const a = join(dir, 'a.raw');
    makeDisk(a, 8, 4);
    const tmp = await push('tmp:1', a);
    const tmpPacks = new Set((await store.version(tmp.digest))!.chunks.flatMap((c) => (c ? [c.pack] : [])));
    await store.removeTag('tmp:1'); // its packs are garbage now
    const b = join(dir, 'b.raw');
    makeDisk(b, 16, 5);
    const now = Date.now();
    // A gc run "two grace periods later" while keep:1 is being pushed: it condemns tmp:1's packs (and, as
    // the clock says they are old, the in-flight push's own packs), deleting nothing.
    const pushing = push('keep:1', b);
    const first = await store.gc(now + 2 * GC_GRACE_MS);
    await pushing;
    expect(first.deletePacks).toEqual([]);
    for (const p of tmpPacks) expect(first.condemned).toHaveProperty(p);
    // A push of the same data as tmp:1 does not reuse condemned packs: it uploads again.
    const again = await push('keep:2', a);
    expect(again.chunks.reused).toBe(0);
    expect(again.chunks.uploaded).toBe(tmp.chunks.uploaded);
    // A grace period after condemning: tmp:1's packs, still unreferenced, go; keep:1's, now referenced, stay.
    const second = await store.gc(now + 4 * GC_GRACE_MS);
    expect(new Set(second.deletePacks)).toEqual(tmpPacks);
    for (const [ref, disk] of [
      ['keep:1', b],
      ['keep:2', a],
    ] as const) {
      const out = join(dir, `${ref.replace(':', '-')}.out`);
      await pull(ref, out);
      expect(sha(join(out, 'disk.img'))).toBe(sha(disk));
    }
  });

  it('marina image push --disk, ls, pull into a cache (the second version from the first), rm, gc', async () => {
    const marina = (...args: string[]) =>
      run('./bin/marina', ['-c', config.path, 'image', ...args], { encoding: 'utf8' }).then((r) => r.stdout);
    const name = uniqueId('cli').toLowerCase();
    const v1 = join(dir, 'cli1.raw');
    makeDisk(v1, 8, 6);
    expect(await marina('push', `${name}:1`, '--disk', v1, '--chunk-size', '1M')).toMatch(
      /8 chunks \(4 zero, 0 already stored, 4 uploaded, 0 of them as patches\)/,
    );
    const disk = readFileSync(v1);
    disk.fill('new\n', 6 * MiB, 7 * MiB);
    const v2 = join(dir, 'cli2.raw');
    writeFileSync(v2, disk);
    expect(await marina('push', `${name}:2`, '--disk', v2, '--chunk-size', '1M')).toMatch(
      /3 already stored, 1 uploaded/,
    );
    expect(await marina('ls')).toMatch(new RegExp(`${name}:1\tchunked\tsha256:[0-9a-f]{64}`));
    const cache = join(dir, 'cache');
    expect(await marina('pull', `${name}:1`, '--cache-dir', cache)).toMatch(/0 chunks resumed/);
    expect(await marina('pull', `${name}:1`, '--cache-dir', cache)).toMatch(/already cached \(verified\)/);
    const second = await marina('pull', `${name}:2`, '--cache-dir', cache);
    expect(second).toMatch(/fetched in 1 GETs/); // only the changed chunk; the rest copied from v1
    const pulled = readdirSync(cache).filter((f) => /^[0-9a-f]{64}$/.test(f));
    expect(pulled.map((f) => sha(join(cache, f, 'disk.img'))).sort()).toEqual([sha(v1), sha(v2)].sort());
    expect(await marina('rm', `${name}:1`)).toMatch(`removed ${name}:1`);
    expect(await marina('gc')).toMatch(
      /^gc: 0 packs deleted .*condemned.*last 2 earlier version\(s\) younger than 30 days/,
    );
    await expect(marina('gc', '--keep-previous', '-1')).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/--keep-previous: "-1" must be a whole number/),
    });
    await expect(marina('push', `${name}:3`)).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/give either an archive or --disk/),
    });
    await expect(marina('push', `${name}:3`, '--disk', v1, '--chunk-size', '3M')).rejects.toMatchObject({
      stderr: expect.stringMatching(/--chunk-size: "3M" must be a power of two from 256K to 4M/),
    });
    // Exit codes by class: not found 4, usage 2 (integrity 3 is the corrupted-pack test's).
    await expect(marina('pull', `${name}-nosuch:1`, '--cache-dir', cache)).rejects.toMatchObject({ code: 4 });
    await expect(marina('rm', `${name}-nosuch:1`)).rejects.toMatchObject({ code: 4 });
    await expect(marina('pull', `${name}:1`, '--cache-dir', cache, '--max-rate', 'fast')).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/--max-rate: "fast" must be a positive number of MB\/s/),
    });
    // --max-rate 1 (MB/s) on an image of 2 MiB of random bytes (zstd cannot shrink them): the limiter lets
    // only its last 256 KiB read through unpaced, so the pull cannot finish before (2 MiB - 256 KiB) / 1 MB/s.
    const random = join(dir, 'random.raw');
    writeFileSync(random, randomBytes(2 * MiB));
    await marina('push', `${name}:random`, '--disk', random, '--chunk-size', '1M');
    const started = Date.now();
    const capped = await marina('pull', `${name}:random`, '--cache-dir', join(dir, 'cache-capped'), '--max-rate', '1');
    const floorMs = ((2 * MiB - 256 * 1024) / 1e6) * 1000;
    expect(capped).toMatch(/fetched in/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(floorMs);
  });

  it('refuses every bad image name before anything reaches S3, at each entry point', async () => {
    const marina = (...args: string[]) =>
      run('./bin/marina', ['-c', config.path, 'image', ...args], { encoding: 'utf8' }).then((r) => r.stdout);
    const listBucket = async () => {
      const found: string[] = [];
      let token: string | undefined;
      do {
        const out = await s3.send(
          new ListObjectsV2Command({ Bucket: config.imageStore.bucket, ContinuationToken: token }),
        );
        found.push(...(out.Contents ?? []).map((o) => `${o.Key} ${o.ETag}`));
        token = out.NextContinuationToken;
      } while (token);
      return found.sort();
    };
    const v = join(dir, 'names.raw');
    makeDisk(v, 4, 11);
    const good = `${uniqueId('names').toLowerCase()}:1`;
    await marina('push', good, '--disk', v);
    const before = await listBucket();
    for (const bad of ['test/../../escape:1', 'test/vm:..', 'Test/VM:1', 'a//b:1', 'a/./b:1']) {
      await expect(marina('push', bad, '--disk', v), bad).rejects.toMatchObject({
        code: 2,
        stderr: expect.stringMatching(/segment|not an image reference/),
      });
      await expect(marina('retag', good, bad), bad).rejects.toMatchObject({ code: 2 });
      // The snapshot path (activities/snapshot.ts) goes through pushDisk: refused before the helper runs.
      const seen: string[] = [];
      const spy: HelperRunner = {
        run: (cmd) => {
          seen.push(cmd);
          return Promise.resolve();
        },
      };
      await expect(pushDisk(store, spy, bad, v)).rejects.toThrow(/segment|not an image reference/);
      expect(seen).toEqual([]);
      await expect(store.resolve(bad)).rejects.toThrow(/segment|not an image reference/);
    }
    expect(await listBucket()).toEqual(before);
  });
});
