/**
 * The chunked image store against real S3 (moto on loopback): push, pull through presigned
 * URLs only, delta, corruption in transit, a killed pull resumed, push and gc at the same time.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';
import { DEV_S3_CREDENTIALS } from '../src/emulator/s3-server';
import { ChunkedStore } from '../src/images/chunked/store';
import { localHelper } from '../src/images/chunked/helper';
import { pullVersion, pushDisk, type CachedDisk } from '../src/images/chunked/transfer';
import { GC_GRACE_MS } from '../src/images/chunked/gc';
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
) {
  const r = (await from.resolve(ref))!;
  const disks = new Map<string, CachedDisk>();
  for (const [d, path] of Object.entries(cached))
    disks.set(d, { manifest: (await from.version(d))!, disk: join(path, 'disk.img') });
  const { plan, stats } = await pullVersion(
    from,
    helper,
    r,
    disks,
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
  const damaged: number[] = [];
  const server: Server = createServer((req, res) => {
    const n = req.method === 'GET' && req.headers.range ? ++gets : 0;
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

  it('resumes a pull whose helper was killed, without fetching again what it already wrote', async () => {
    const v = join(dir, 'r.raw');
    makeDisk(v, 24, 3);
    await push('img:resume', v);
    // Each GET held back 250 ms, one at a time: the helper is killed (SIGTERM) a few ranges in.
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
        ),
      ).rejects.toThrow();
      expect(readdirSync(out)).toContain('disk.img.journal');
      const resumed = await pull('img:resume', out, {}, { concurrency: 1 });
      const whole = await pull('img:resume', join(dir, 'r2.out'), {}, { concurrency: 1 });
      expect(resumed.stats.resumedChunks).toBeGreaterThan(0);
      expect(resumed.stats.fetchedBytes).toBeLessThan(whole.stats.fetchedBytes);
      expect(sha(join(out, 'disk.img'))).toBe(sha(v));
    } finally {
      slow.close();
    }
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
      /8 chunks \(4 zero, 0 already stored, 4 uploaded\)/,
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
  });
});
