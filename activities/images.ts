/** Image activities: resolve a reference, and make sure the host holds the image (basic S3 fetch). */
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { ImageStore, hexOf, type ResolvedImage } from '../src/images/store';
import { imageCacheName } from '../src/domain/job';
import type { ActivityContext, HostRef } from './context';

/** The local VM name a host keeps an image under: by digest, so a cache hit is exact. */
export const cachedImageName = (image: ResolvedImage): string => imageCacheName(image.digest);

export function imageStore(ctx: ActivityContext): ImageStore {
  return new ImageStore(ctx.s3(ctx.imageStoreLocation), ctx.imageStoreLocation);
}

export function imageActivities(ctx: ActivityContext) {
  return {
    async resolveImage(ref: string): Promise<ResolvedImage> {
      const store = imageStore(ctx);
      const image = await store.resolve(ref);
      if (!image) {
        const known = await store.list().catch(() => [] as string[]);
        throw ApplicationFailure.create({
          message: `unknown image "${ref}"; the store has: ${known.join(', ') || '(none)'}; push it with \`marina image push\``,
          type: 'ImageNotFound',
          nonRetryable: true,
        });
      }
      return image;
    },

    /**
     * The host downloads the archive itself through a presigned URL, verifies its
     * SHA-256, and imports it as a local VM named by digest. A partial download is
     * resumed by the next attempt; a present image is not downloaded again.
     */
    async ensureImage(target: HostRef, image: ResolvedImage): Promise<{ cached: boolean; bytes: number }> {
      const actx = Context.current();
      const driver = await ctx.driver(target);
      const local = cachedImageName(image);
      if ((await driver.list()).some((v) => v.name === local)) return { cached: true, bytes: 0 };

      const url = await imageStore(ctx).presignDownload(image);
      const hex = hexOf(image.digest);
      const conn = await ctx.hostConnection(target);
      // The script (with the URL) travels on stdin: never on a command line, in history or a log.
      const script = hostFetchScript(
        hex,
        (actx.info.workflowExecution?.workflowId ?? actx.info.activityId).replace(/[^A-Za-z0-9._-]/g, '_'),
        url,
      );
      let bytes = 0;
      let lastError = '';
      const beat = setInterval(() => actx.heartbeat({ bytes, total: image.size }), 1000);
      try {
        const r = await conn.exec('bash -s', {
          stdin: script,
          signal: actx.cancellationSignal,
          onStdout: (d) => {
            for (const line of d.toString().split('\n')) {
              const m = /^PROGRESS (\d+)/.exec(line);
              if (m) bytes = Number(m[1]);
            }
          },
          onStderr: (d) => (lastError = d.toString().trim().split('\n').pop() ?? ''),
        });
        if (r.code !== 0) {
          throw ApplicationFailure.create({
            message: `fetching ${image.ref} on ${target.host} failed (exit ${r.code}): ${lastError}`,
            type: r.code === 3 ? 'ImageDigestMismatch' : 'ImageFetchFailed',
          });
        }
      } finally {
        clearInterval(beat);
      }
      const home = await conn.run('printf %s "$HOME"');
      await driver.importImage(`${home}/.marina/cache/sha256/${hex}.tvm`, local);
      // The imported VM is the cache entry; the archive would double the disk used.
      await conn.run(`rm -f "$HOME/.marina/cache/sha256/${hex}.tvm"`);
      return { cached: false, bytes: image.size };
    },
  };
}

function hostFetchScript(hex: string, attemptKey: string, url: string): string {
  const q = url.replace(/\\/g, '\\\\').replace(/"/g, '\\"');
  return `set -uo pipefail
cache="$HOME/.marina/cache/sha256"; mkdir -p "$cache"
final="$cache/${hex}.tvm"
[ -f "$final" ] && { echo "PROGRESS $(wc -c < "$final")"; exit 0; }
part="$cache/${hex}.partial.${attemptKey}"
# -C - resumes from what an earlier attempt of this job already wrote.
curl -fsS --retry 3 -C - -o "$part" -K - <<'CURLCFG' &
url = "${q}"
CURLCFG
cpid=$!
while kill -0 $cpid 2>/dev/null; do echo "PROGRESS $(wc -c < "$part" 2>/dev/null || echo 0)"; sleep 1; done
wait $cpid; rc=$?
[ $rc = 0 ] || { echo "curl exited $rc" >&2; exit 2; }
sum=$( (shasum -a 256 "$part" 2>/dev/null || sha256sum "$part") | cut -d' ' -f1)
if [ "$sum" != "${hex}" ]; then rm -f "$part"; echo "sha256 mismatch: got $sum, want ${hex}" >&2; exit 3; fi
echo "PROGRESS $(wc -c < "$part")"
mv "$part" "$final"
`;
}
