/** Snapshot: push the job's VM as a new image version, after stripping the job's secrets from it. */
import { Context } from '@temporalio/activity';
import { pushDisk } from '../src/images/chunked/transfer';
import { vmFilesTarCommand } from '../src/images/chunked/vm-files';
import { hypervisorOf } from '../src/config/load';
import { shq } from './ssh/connection';
import { cachedPlace, helperFailure, hostHelper, hostPaths, imageStore, readCache } from './images';
import type { ActivityContext, VmRef } from './context';
import { isWorkerShutdown, workerShutdownFailure } from './shutdown';
import { ApplicationFailure } from '@temporalio/common';
import { checkSecurity } from '../src/domain/security';
import { checkVmRef, invalidInput } from './inputs';
import { isImageRef } from '../src/domain/job';

/** Who asks for the snapshot: what the pool's snapshot rules look at. */
export interface SnapshotRequester {
  client?: string;
  /** The names of the secrets the job received. */
  secrets: string[];
}

export function snapshotActivities(ctx: ActivityContext) {
  return {
    /**
     * Idempotent: a retry hashes the disk again and finds in the store every pack an earlier attempt
     * stored (each pack's index is written as soon as the pack is), so it uploads only the rest.
     */
    async snapshotVm(
      target: VmRef & { ip: string },
      ref: string,
      /** Absent from a job started before snapshot rules existed: judged as strictly as a job with secrets. */
      requester?: SnapshotRequester,
    ): Promise<{ image: string; digest: string }> {
      checkVmRef(target);
      if (typeof ref !== 'string' || !isImageRef(ref))
        throw invalidInput('ref', ref, 'an image reference like "ci/cache:pr-42"');
      // Checked again here, against this worker's config, right before a tag is written: the last word.
      const verdict = checkSecurity(target.pool, ctx.pool(target.pool).security, {
        snapshot: ref,
        client: requester?.client,
        secrets: requester ? Object.fromEntries(requester.secrets.map((n) => [n, n])) : true,
      });
      if (verdict.violations.length > 0)
        throw ApplicationFailure.create({
          message: verdict.violations.join('; '),
          type: 'SnapshotRefused',
          nonRetryable: true,
        });
      const actx = Context.current();
      const driver = await ctx.driver(target);
      const running = (await driver.list()).find((v) => v.name === target.vm)?.running;
      if (running) {
        // Secrets, the script and its runner's registration must not ship inside an image.
        const vm = await ctx.vmConnection(target, target.ip);
        await vm.run('rm -rf "$HOME/.marina" "$HOME/actions-runner/.runner" "$HOME/actions-runner/.credentials"*');
        ctx.ssh.drop(`vm ${target.vm} on ${target.host}`);
        await driver.stop(target.vm, 30);
      }
      const host = await ctx.hostConnection(target);
      const paths = await hostPaths(host, hypervisorOf(ctx.pool(target.pool), target.host));
      const runner = await hostHelper(host, paths);
      // The image the job's VM was cloned from is in the host's cache: changed chunks go up as patches against it.
      const present = new Set((await driver.list()).map((v) => v.name));
      const candidates = (await readCache(host, paths, present)).map((e) => cachedPlace(paths, e.digest));
      const dir = paths.layout.dir(target.vm);
      const parts: Buffer[] = [];
      const tar = await host.exec(vmFilesTarCommand(shq(dir), paths.layout.disk), {
        onStdout: (d) => parts.push(Buffer.from(d)),
      });
      if (tar.code !== 0) throw new Error(`cannot read the VM files of ${target.vm} on ${target.host}: ${tar.stderr}`);
      try {
        const r = await pushDisk(imageStore(ctx), runner, ref, `${dir}/${paths.layout.disk}`, {
          // A Parallels VM's disk sits inside its bundle: the version records where, so it pulls as a bundle.
          diskPath: paths.layout.disk,
          extras: Buffer.concat(parts),
          // The snapshot's guest is the same guest: it answers with the key the job's VM was pinned to.
          ...(target.vmHostKey ? { vmHostKey: target.vmHostKey } : {}),
          candidates,
          onProgress: (p) =>
            actx.heartbeat({
              stage: p.stage,
              done: `${(p.bytes / 1e9).toFixed(2)} of ${(p.total / 1e9).toFixed(2)} GB`,
            }),
          signal: actx.cancellationSignal,
        });
        return { image: r.ref, digest: r.digest };
      } catch (e) {
        if (isWorkerShutdown(actx))
          throw workerShutdownFailure(`push of snapshot ${ref} stopped; the next attempt reuses what it stored`);
        throw helperFailure(e, `pushing snapshot ${ref} from ${target.host}`, () => 'SnapshotUploadFailed');
      }
    },
  };
}
