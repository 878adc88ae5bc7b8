/** Temporal connection options from config: TLS and Cloud API keys resolved by reference. */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from '@temporalio/client';
import { resolveConfigPath, type LoadedConfig } from '../config/load';
import { readSecret } from '../config/secrets';

export function temporalConnectionOptions(config: LoadedConfig): ConnectionOptions {
  const t = config.temporal;
  const apiKey = t.apiKey ? readSecret(config, t.apiKey, 'temporal.apiKey') : undefined;
  let tls: ConnectionOptions['tls'] = undefined;
  if (t.tls === true || (apiKey && t.tls === false)) tls = true;
  else if (typeof t.tls === 'object') {
    tls = {
      serverNameOverride: t.tls.serverName,
      serverRootCACertificate: t.tls.ca ? readFileSync(resolveConfigPath(config, t.tls.ca.file)) : undefined,
      clientCertPair:
        t.tls.cert && t.tls.key
          ? {
              crt: readFileSync(resolveConfigPath(config, t.tls.cert.file)),
              key: Buffer.from(readSecret(config, t.tls.key, 'temporal.tls.key')),
            }
          : undefined,
    };
  }
  return { address: t.address, tls, apiKey, metadata: apiKey ? { 'temporal-namespace': t.namespace } : undefined };
}
