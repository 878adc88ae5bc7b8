import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { homedir } from 'node:os';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { configSchema, type Hypervisor, type MarinaConfig, type PoolConfig, type S3Location } from './schema';
import type { HostSpec } from '../domain/pool';

export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly problems: string[],
  ) {
    super(`invalid config ${file}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

export interface LoadedConfig extends MarinaConfig {
  /** Absolute path of the file, so relative `file:` references resolve against its folder. */
  path: string;
}

export const DEFAULT_CONFIG_PATH = 'marina.yaml';

export function loadConfig(path = process.env.MARINA_CONFIG ?? DEFAULT_CONFIG_PATH): LoadedConfig {
  const abs = resolve(path);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (e) {
    throw new ConfigError(abs, [
      `cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)}); pass --config or set MARINA_CONFIG; ` +
        '`marina dev` writes a working one to .marina/dev/marina.yaml',
    ]);
  }
  return parseConfig(text, abs);
}

export function parseConfig(text: string, path: string): LoadedConfig {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) {
    throw new ConfigError(
      path,
      doc.errors.map((e) => `YAML syntax at line ${e.linePos?.[0]?.line ?? '?'}: ${e.message.split('\n')[0]}`),
    );
  }
  const result = configSchema.safeParse(doc.toJS() ?? {});
  if (!result.success) throw new ConfigError(path, formatIssues(result.error));
  return { ...result.data, path };
}

function formatIssues(error: z.ZodError): string[] {
  return error.issues.map((issue) => {
    const field = issue.path.length ? issue.path.map(String).join('.') : '(top level)';
    if (issue.code === 'unrecognized_keys') {
      return `${field}: unknown field(s) ${issue.keys.map((k) => `"${k}"`).join(', ')}; remove them or check the spelling against README`;
    }
    return `${field}: ${issue.message}`;
  });
}

/** Resolves a path from the config file: `~` is the home folder, relative is from the file's folder. */
export function resolveConfigPath(config: { path: string }, p: string): string {
  if (p.startsWith('~/')) return resolve(homedir(), p.slice(2));
  return isAbsolute(p) ? p : resolve(dirname(config.path), p);
}

export function findPool(config: MarinaConfig, name: string): PoolConfig | undefined {
  return config.pools.find((p) => p.name === name);
}

/** A host's hypervisor: its own, else its pool's. A host Marina allocated (EC2) runs the pool's. */
export function hypervisorOf(pool: PoolConfig, host: string): Hypervisor {
  return pool.hosts.find((h) => h.name === host)?.hypervisor ?? pool.hypervisor;
}

/** Whether a pool's hosts run more than one hypervisor: then each host carries a `hypervisor` label. */
export function mixedHypervisors(pool: PoolConfig): boolean {
  return new Set(pool.hosts.map((h) => h.hypervisor ?? pool.hypervisor)).size > 1;
}

/** The non-secret view of a pool's hosts that the pool workflow holds. */
export function hostSpecs(pool: PoolConfig): HostSpec[] {
  const mixed = mixedHypervisors(pool);
  return pool.hosts.map((h) => ({
    name: h.name,
    resources: { ...(h.resources ?? pool.hostResources) },
    // In a mixed pool a job's image runs on one hypervisor only: the label lets it ask for that one.
    labels: { ...(mixed ? { hypervisor: h.hypervisor ?? pool.hypervisor } : {}), ...(h.labels ?? {}) },
    ...((h.resourceModifiers ?? pool.resourceModifiers).length > 0
      ? { modifiers: h.resourceModifiers ?? pool.resourceModifiers }
      : {}),
  }));
}

/** What a host an AWS pool allocates will offer: jobs are checked against it before any host exists. */
export function hostTemplates(pool: PoolConfig): HostSpec[] {
  if (!pool.aws) return [];
  return [
    { name: `new ${pool.aws.instanceType} host`, resources: { ...pool.hostResources }, labels: { ...pool.aws.labels } },
  ];
}

export function logsLocation(config: MarinaConfig): S3Location {
  const logs: Partial<S3Location> = config.logs ?? {};
  return {
    ...config.imageStore,
    ...logs,
    bucket: logs.bucket ?? config.imageStore.bucket,
    prefix: logs.prefix ?? 'logs/',
  };
}
