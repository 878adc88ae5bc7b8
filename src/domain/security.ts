/**
 * A pool's security policy (as in Cirrus persistent workers): which images its jobs may
 * boot, which image tags their snapshots may write, and which host directories they may share
 * into the VM, read-only where the policy forces it. Pure: the client checks a spec before it
 * starts a workflow, the pool checks every lease request (a CI system may start job workflows
 * directly), and the snapshot activity checks again before it writes a tag.
 */
import picomatch from 'picomatch/posix';
import { formatImageRef, parseImageRef, type Volume } from './job';

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
  /**
   * Globs over the image tags (`name:tag`; a bare name allows every tag) a snapshot may write. Absent: only
   * tags under the job's own client's namespace, `<client>/…`.
   */
  allowedSnapshotImages?: string[];
  /**
   * A job that received secrets may snapshot its VM. Off by default: whatever the script wrote with them
   * (`~/.netrc`, `.npmrc`, keychains, git credential stores) would ship in the image to every later job.
   */
  allowSnapshotWithSecrets?: boolean;
}

/** What of a job the policy looks at. */
export interface SecuredJob {
  image?: string;
  volumes?: Volume[];
  /** The image reference a snapshot would write. */
  snapshot?: string;
  client?: string;
  /** The job receives secrets (their names; or `true` when only that is known). */
  secrets?: Record<string, string> | boolean;
}

export interface SecurityProblem {
  /** The job spec's field at fault. */
  field: 'image' | 'volumes' | 'snapshot.image';
  message: string;
}

export interface SecurityVerdict {
  /** Why the job is refused, one line per violation; empty if allowed. */
  violations: string[];
  /** The same, each with the job spec's field it concerns. */
  problems: SecurityProblem[];
  /** The job's volumes as they will be mounted (read-only forced where a rule says so). */
  volumes: Volume[];
}

const matcher = (glob: string) => picomatch(glob, { dot: true });

const matchesAny = (globs: string[], image: string): boolean => {
  const ref = parseImageRef(image);
  const full = formatImageRef(ref);
  return globs.some((g) => (g.includes(':') ? matcher(g)(full) : matcher(g)(ref.name)));
};

/** A client name that can own images: it is their first path segment (`<client>/…`). */
const NAMESPACE = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** The namespace a client's snapshots may write by default, or undefined if its name cannot be one. */
export const snapshotNamespace = (client: string | undefined): string | undefined =>
  client !== undefined && NAMESPACE.test(client) ? `${client}/` : undefined;

export function checkSecurity(
  pool: string,
  policy: SecurityPolicy | undefined,
  /** `image` absent (a request from an older job workflow): only the volumes are checked. */
  job: SecuredJob,
): SecurityVerdict {
  const problems: SecurityProblem[] = [];
  const allowed = policy?.allowedImages;
  if (job.image !== undefined && allowed && allowed.length > 0 && !matchesAny(allowed, job.image)) {
    problems.push({
      field: 'image',
      message: `image "${formatRef(job.image)}" is not allowed in pool ${pool} (security.allowedImages: ${allowed.join(', ')}); use an allowed image or ask the pool's owner`,
    });
  }
  if (job.snapshot !== undefined) problems.push(...snapshotProblems(pool, policy, job, job.snapshot));
  const rules = policy?.allowedVolumes ?? [];
  const volumes: Volume[] = [];
  for (const v of job.volumes ?? []) {
    const rule = rules.find((r) => matcher(r.path)(v.hostPath));
    if (!rule) {
      problems.push({
        field: 'volumes',
        message: `volume "${v.hostPath}" is not allowed in pool ${pool} (security.allowedVolumes: ${
          rules.map((r) => r.path).join(', ') || 'none'
        }); share only allowed host paths`,
      });
      continue;
    }
    volumes.push({ ...v, readOnly: rule.readOnly || v.readOnly === true });
  }
  return { violations: problems.map((p) => p.message), problems, volumes };
}

/** `name:tag`, the tag filled in: how refusals name an image. */
const formatRef = (image: string): string => formatImageRef(parseImageRef(image));

/**
 * A snapshot writes a tag that later jobs boot: a job of one client must not be able to overwrite what
 * another client's jobs (or the pool's base images) boot from.
 */
function snapshotProblems(
  pool: string,
  policy: SecurityPolicy | undefined,
  job: SecuredJob,
  snapshot: string,
): SecurityProblem[] {
  const problems: SecurityProblem[] = [];
  const target = formatRef(snapshot);
  const secrets = job.secrets === true || (typeof job.secrets === 'object' && Object.keys(job.secrets).length > 0);
  if (secrets && !policy?.allowSnapshotWithSecrets) {
    const names = typeof job.secrets === 'object' ? ` (${Object.keys(job.secrets).join(', ')})` : '';
    problems.push({
      field: 'snapshot.image',
      message: `a job that receives secrets${names} may not snapshot its VM in pool ${pool}: what the script wrote with them (~/.netrc, .npmrc, keychains, git credentials) would ship in ${target}; drop the secrets or the snapshot, or have the pool's owner set security.allowSnapshotWithSecrets: true`,
    });
  }
  const globs = policy?.allowedSnapshotImages;
  if (globs && globs.length > 0) {
    if (!matchesAny(globs, snapshot))
      problems.push({
        field: 'snapshot.image',
        message: `snapshot "${target}" is not allowed in pool ${pool} (security.allowedSnapshotImages: ${globs.join(', ')}); write an allowed tag`,
      });
    return problems;
  }
  const ns = snapshotNamespace(job.client);
  if (!ns || !target.startsWith(ns)) {
    problems.push({
      field: 'snapshot.image',
      message: ns
        ? `snapshot "${target}" is outside client ${job.client}'s images in pool ${pool}: a job may write only tags under "${ns}" (e.g. ${ns}cache:pr-42) unless the pool lists others in security.allowedSnapshotImages`
        : `snapshot "${target}" needs an owner in pool ${pool}: set the job's client to a lower-case name (its snapshots go under "<client>/") or have the pool's owner list allowed tags in security.allowedSnapshotImages`,
    });
  }
  return problems;
}
