/** Snapshot: push the job's VM as a new image version, after stripping the job's secrets from it. */
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { shq } from './ssh/connection';
import { imageStore } from './images';
import type { ActivityContext, VmRef } from './context';

export function snapshotActivities(ctx: ActivityContext) {
  return {
    async snapshotVm(target: VmRef & { ip: string }, ref: string): Promise<{ image: string; digest: string }> {
      const actx = Context.current();
      const driver = await ctx.driver(target);
      const running = (await driver.list()).find((v) => v.name === target.vm)?.running;
      if (running) {
        // Secrets, the script and its runner must not ship inside an image.
        const vm = await ctx.vmConnection(target, target.ip);
        await vm.run('rm -rf "$HOME/.marina"');
        ctx.ssh.drop(`vm ${target.vm} on ${target.host}`);
        await driver.stop(target.vm, 30);
      }
      actx.heartbeat('export');
      const host = await ctx.hostConnection(target);
      const home = await host.run('printf %s "$HOME"');
      const archive = `${home}/.marina/snapshots/${target.vm}.tvm`;
      await host.run(`mkdir -p "$HOME/.marina/snapshots"`);
      await driver.exportImage(target.vm, archive);
      const out = await host.run(
        `f="${archive}"; ( shasum -a 256 "$f" 2>/dev/null || sha256sum "$f" ) | cut -d' ' -f1; wc -c < "$f"`,
      );
      const [hex, size] = out.trim().split(/\s+/);
      if (!hex || !/^[0-9a-f]{64}$/.test(hex)) throw new Error(`cannot hash snapshot on ${target.host}: ${out}`);
      const digest = `sha256:${hex}`;
      const store = imageStore(ctx);
      if (!(await store.hasBlob(digest))) {
        actx.heartbeat('upload');
        const url = await store.presignUpload(digest);
        const r = await host.exec(`curl -fsS -X PUT -T "${archive}" -K -`, {
          stdin: `url = "${url.replace(/"/g, '\\"')}"\n`,
        });
        if (r.code !== 0) {
          throw ApplicationFailure.create({
            message: `uploading snapshot from ${target.host} failed: ${r.stderr}`,
            type: 'SnapshotUploadFailed',
          });
        }
      }
      await store.publish(ref, digest, Number(size));
      await host.run(`rm -f ${shq(archive)}`);
      return { image: ref, digest };
    },
  };
}
