/**
 * Image activities: resolve a reference in the chunked store, and make sure a host holds a version
 * (pulled by the image helper on the host, seeded from the closest version it caches, within the
 * pool's cache budget). The host gets presigned URLs only; AWS credentials stay on the worker.
 */
import { recordImagePull } from '../src/telemetry/metrics';
import { readFileSync } from 'node:fs';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { ChunkedStore, type ResolvedImage } from '../src/images/chunked/store';
import { eventLines, helperBinary, HelperError, platformOf, type HelperRunner } from '../src/images/chunked/helper';
import { pullVersion, type PullStats } from '../src/images/chunked/transfer';
import { inspectPlaces, type Candidate } from '../src/images/chunked/integrity';
import { planEviction, RECENT_USE_MS, type CacheEntry } from '../src/images/cache';
import { imageCacheName } from '../src/domain/job';
import { assertDigest } from '../src/domain/image-ref';
import type { VersionManifest } from '../src/images/chunked/format';
import { shq, type SshConnection } from './ssh/connection';
import type { ActivityContext, HostRef } from './context';
import { imageHypervisor, vmLayout, type VmLayout } from './hypervisor/layout';
import { hypervisorOf } from '../src/config/load';
import { isWorkerShutdown, workerShutdownFailure } from './shutdown';
import { checkDigest } from './inputs';

/** The local VM name a host keeps an image under: by digest, so a cache hit is exact. */
export const cachedImageName = (image: { digest: string }): string => imageCacheName(image.digest);

export function imageStore(ctx: ActivityContext): ChunkedStore {
  return new ChunkedStore(ctx.s3(ctx.imageStoreLocation), ctx.imageStoreLocation);
}

/** Where things are on a host: its home, and where its hypervisor keeps VMs. */
export interface HostPaths {
  home: string;
  layout: VmLayout;
}

const hex = (digest: string) => assertDigest(digest).slice('sha256:'.length);
const GiB = 1024 ** 3;
const MANIFEST_CACHE = 16;

/** Where things are on a host, and which helpers it has: one SSH round trip. */
export async function hostPaths(
  conn: SshConnection,
  kind: VmLayout['kind'],
): Promise<HostPaths & { platform: string; helpers: string[] }> {
  const [os, arch, home, tart, ...helpers] = (
    await conn.run(
      `uname -s; uname -m; printf '%s\\n' "$HOME" "\${TART_HOME:-$HOME/.tart}"; ls "$HOME/.marina/bin" 2>/dev/null; true`,
    )
  )
    .trim()
    .split('\n');
  return { home: home!, layout: vmLayout(kind, home!, tart!), platform: platformOf(os!, arch!), helpers };
}

/** `hostPaths` once per connection: a host's home and Tart's folder do not move while a session lasts. */
const pathsByConnection = new WeakMap<SshConnection, Promise<Awaited<ReturnType<typeof hostPaths>>>>();
function knownHostPaths(conn: SshConnection, kind: VmLayout['kind']): ReturnType<typeof hostPaths> {
  let p = pathsByConnection.get(conn);
  if (!p) {
    p = hostPaths(conn, kind);
    pathsByConnection.set(conn, p);
    p.catch(() => pathsByConnection.delete(conn));
  }
  return p;
}

/**
 * The helper on a host: copied there once per build (its name carries its SHA-256, so a host never
 * runs a stale one), written under a temporary name and renamed, so a cut copy is never run.
 */
export async function hostHelper(
  conn: SshConnection,
  host: Awaited<ReturnType<typeof hostPaths>>,
): Promise<HelperRunner> {
  const binary = helperBinary(host.platform);
  const name = `marina-image-helper-${binary.sha256.slice(0, 16)}`;
  const path = `${host.home}/.marina/bin/${name}`;
  if (!host.helpers.includes(name)) {
    await conn.run(
      // A temporary name per session: two activities installing on one host at once must not share it.
      `mkdir -p ${shq(`${host.home}/.marina/bin`)} && t=${shq(`${path}.tmp`)}.$$ && cat > "$t" && chmod 755 "$t" && mv "$t" ${shq(path)}`,
      { stdin: readFileSync(binary.path) },
    );
    host.helpers.push(name);
  }
  return {
    async run(cmd, order, onEvent, signal) {
      let stderr = '';
      const r = await conn.exec(`${shq(path)} ${cmd}`, {
        // The order (presigned URLs included) goes on stdin: never on a command line or in a log.
        stdin: JSON.stringify(order),
        onStdout: eventLines(onEvent),
        onStderr: (d) => (stderr = (stderr + d.toString()).slice(-4000)),
        ...(signal ? { signal } : {}),
      });
      if (r.code !== 0)
        throw new HelperError(stderr.trim() || `helper ${cmd} exited ${r.code ?? r.signal}`, r.code ?? -1);
    },
  };
}

/** The host's cache index: one `<hex>.json` per cached version, its mtime the last use. */
export async function readCache(
  conn: SshConnection,
  paths: HostPaths,
  vmsPresent: ReadonlySet<string>,
): Promise<CacheEntry[]> {
  const dir = `${paths.home}/.marina/images`;
  const out = await conn.run(
    `for f in ${shq(dir)}/*.json; do [ -f "$f" ] && printf '%s %s\\n' "$(date -r "$f" +%s)" "$(cat "$f")"; done; true`,
  );
  const entries: CacheEntry[] = [];
  for (const line of out.split('\n').filter(Boolean)) {
    const space = line.indexOf(' ');
    try {
      const e = JSON.parse(line.slice(space + 1)) as Omit<CacheEntry, 'usedAt'>;
      // An entry is a file on the host: its digest names paths, so it is checked like one read from the store.
      assertDigest(e.digest);
      if (e.vm === imageCacheName(e.digest) && vmsPresent.has(e.vm))
        entries.push({ ...e, usedAt: Number(line.slice(0, space)) * 1000 });
    } catch {
      // A half-written index entry: its version is pulled again if wanted.
    }
  }
  return entries;
}

/** Where a host keeps a cached version: a VM `marina-img-<hex16>` of its hypervisor, its disk inside. */
export const cachedPlace = (paths: HostPaths, digest: string): Candidate => ({
  digest,
  dir: paths.layout.dir(imageCacheName(digest)),
  disk: paths.layout.disk,
});

/** What a pull's heartbeat shows (the Web UI lists it on the pending activity): plain figures, no URLs. */
function pullProgress(image: ResolvedImage, s: PullStats | undefined): Record<string, string> {
  if (!s) return { image: image.ref, stage: 'planning' };
  const gb = (b: number) => (b / 1e9).toFixed(2);
  return {
    image: image.ref,
    fetched: `${gb(s.fetchedBytes)} GB`,
    written: `${gb(s.writtenBytes + s.copiedBytes)} of ${gb(image.dataBytes)} GB`,
    ranges: `${s.ranges}/${s.rangesTotal}`,
    rate: `${(s.fetchedBytes / 1e6 / Math.max(s.seconds, 0.001)).toFixed(0)} MB/s`,
  };
}

/**
 * A helper that exited non-zero as a Temporal failure: a bad order (exit 2) is a bug no retry mends;
 * anything else (network, S3, a chunk that never verified) is retried.
 */
export function helperFailure(e: unknown, what: string, type: (h: HelperError) => string): unknown {
  if (!(e instanceof HelperError)) return e;
  return ApplicationFailure.create({
    message: `${what}: ${e.message}`,
    type: e.code === 2 ? 'ImageHelperBadOrder' : type(e),
    nonRetryable: e.code === 2,
  });
}

/**
 * Marks a cached version used now (the index entry's mtime), writing the entry if a crash left the
 * VM without one. Allocated bytes, not logical: a 100 GB disk that is mostly holes costs what it holds.
 */
async function recordCacheEntry(conn: SshConnection, paths: HostPaths, digest: string): Promise<CacheEntry> {
  const vm = imageCacheName(digest);
  const file = `${paths.home}/.marina/images/${hex(digest)}.json`;
  const out = await conn.run(
    `f=${shq(file)}; if [ -f "$f" ]; then touch "$f"; cat "$f"; else mkdir -p "$(dirname "$f")"; ` +
      `b=$(( $(du -sk ${shq(paths.layout.dir(vm))} | cut -f1) * 1024 )); ` +
      `printf '{"digest":"%s","vm":"%s","bytes":%s}' ${shq(digest)} ${shq(vm)} "$b" | tee "$f"; fi`,
  );
  return { ...(JSON.parse(out) as Omit<CacheEntry, 'usedAt'>), usedAt: Date.now() };
}

/**
 * If the host holds this version whole: a promise that marks it used now (the caller may boot meanwhile,
 * on another channel of the same connection); undefined if it must be pulled. One rule with the CLI's cache
 * (integrity.ts): only a VM the helper verified whole is cached or a seed. The version is looked at alone,
 * so a hit (the common case) costs one round trip, and one more for a hypervisor that registers VMs.
 */
export async function useCachedImage(
  ctx: ActivityContext,
  target: HostRef,
  image: ResolvedImage,
): Promise<Promise<unknown> | undefined> {
  checkDigest(image.digest, 'image.digest');
  const pool = ctx.pool(target.pool);
  const conn = await ctx.hostConnection(target);
  const paths = await knownHostPaths(conn, hypervisorOf(pool, target.host));
  const runner = await hostHelper(conn, paths);
  const [state] = await inspectPlaces(runner, [cachedPlace(paths, image.digest)]);
  if (state !== 'verified') return undefined;
  const vm = cachedImageName(image);
  const driver = await ctx.driver(target);
  // A crash between a pull's rename and its registration leaves a folder Parallels does not know yet; Tart
  // knows a VM by its folder, which the helper just verified.
  if (!driver.findsVmsByFolder) await driver.adopt(vm, paths.layout.dir(vm));
  return recordCacheEntry(conn, paths, image.digest);
}

const mixedHint = (pool: { hosts: Array<{ hypervisor?: string }>; hypervisor: string }) =>
  new Set(pool.hosts.map((h) => h.hypervisor ?? pool.hypervisor)).size > 1
    ? ", or ask for this image's hosts with the label hypervisor"
    : '';

export function imageActivities(ctx: ActivityContext) {
  /**
   * Manifests are immutable: read once per version per worker, the most recently used few kept
   * (a 100 GiB version at 256 KiB chunks is ~19 MB of JSON).
   */
  const manifests = new Map<string, VersionManifest>();
  const remember = (digest: string, m: VersionManifest) => {
    manifests.delete(digest);
    manifests.set(digest, m);
    while (manifests.size > MANIFEST_CACHE) manifests.delete(manifests.keys().next().value!);
  };
  const manifest = async (store: ChunkedStore, digest: string) => {
    const m = manifests.get(digest) ?? (await store.version(digest));
    if (m) remember(digest, m);
    return m;
  };

  return {
    async resolveImage(ref: string): Promise<ResolvedImage> {
      const store = imageStore(ctx);
      const found = await store.resolve(ref);
      if (!found) {
        const known = await store.tags().catch(() => []);
        throw ApplicationFailure.create({
          message: `unknown image "${ref}"; the store has: ${known.map((t) => t.ref).join(', ') || '(none)'}; push it with \`marina image push\``,
          type: 'ImageNotFound',
          nonRetryable: true,
        });
      }
      remember(found.digest, found.manifest);
      const m = found.manifest;
      return {
        ref: found.ref,
        digest: found.digest,
        size: m.size,
        dataBytes: m.chunks.reduce((n, c, i) => n + (c ? Math.min(m.chunkSize, m.size - i * m.chunkSize) : 0), 0),
        ...(m.vmHostKey ? { vmHostKey: m.vmHostKey } : {}),
      };
    },

    /**
     * The host pulls the version with its helper: only chunks no cached version holds cross the
     * network, checked and written sparse; a killed pull resumes from its journal on the next
     * attempt. Heartbeats carry the progress (the Web UI shows them on the pending activity).
     * Afterwards the cache is trimmed to the pool's budget, least recently used first.
     */
    async ensureImage(
      target: HostRef,
      image: ResolvedImage,
    ): Promise<{ cached: boolean; fetchedBytes: number; copiedBytes: number; seconds: number; evicted: string[] }> {
      const actx = Context.current();
      const pool = ctx.pool(target.pool);
      const driver = await ctx.driver(target);
      const conn = await ctx.hostConnection(target);
      const kind = hypervisorOf(pool, target.host);
      const paths = await knownHostPaths(conn, kind);
      const vm = cachedImageName(image);
      const runner = await hostHelper(conn, paths);
      const place = (digest: string) => cachedPlace(paths, digest);
      const used = await useCachedImage(ctx, target, image);
      if (used) {
        await used;
        return { cached: true, fetchedBytes: 0, copiedBytes: 0, seconds: 0, evicted: [] };
      }
      const vmsPresent = new Set((await driver.list()).map((v) => v.name));
      const entries = await readCache(conn, paths, vmsPresent);
      const states = await inspectPlaces(
        runner,
        entries.map((e) => place(e.digest)),
      );
      const verified = entries.filter((_, i) => states[i] === 'verified');
      for (const e of entries.filter((x, i) => states[i] !== 'verified' && x.digest !== image.digest)) {
        // Unverified (a pull by an older helper, or damaged): dropped, unless a job may be cloning it right now.
        if (Date.now() - e.usedAt < RECENT_USE_MS) continue;
        await driver.destroy(e.vm);
        await conn.run(`rm -f ${shq(`${paths.home}/.marina/images/${hex(e.digest)}.json`)}`);
      }
      const store = imageStore(ctx);
      const wanted = await manifest(store, image.digest);
      if (!wanted)
        throw ApplicationFailure.create({
          message: `version ${image.digest} of ${image.ref} is gone from the store (removed and collected?); resolve the tag again`,
          type: 'ImageNotFound',
          nonRetryable: true,
        });
      const wantedKind = imageHypervisor(wanted);
      if (wantedKind !== kind)
        throw ApplicationFailure.create({
          message: `${image.ref} is a ${wantedKind === 'parallels' ? 'Parallels (.pvm)' : 'Tart'} image and host ${target.host} runs ${kind}: give the job an image made for ${kind}${mixedHint(pool)}`,
          type: 'ImageHypervisorMismatch',
          nonRetryable: true,
        });
      let last: PullStats | undefined;
      const beat = setInterval(() => actx.heartbeat(pullProgress(image, last)), 1000);
      let stats: PullStats;
      try {
        ({ stats } = await pullVersion(
          store,
          runner,
          { digest: image.digest, manifest: wanted },
          verified.map((e) => place(e.digest)),
          {
            dir: `${paths.home}/.marina/pulls/${hex(image.digest)}`,
            disk: paths.layout.disk,
            final: paths.layout.dir(vm),
          },
          {
            onProgress: (s) => (last = s),
            signal: actx.cancellationSignal,
            manifests: (d) => manifest(store, d),
            maxBytesPerSecond: (pool.imageCache.pullMBps ?? 0) * 1e6,
          },
        ));
      } catch (e) {
        if (isWorkerShutdown(actx))
          throw workerShutdownFailure(`pull of ${image.ref} on ${target.host} stopped; the next attempt resumes it`);
        throw helperFailure(e, `pulling ${image.ref} on ${target.host}`, (h) =>
          h.corrupt ? 'ImageDigestMismatch' : 'ImageFetchFailed',
        );
      } finally {
        clearInterval(beat);
      }
      recordImagePull(stats.fetchedBytes, stats.seconds, { pool: target.pool, host: target.host });
      await driver.adopt(vm, paths.layout.dir(vm));
      const entry = await recordCacheEntry(conn, paths, image.digest);
      const budget = pool.imageCache.budgetGiB * GiB;
      const evict = planEviction([...verified, entry], budget, new Set([image.digest]), Date.now());
      for (const e of evict) {
        await driver.destroy(e.vm);
        await conn.run(`rm -f ${shq(`${paths.home}/.marina/images/${hex(e.digest)}.json`)}`);
      }
      return {
        cached: false,
        fetchedBytes: stats.fetchedBytes,
        copiedBytes: stats.copiedBytes,
        seconds: stats.seconds,
        evicted: evict.map((e) => e.digest),
      };
    },
  };
}
