/**
 * `marina image ...`: the basic store's archives (push, ls) and the chunked store
 * (docs/image-format.md): push a raw disk, pull it into a local cache, list, remove, gc.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { parseVmHostKey } from '../images/vm-host-key';
import { join } from 'node:path';
import type { Command } from 'commander';
import { SingleBar, Presets } from 'cli-progress';
import type { LoadedConfig } from '../config/load';
import { s3ClientFor } from '../config/s3';
import { ChunkedStore } from '../images/chunked/store';
import { DEFAULT_RETENTION } from '../images/chunked/gc';
import { localHelper } from '../images/chunked/helper';
import { pullVersion, pushDisk, type Candidate } from '../images/chunked/transfer';
import { unpackVmArchive, VM_DISK } from '../images/chunked/vm-files';
import { isPvmBundle, PVM_DISK, PVM_HDD, PvmError, unpackPvm, writePvmBundle } from '../images/chunked/pvm';
import { assertImageRef } from '../domain/image-ref';
import { UsageError } from './args';
import { ExitError, imageExitCode, notFound } from './exit-codes';

interface PushFlags {
  disk?: string;
  chunkSize: string;
  cacheDir?: string;
  maxRate?: string;
  vmHostKey?: string;
}

const gb = (b: number) => `${(b / 1e9).toFixed(2)} GB`;

/** A progress bar with throughput on a terminal; silent otherwise (CI logs, tests). */
function progress(what: string, total: number, unit: string): { update(n: number): void; stop(): void } {
  if (!process.stderr.isTTY) return { update: () => undefined, stop: () => undefined };
  const started = Date.now();
  const bar = new SingleBar(
    { format: `${what} [{bar}] {percentage}% | {value}/{total} ${unit} | {rate} MB/s`, stream: process.stderr },
    Presets.shades_classic,
  );
  bar.start(total, 0, { rate: '0' });
  return {
    update: (n) =>
      bar.update(n, {
        rate: (n / ((Date.now() - started) / 1000 || 1)).toFixed(0),
      }),
    stop: () => bar.stop(),
  };
}

function parseSize(flag: string, v: string): number {
  const m = /^(\d+)([KM])$/i.exec(v);
  const n = m ? Number(m[1]) * (m[2]!.toUpperCase() === 'K' ? 1024 : 1024 * 1024) : NaN;
  if (!Number.isInteger(n) || n < 256 * 1024 || n > 4 * 1024 * 1024 || (n & (n - 1)) !== 0)
    throw new UsageError(`${flag}: "${v}" must be a power of two from 256K to 4M, e.g. 1M`);
  return n;
}

/** `--max-rate 50` (MB/s, decimal) as bytes per second; absent: no cap. */
function parseRate(v: string | undefined): number {
  if (v === undefined) return 0;
  if (!/^\d+(\.\d+)?$/.test(v) || !(Number(v) > 0))
    throw new UsageError(`--max-rate: "${v}" must be a positive number of MB/s, e.g. --max-rate 50`);
  return Number(v) * 1e6;
}

/**
 * The versions a cache directory may hold (`<dir>/<hex>/disk.img`, or a Parallels bundle's disk in
 * `<dir>/<hex>/harddisk.hdd/`); the helper decides which are verified.
 */
function cacheCandidates(cacheDir: string): Candidate[] {
  if (!existsSync(cacheDir)) return [];
  return readdirSync(cacheDir)
    .filter((x) => /^[0-9a-f]{64}$/.test(x))
    .map((hex) => ({
      digest: `sha256:${hex}`,
      dir: join(cacheDir, hex),
      disk: existsSync(join(cacheDir, hex, PVM_HDD)) ? PVM_DISK : VM_DISK,
    }));
}

/** A Parallels bundle that cannot be an image is the caller's to fix (usage), with the fix named. */
function unpackPvmOrUsage(bundle: string): ReturnType<typeof unpackPvm> {
  try {
    return unpackPvm(bundle);
  } catch (e) {
    throw e instanceof PvmError ? new UsageError(e.message) : e;
  }
}

/** Every failure leaves with the exit code of its class (exit-codes.ts). */
function classified<A extends unknown[]>(action: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args) => {
    try {
      await action(...args);
    } catch (e) {
      if (e instanceof ExitError) throw e;
      throw new ExitError(e instanceof Error ? e.message : String(e), imageExitCode(e));
    }
  };
}

export function registerImageCommands(program: Command, config: () => LoadedConfig): void {
  const stores = () => {
    const cfg = config();
    const s3 = s3ClientFor(cfg, cfg.imageStore);
    return { s3, chunked: new ChunkedStore(s3, cfg.imageStore) };
  };
  const image = program.command('image').description('images in the store');
  image
    .command('push <ref> [archive]')
    .description(
      'push a VM (a tart export archive, a Parallels .pvm bundle, or a raw disk with --disk) to the chunked store',
    )
    .option('--disk <file>', 'a raw disk image: chunked, only chunks the store lacks are uploaded')
    .option('--chunk-size <size>', 'chunk size (256K-4M)', '256K')
    .option(
      '--cache-dir <dir>',
      'pulled versions (marina image pull --cache-dir): changed chunks go up as patches against the closest',
    )
    .option('--max-rate <MB/s>', 'cap the upload, in MB/s')
    .option(
      '--vm-host-key <file>',
      "the guest's SSH host key (a .pub file or `ssh-keyscan -t ed25519 <vm ip>` output): jobs trust no other",
    )
    .action(
      classified(async (ref: string, archive: string | undefined, o: PushFlags) => {
        assertImageRef(ref);
        if (!archive === !o.disk) throw new UsageError('give either an archive or --disk <raw disk>, not both');
        const chunkSize = parseSize('--chunk-size', o.chunkSize);
        const maxBytesPerSecond = parseRate(o.maxRate);
        let vmHostKey: string | undefined;
        if (o.vmHostKey) {
          try {
            vmHostKey = parseVmHostKey(readFileSync(o.vmHostKey, 'utf8'));
          } catch (e) {
            throw new UsageError(`--vm-host-key: ${o.vmHostKey}: ${(e as Error).message}`);
          }
        } else
          console.error(
            `warning: ${ref} records no VM host key; pools with vm.hostKeys: pinned (the default) refuse it. Give --vm-host-key.`,
          );
        const { s3, chunked } = stores();
        const pvm = archive !== undefined && isPvmBundle(archive);
        const vm = archive ? (pvm ? unpackPvmOrUsage(archive) : unpackVmArchive(archive)) : undefined;
        try {
          let bar: ReturnType<typeof progress> | undefined;
          let stage = '';
          const r = await pushDisk(chunked, localHelper(), ref, vm?.disk ?? o.disk!, {
            chunkSize,
            maxBytesPerSecond,
            ...(o.cacheDir ? { candidates: cacheCandidates(o.cacheDir) } : {}),
            ...(vm ? { extras: vm.extras } : {}),
            ...(pvm ? { diskPath: PVM_DISK } : {}),
            ...(vmHostKey ? { vmHostKey } : {}),
            onProgress: (p) => {
              if (p.stage !== stage) {
                bar?.stop();
                stage = p.stage;
                bar = progress(`${p.stage} ${ref}`, p.total / 1e6, 'MB');
              }
              bar!.update(p.bytes / 1e6);
            },
          });
          bar?.stop();
          console.log(
            `${r.ref} ${r.digest}: ${r.chunks.total} chunks (${r.chunks.zero} zero, ${r.chunks.reused} already stored, ${r.chunks.uploaded} uploaded, ${r.chunks.patched} of them as patches), ${gb(r.bytesUploaded)} uploaded for ${gb(r.size)} logical`,
          );
        } finally {
          vm?.cleanup();
          s3.destroy();
        }
      }),
    );
  image
    .command('pull <ref>')
    .description('pull a chunked image into a local cache directory (<dir>/<hex>/), from the closest cached version')
    .requiredOption('--cache-dir <dir>', 'where pulled VMs are kept, by digest')
    .option('--concurrency <n>', 'ranged GETs at once', '8')
    .option('--max-rate <MB/s>', 'cap the download, in MB/s')
    .option('--out <path.pvm>', 'a Parallels image: also write it out as a .pvm bundle there, for `prlctl register`')
    .action(
      classified(async (ref: string, o: { cacheDir: string; concurrency: string; maxRate?: string; out?: string }) => {
        assertImageRef(ref);
        const concurrency = Number(o.concurrency);
        if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64)
          throw new UsageError(`--concurrency: "${o.concurrency}" must be a whole number from 1 to 64, e.g. 8`);
        const maxBytesPerSecond = parseRate(o.maxRate);
        const { s3, chunked } = stores();
        try {
          const r = await chunked.resolve(ref);
          if (!r) throw notFound(`no chunked image ${ref} in the store; see marina image ls`);
          mkdirSync(o.cacheDir, { recursive: true });
          const dir = join(o.cacheDir, r.digest.slice('sha256:'.length));
          const disk = r.manifest.disk ?? VM_DISK;
          if (o.out && disk !== PVM_DISK)
            throw new UsageError(`--out: ${ref} is not a Parallels image (it was not pushed from a .pvm bundle)`);
          if (o.out && existsSync(o.out)) throw new UsageError(`--out: ${o.out} exists; give a new path`);
          let bar: ReturnType<typeof progress> | undefined;
          const { plan, stats } = await pullVersion(
            chunked,
            localHelper(),
            r,
            cacheCandidates(o.cacheDir),
            { dir, disk },
            {
              concurrency,
              maxBytesPerSecond,
              onPlan: (p) => (bar = progress(`pull ${ref}`, p.fetchBytes / 1e6, 'MB')),
              onProgress: (s) => bar?.update(s.fetchedBytes / 1e6),
            },
          );
          bar?.stop();
          if (o.out) {
            writePvmBundle(dir, o.out);
            console.log(`${ref} -> ${o.out} (register it with: prlctl register ${o.out} --regenerate-src-uuid)`);
          }
          if (stats.alreadyComplete) return void console.log(`${ref} ${r.digest}: already cached (verified) at ${dir}`);
          console.log(
            `${ref} ${r.digest} -> ${dir}: ${gb(stats.fetchedBytes)} fetched in ${stats.ranges} GETs (${stats.retries} retried), ${gb(stats.copiedBytes)} copied locally${plan.seed ? ` from ${plan.seed.slice(0, 19)}` : ''}, ${stats.resumedChunks} chunks resumed, ${stats.seconds.toFixed(1)} s`,
          );
        } finally {
          s3.destroy();
        }
      }),
    );
  image
    .command('retag <from> <to>')
    .description('point tag <to> at the version <from> names (nothing is copied)')
    .action(
      classified(async (from: string, to: string) => {
        assertImageRef(from);
        assertImageRef(to);
        const { s3, chunked } = stores();
        try {
          const digest = await chunked.retag(from, to);
          if (!digest) throw notFound(`no chunked image ${from}; see marina image ls`);
          console.log(`${to} -> ${digest}`);
        } finally {
          s3.destroy();
        }
      }),
    );
  image.command('ls').action(
    classified(async () => {
      const { s3, chunked } = stores();
      try {
        for (const t of await chunked.tags()) {
          const m = await chunked.version(t.digest);
          console.log(`${t.ref}\tchunked\t${t.digest}\t${m ? gb(m.size) : '?'}`);
        }
      } finally {
        s3.destroy();
      }
    }),
  );
  image
    .command('rm <ref>')
    .description('remove a chunked image tag (its chunks go at a later gc if nothing else uses them)')
    .action(
      classified(async (ref: string) => {
        assertImageRef(ref);
        const { s3, chunked } = stores();
        try {
          if (!(await chunked.resolve(ref))) throw notFound(`no chunked image ${ref}; see marina image ls`);
          await chunked.removeTag(ref);
          console.log(`removed ${ref}`);
        } finally {
          s3.destroy();
        }
      }),
    );
  image
    .command('gc')
    .description(
      'condemn packs no retained version uses (every tag, and its recent earlier versions); delete those condemned at least 6 h ago and still unused',
    )
    .option(
      '--keep-previous <n>',
      'earlier versions of each tag kept for a rollback',
      String(DEFAULT_RETENTION.keepPrevious),
    )
    .option('--keep-days <days>', 'keep earlier versions only this many days', String(DEFAULT_RETENTION.keepDays))
    .action(
      classified(async (o: { keepPrevious: string; keepDays: string }) => {
        const keepPrevious = Number(o.keepPrevious);
        const keepDays = Number(o.keepDays);
        if (!Number.isInteger(keepPrevious) || keepPrevious < 0)
          throw new UsageError(
            `--keep-previous: "${o.keepPrevious}" must be a whole number, e.g. 2 (0 keeps only what tags name)`,
          );
        if (!(keepDays >= 0)) throw new UsageError(`--keep-days: "${o.keepDays}" must be a number of days, e.g. 30`);
        const { s3, chunked } = stores();
        try {
          const g = await chunked.gc(Date.now(), undefined, { keepPrevious, keepDays });
          console.log(
            `gc: ${g.deletePacks.length} packs deleted (${gb(g.freedBytes)}), ${Object.keys(g.condemned).length} condemned (deleted by a run 6 h after, if still unused); kept: every tag and its last ${keepPrevious} earlier version(s) younger than ${keepDays} days`,
          );
        } finally {
          s3.destroy();
        }
      }),
    );
}
