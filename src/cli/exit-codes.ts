/**
 * `marina image` exit codes, one per failure class, so a script can tell a typo from a damaged
 * image from a network outage (README: "Exit codes"). 2 stays usage, as for every marina command.
 */
import { ConfigError } from '../config/load';
import { ImageRefError } from '../domain/image-ref';
import { HelperError } from '../images/chunked/helper';
import { ManifestIntegrityError } from '../images/chunked/store';
import { UsageError } from './args';

export const EXIT = {
  /** Anything not classified below. */
  failed: 1,
  /** A bad flag, a bad image name, a bad config: fix the command. */
  usage: 2,
  /** Data that does not match its hash (a pack, a cached disk, a manifest): retrying the same source fails again. */
  integrity: 3,
  /** No such tag or version in the store. */
  notFound: 4,
  /** S3 or the network failed (after retries), or the local disk did: retrying may work. */
  transport: 5,
} as const;

/** An error that already knows its exit code. */
export class ExitError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'ExitError';
  }
}

export const notFound = (message: string) => new ExitError(message, EXIT.notFound);

/** The exit code of an error out of an image command. */
export function imageExitCode(e: unknown): number {
  if (e instanceof ExitError) return e.exitCode;
  if (e instanceof UsageError || e instanceof ImageRefError || e instanceof ConfigError) return EXIT.usage;
  if (e instanceof ManifestIntegrityError) return EXIT.integrity;
  if (e instanceof HelperError) return e.corrupt ? EXIT.integrity : e.code === 2 ? EXIT.failed : EXIT.transport;
  // The AWS SDK's service and network errors.
  const err = e as { $metadata?: unknown; code?: string; name?: string };
  if (err?.$metadata !== undefined || /^(E[A-Z]+|TimeoutError)$/.test(err?.code ?? err?.name ?? ''))
    return EXIT.transport;
  return EXIT.failed;
}
