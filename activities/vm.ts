/** VM lifecycle activities on a host: boot (clone, set, run, ip) and destroy. */
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { ResolvedImage } from '../src/images/chunked/store';
import type { Volume } from '../src/domain/job';
import { cachedImageName, useCachedImage } from './images';
import { vmKnownHosts, type ActivityContext, type VmRef } from './context';
import { isWorkerShutdown, workerShutdownFailure } from './shutdown';
import { checkDigest, checkVmRef } from './inputs';

export function vmActivities(ctx: ActivityContext) {
  const activities = {
    /** Idempotent: a retry after a crash finds the VM by its name and carries on. */
    async bootVm(
      target: VmRef,
      image: ResolvedImage,
      resources: Record<string, number>,
      volumes: Volume[] = [],
      /** `tart run` options from the host's resource modifier the lease holds. */
      runArgs: string[] = [],
    ): Promise<{ ip: string }> {
      checkVmRef(target);
      checkDigest(image.digest, 'image.digest');
      const actx = Context.current();
      const pool = ctx.pool(target.pool);
      // Before anything boots: a VM whose key cannot be checked is never booted for a job.
      vmKnownHosts(pool, target);
      const driver = await ctx.driver(target);
      const deadline = Date.now() + pool.vm.bootTimeoutSeconds * 1000;
      // The waits below can last minutes: a worker shutting down hands the boot over instead of
      // holding its exit. The VM stays; the next attempt finds it by name and waits on.
      const handOver = () => {
        if (isWorkerShutdown(actx)) throw workerShutdownFailure(`left ${target.vm} booting on ${target.host}`);
      };
      // The hypervisor's own log of this VM, for a boot that never got anywhere.
      const vmLog = async () => {
        const tail = (await driver.logTail(target.vm, 20).catch(() => '')).trim();
        return tail ? `; the VM's log ends:\n${tail}` : '';
      };
      const request = {
        source: cachedImageName(image),
        vm: target.vm,
        settings: { cpu: resources.cpu, memory: resources.memory, diskGiB: resources.disk },
        dirs: volumes.map((v) => ({
          name: v.name ?? v.hostPath.split('/').filter(Boolean).pop() ?? 'root',
          path: v.hostPath,
          readOnly: v.readOnly === true,
        })),
        // Softnet isolates the VM from the other VMs on the host, so none can take its address.
        args:
          pool.vm.network === 'softnet' && !runArgs.includes('--net-softnet') ? [...runArgs, '--net-softnet'] : runArgs,
        waitSeconds: 5,
      };
      // Clone, start and the first wait for the address are one round trip; later ones only wait on.
      let ip: string | undefined;
      while (!ip) {
        handOver();
        actx.heartbeat('boot');
        ip = await driver.boot(request);
        if (!ip && Date.now() > deadline) {
          throw ApplicationFailure.create({
            message: `${target.vm} on ${target.host} got no IP within ${pool.vm.bootTimeoutSeconds}s${await vmLog()}`,
            type: 'VmBootTimeout',
          });
        }
      }
      // An IP is not SSH: wait until the guest answers.
      for (;;) {
        handOver();
        actx.heartbeat('ssh');
        try {
          const conn = await ctx.vmConnection(target, ip);
          await conn.run('true', { timeoutMs: 10_000 });
          return { ip };
        } catch (e) {
          if (e instanceof ApplicationFailure && e.nonRetryable) throw e;
          ctx.ssh.drop(`vm ${target.vm} on ${target.host}`);
          if (Date.now() > deadline) {
            throw ApplicationFailure.create({
              message: `${target.vm} on ${target.host} did not answer SSH within ${pool.vm.bootTimeoutSeconds}s: ${(e as Error).message}`,
              type: 'VmBootTimeout',
            });
          }
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    },

    /**
     * `bootVm` if the host holds the image whole, in the same activity (a job on a warm cache saves a
     * trip through the task queue); null if it does not, and nothing was done: then fetch, then boot.
     */
    async bootCachedVm(
      target: VmRef,
      image: ResolvedImage,
      resources: Record<string, number>,
      volumes: Volume[] = [],
      runArgs: string[] = [],
    ): Promise<{ ip: string } | null> {
      checkVmRef(target);
      const used = await useCachedImage(ctx, target, image);
      if (!used) return null;
      // The cache's use is recorded while the VM boots: a clone only needs the image there.
      const [booted] = await Promise.all([activities.bootVm(target, image, resources, volumes, runArgs), used]);
      return booted;
    },

    async destroyVm(target: VmRef): Promise<{ existed: boolean }> {
      checkVmRef(target);
      // Heartbeats while it works, so a worker killed mid-destroy is noticed within the heartbeat timeout the
      // cleanup sets (workflows/activity-call.ts, untilGone), not after the whole start-to-close.
      const actx = Context.current();
      const beat = setInterval(() => actx.heartbeat('destroy'), 2000);
      try {
        actx.heartbeat('destroy');
        ctx.ssh.drop(`vm ${target.vm} on ${target.host}`);
        const driver = await ctx.driver(target);
        const existed = await driver.destroy(target.vm);
        return { existed };
      } finally {
        clearInterval(beat);
      }
    },
  };
  return activities;
}
