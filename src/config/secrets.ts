/** Resolves secret references at the moment of use, inside activities and edges only. */
import { readFileSync } from 'node:fs';
import type { SecretRef } from './schema';
import { resolveConfigPath } from './load';

export class SecretError extends Error {
  override name = 'SecretError';
}

export function readSecret(config: { path: string }, ref: SecretRef, what: string): string {
  if ('env' in ref) {
    const v = process.env[ref.env];
    if (v === undefined || v === '') {
      throw new SecretError(`${what}: environment variable ${ref.env} is not set on the worker`);
    }
    return v;
  }
  const file = resolveConfigPath(config, ref.file);
  try {
    // Editors end files with a newline that is not part of the secret.
    return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (e) {
    throw new SecretError(`${what}: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
}
