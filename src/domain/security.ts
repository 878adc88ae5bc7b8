/**
 * A pool's security policy (as in Cirrus persistent workers): which images its jobs may
 * boot, and which host directories they may share into the VM, read-only where the policy
 * forces it. Pure: the client checks a spec before it starts a workflow, and the pool
 * checks every lease request, since a CI system may start job workflows directly.
 */
import picomatch from 'picomatch/posix';
import { parseImageRef, type Volume } from './job';

export interface VolumeRule {
  /** Glob over absolute host paths, e.g. `/Users/ci/caches/**`. */
  path: string;
  /** Mount matching volumes read-only whatever the job asks. */
  readOnly: boolean;
}

export interface SecurityPolicy {
  /** Globs over image names (`name:tag`; a bare name allows every tag). Absent: every image. */
  allowedImages?: string[];
  /** Host directories jobs may share. Absent or empty: none. */
  allowedVolumes?: VolumeRule[];
}

export interface SecurityVerdict {
  /** Why the job is refused, one line per violation; empty if allowed. */
  violations: string[];
  /** The job's volumes as they will be mounted (read-only forced where a rule says so). */
  volumes: Volume[];
}

const matcher = (glob: string) => picomatch(glob, { dot: true });

export function checkSecurity(
  pool: string,
  policy: SecurityPolicy | undefined,
  /** `image` absent (a request from an older job workflow): only the volumes are checked. */
  job: { image?: string; volumes?: Volume[] },
): SecurityVerdict {
  const violations: string[] = [];
  const allowed = policy?.allowedImages;
  if (job.image !== undefined && allowed && allowed.length > 0) {
    const ref = parseImageRef(job.image);
    const full = `${ref.name}:${ref.tag}`;
    const ok = allowed.some((g) => (g.includes(':') ? matcher(g)(full) : matcher(g)(ref.name)));
    if (!ok)
      violations.push(
        `image "${full}" is not allowed in pool ${pool} (security.allowedImages: ${allowed.join(', ')}); use an allowed image or ask the pool's owner`,
      );
  }
  const rules = policy?.allowedVolumes ?? [];
  const volumes: Volume[] = [];
  for (const v of job.volumes ?? []) {
    const rule = rules.find((r) => matcher(r.path)(v.hostPath));
    if (!rule) {
      violations.push(
        `volume "${v.hostPath}" is not allowed in pool ${pool} (security.allowedVolumes: ${
          rules.map((r) => r.path).join(', ') || 'none'
        }); share only allowed host paths`,
      );
      continue;
    }
    volumes.push({ ...v, readOnly: rule.readOnly || v.readOnly === true });
  }
  return { violations, volumes };
}
