/**
 * The webhook receiver (`marina github serve`). It verifies `X-Hub-Signature-256` over the raw body with
 * `@octokit/webhooks` before reading anything else: a missing or bad signature gets 401 and nothing starts.
 * It holds the webhook secret and a Temporal client, never the App's private key (only workers do).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Client } from '@temporalio/client';
import type { LoadedConfig } from '../config/load';
import { readSecret } from '../config/secrets';
import { eventFromPayload, handleGithubJobEvent, type IntakeOutcome } from './intake';

/** GitHub sends nothing over 25 MB. */
const MAX_BODY = 25 * 1024 * 1024;

export interface WebhookLog {
  (line: string, fields?: Record<string, unknown>): void;
}

export interface WebhookServer {
  url: string;
  server: Server;
  close(): Promise<void>;
}

function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        resolve(undefined);
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function answer(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

export async function startWebhookServer(
  client: Client,
  config: LoadedConfig,
  opts: { port?: number; host?: string; log?: WebhookLog } = {},
): Promise<WebhookServer> {
  const gh = config.github;
  if (!gh) throw new Error(`${config.path} has no github: section; see README, GitHub Actions`);
  const { Webhooks } = await import('@octokit/webhooks');
  const webhooks = new Webhooks({ secret: readSecret(config, gh.webhookSecret, 'github.webhookSecret') });
  const log: WebhookLog = opts.log ?? ((line, fields) => console.error(`marina github: ${line}`, fields ?? ''));

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== gh.listen.path) return answer(res, 404, { error: `webhooks are received on ${gh.listen.path}` });
    if (req.method !== 'POST') return answer(res, 405, { error: 'POST only' });
    const body = await readBody(req);
    if (!body) return answer(res, 413, { error: 'payload over 25 MB' });
    const delivery = String(req.headers['x-github-delivery'] ?? '');
    const signature = req.headers['x-hub-signature-256'];
    // Verified over the exact bytes received, in constant time (@octokit/webhooks-methods).
    const ok =
      typeof signature === 'string' && (await webhooks.verify(body.toString('utf8'), signature).catch(() => false));
    if (!ok) {
      log('refused a delivery: bad or missing X-Hub-Signature-256', { delivery });
      return answer(res, 401, { error: 'bad or missing X-Hub-Signature-256' });
    }
    const event = req.headers['x-github-event'];
    if (event === 'ping') return answer(res, 200, { ok: 'pong' });
    if (event !== 'workflow_job') return answer(res, 202, { ignored: `event ${String(event)}` });
    let payload: unknown;
    try {
      payload = JSON.parse(body.toString('utf8'));
    } catch {
      return answer(res, 400, { error: 'the body is not JSON' });
    }
    const ev = eventFromPayload(payload);
    if (typeof ev === 'string') return answer(res, 400, { error: ev });
    let out: IntakeOutcome;
    try {
      out = await handleGithubJobEvent(client, config, ev);
    } catch (e) {
      // A failed delivery shows on GitHub; the missed-jobs scan starts the job later.
      log('could not act on a delivery', { delivery, job: ev.jobId, error: String(e) });
      return answer(res, 500, { error: 'Marina could not act on it now; the queued-jobs scan retries' });
    }
    log(`${ev.action} job ${ev.jobId} of ${ev.repository}: ${out.outcome}`, {
      delivery,
      labels: ev.labels,
      ...('reason' in out ? { reason: out.reason } : {}),
    });
    return answer(res, 200, out);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      log('webhook handler failed', { error: String(e) });
      if (!res.headersSent) answer(res, 500, { error: 'internal error' });
    });
  });
  const port = opts.port ?? gh.listen.port;
  const host = opts.host ?? gh.listen.host;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  return {
    url: `http://${host}:${addr.port}${gh.listen.path}`,
    server,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
