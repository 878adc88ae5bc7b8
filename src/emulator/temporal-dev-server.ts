/** The Temporal CLI dev server for the local stack: persisted to a file, with Marina's search attributes. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Connection } from '@temporalio/client';
import { temporalCli } from '../tools/binaries';
import { SEARCH_ATTRIBUTES } from '../../workflows/definitions';
import { startProcess, waitFor, type Managed } from './processes';

const run = promisify(execFile);

export interface DevServerOptions {
  port: number;
  uiPort: number;
  /** SQLite file; absent: in memory (benchmarks). */
  dbFile?: string;
  logFile: string;
  namespace?: string;
  headless?: boolean;
  /** Server dynamic config (`--dynamic-config-value key=value`): tests lower limits to reach them for real. */
  dynamicConfig?: Record<string, number | string | boolean>;
}

export async function startTemporalDevServer(o: DevServerOptions): Promise<Managed & { address: string }> {
  const ns = o.namespace ?? 'default';
  const bin = temporalCli();
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(o.port)];
  if (o.dbFile) args.push('--db-filename', o.dbFile);
  args.push('--namespace', ns, '--log-level', 'warn');
  if (o.headless) args.push('--headless');
  else args.push('--ui-port', String(o.uiPort));
  for (const [name, type] of Object.entries(SEARCH_ATTRIBUTES)) args.push('--search-attribute', `${name}=${type}`);
  for (const [k, v] of Object.entries(o.dynamicConfig ?? {}))
    args.push('--dynamic-config-value', `${k}=${JSON.stringify(v)}`);
  const proc = startProcess('temporal dev server', bin, args, o.logFile);
  const address = `127.0.0.1:${o.port}`;
  await waitFor(
    `Temporal dev server on ${address}`,
    async () => {
      const c = await Connection.connect({ address, connectTimeout: 1000 });
      try {
        await c.workflowService.describeNamespace({ namespace: ns });
        return true;
      } finally {
        await c.close();
      }
    },
    60_000,
  );
  // With an existing database file the --search-attribute flags are ignored: register them again (idempotent).
  for (const [name, type] of Object.entries(SEARCH_ATTRIBUTES)) {
    await run(bin, [
      'operator',
      'search-attribute',
      'create',
      '--address',
      address,
      '--namespace',
      ns,
      '--name',
      name,
      '--type',
      type,
    ]).catch(() => undefined);
  }
  return { ...proc, address };
}
