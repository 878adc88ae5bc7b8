/** A real S3-compatible server on loopback for the local stack: moto's server (PyPI `moto[server]`). */
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { motoServer } from '../tools/binaries';
import { portOpen, startProcess, waitFor, type Managed } from './processes';

export const DEV_S3_CREDENTIALS = { accessKeyId: 'marina-dev', secretAccessKey: 'marina-dev-secret' };

export async function startS3Server(port: number, logFile: string): Promise<Managed & { endpoint: string }> {
  const proc = startProcess('moto_server', motoServer(), ['-H', '127.0.0.1', '-p', String(port)], logFile);
  await waitFor(`S3 server on ${port}`, () => portOpen(port), 60_000);
  return { ...proc, endpoint: `http://127.0.0.1:${port}` };
}

export async function ensureBucket(endpoint: string, bucket: string): Promise<void> {
  const s3 = new S3Client({ region: 'us-east-1', endpoint, forcePathStyle: true, credentials: DEV_S3_CREDENTIALS });
  try {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  } catch (e) {
    const name = (e as { name?: string }).name;
    if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw e;
  } finally {
    s3.destroy();
  }
}
