/** Snapshot: push the job's VM as a new image version, after stripping the job's secrets from it. */
import { Context } from '@temporalio/activity';
import { pushDisk } from '../src/images/chunked/transfer';
import { VM_DISK, vmFilesTarCommand } from '../src/images/chunked/vm-files';
import { shq } from './ssh/connection';
import { cachedPlace, helperFailure, hostHelper, hostPaths, imageStore, readCache } from './images';
import type { ActivityContext, VmRef } from './context';
import { isWorkerShutdown, workerShutdownFailure } from './shutdown';

export function snapshotActivities(ctx: ActivityContext) {
  return {
    /**
     * Idempotent: a retry hashes the disk again and finds in the store every pack an earlier attempt
     * stored (each pack's index is written as soon as the pack is), so it uploads only the rest.
     */
    async snapshotVm(target: VmRef & { ip: string }, ref: string): Promise<{ image: string; digest: string }> {
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
      const paths = await hostPaths(host);
      const runner = await hostHelper(host, paths);
      // The image the job's VM was cloned from is in the host's cache: changed chunks go up as patches against it.
      const present = new Set((await driver.list()).map((v) => v.name));
      const candidates = (await readCache(host, paths, present)).map((e) => cachedPlace(paths, e.digest));
      const dir = `${paths.vms}/${target.vm}`;
      const parts: Buffer[] = [];
      const tar = await host.exec(vmFilesTarCommand(shq(dir)), { onStdout: (d) => parts.push(Buffer.from(d)) });
      if (tar.code !== 0) throw new Error(`cannot read the VM files of ${target.vm} on ${target.host}: ${tar.stderr}`);
      try {
        const r = await pushDisk(imageStore(ctx), runner, ref, `${dir}/${VM_DISK}`, {
          extras: Buffer.concat(parts),
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
