/** The one place an S3 client is built from a configured location; credentials are resolved by reference here. */
import { S3Client } from '@aws-sdk/client-s3';
import type { S3Location } from './schema';
import { readSecret } from './secrets';

export function s3ClientFor(config: { path: string }, loc: S3Location): S3Client {
  const c = loc.credentials;
  return new S3Client({
    region: loc.region,
    endpoint: loc.endpoint,
    forcePathStyle: loc.forcePathStyle,
    credentials: c
      ? {
          accessKeyId: readSecret(config, c.accessKeyId, 'S3 access key id'),
          secretAccessKey: readSecret(config, c.secretAccessKey, 'S3 secret access key'),
          sessionToken: c.sessionToken ? readSecret(config, c.sessionToken, 'S3 session token') : undefined,
        }
      : undefined,
  });
}
