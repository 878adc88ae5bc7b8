/** A Temporal client for one CLI command: connected from the config, closed (and its traces sent) afterwards. */
import type { Client } from '@temporalio/client';
import type { LoadedConfig } from '../config/load';
import { connectClient } from './jobs';
import { flushTraces } from '../telemetry/tracer';

export async function withClient<T>(
  config: () => LoadedConfig,
  fn: (client: Client, cfg: LoadedConfig) => Promise<T>,
): Promise<T> {
  const cfg = config();
  const client = await connectClient(cfg);
  try {
    return await fn(client, cfg);
  } finally {
    await client.connection.close();
    await flushTraces();
  }
}
