/** The typed client CI systems and the CLI use to submit, follow and cancel jobs. */
import { clientTracingInterceptors, ensureProcessTracer } from '../telemetry/tracer';
import {
  Client,
  Connection,
  WorkflowExecutionAlreadyStartedError,
  WorkflowIdReusePolicy,
  type WorkflowHandleWithFirstExecutionRunId,
} from '@temporalio/client';
import { ListObjectsV2Command, GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { JobSpecError, jobWorkflowId, normalizeJobSpec, type FieldError, type JobSpec } from '../domain/job';
import { whyNeverFits } from '../policy/placement';
import { checkSecurity } from '../domain/security';
import {
  findPool,
  hostSpecs,
  hostTemplates,
  hypervisorOf,
  logsLocation,
  mixedHypervisors,
  type LoadedConfig,
} from '../config/load';
import { imageHypervisor } from '../images/chunked/pvm';
import { s3ClientFor } from '../config/s3';
import { logChunkKey, logChunkPrefix, logObjectKey, offsetOfChunkKey, type LogRef } from '../logs/keys';
import { LOG_EXIT_META, LOG_TIMED_OUT_META } from '../logs/end';
import { ChunkedStore } from '../images/chunked/store';
import { temporalConnectionOptions } from './connection';
import { jobHandle } from './job-result';
import type { jobWorkflow } from '../../workflows/job';
import { SA_CLIENT, SA_IMAGE, SA_JOB_STATE, SA_POOL, type JobResult } from '../../workflows/definitions';

export async function connectClient(config: LoadedConfig): Promise<Client> {
  let connection: Connection;
  try {
    connection = await Connection.connect(temporalConnectionOptions(config));
  } catch (e) {
    throw new Error(
      `cannot reach Temporal at ${config.temporal.address} (temporal.address in ${config.path}): ${(e as Error).message}; ` +
        'is the server up (`marina dev` starts one)?',
      { cause: e },
    );
  }
  ensureProcessTracer(config);
  // A job's trace starts here, at its submit (a no-op unless telemetry.traces is set).
  return new Client({ connection, namespace: config.temporal.namespace, interceptors: clientTracingInterceptors() });
}

/**
 * Checks a spec against the config before any workflow exists, so a bad job is
 * refused with every reason at once and leaves nothing behind.
 */
export async function checkJobSpec(
  config: LoadedConfig,
  input: unknown,
  opts: { checkImage?: boolean } = {},
): Promise<JobSpec> {
  let spec: JobSpec;
  try {
    spec = normalizeJobSpec(input);
  } catch (e) {
    // Report an unknown pool together with the spec's own problems, so one round fixes all.
    const pool = (input as { pool?: unknown } | null)?.pool;
    if (
      e instanceof JobSpecError &&
      typeof pool === 'string' &&
      !findPool(config, pool) &&
      !e.errors.some((x) => x.field === 'pool')
    ) {
      throw new JobSpecError([...e.errors, unknownPool(config, pool)]);
    }
    throw e;
  }
  const errors: FieldError[] = [];
  const pool = findPool(config, spec.pool);
  if (!pool) {
    errors.push({
      field: 'pool',
      message: `unknown pool "${spec.pool}"; configured pools: ${config.pools.map((p) => p.name).join(', ')}`,
    });
  } else {
    const never = whyNeverFits([...hostSpecs(pool), ...hostTemplates(pool)], {
      resources: spec.resources ?? {},
      labels: spec.labels ?? {},
    });
    if (never) errors.push({ field: never.startsWith('no host has labels') ? 'labels' : 'resources', message: never });
    const security = checkSecurity(pool.name, pool.security, {
      image: spec.image,
      volumes: spec.volumes,
      client: spec.client,
      secrets: spec.secrets,
      ...(spec.snapshot ? { snapshot: spec.snapshot.image } : {}),
    });
    for (const p of security.problems) errors.push({ field: p.field, message: p.message });
  }
  for (const [name, ref] of Object.entries(spec.secrets ?? {})) {
    if (!config.secrets[ref]) {
      errors.push({ field: `secrets.${name}`, message: `no secret named "${ref}" under secrets: in ${config.path}` });
    }
  }
  if (opts.checkImage && errors.length === 0) {
    const s3 = s3ClientFor(config, config.imageStore);
    try {
      const store = new ChunkedStore(s3, config.imageStore);
      const found = await store.resolve(spec.image);
      if (!found) {
        const known = (await store.tags()).map((t) => t.ref);
        errors.push({
          field: 'image',
          message: `unknown image "${spec.image}"; the store has: ${known.join(', ') || '(none)'}`,
        });
      } else if (pool) {
        // An image runs on the hypervisor it was made for: only that hypervisor's hosts can take the job.
        const kind = imageHypervisor(found.manifest);
        const kinds = new Set(
          pool.hosts.length ? pool.hosts.map((h) => hypervisorOf(pool, h.name)) : [pool.hypervisor],
        );
        const asked = spec.labels?.hypervisor;
        if (!kinds.has(kind))
          errors.push({
            field: 'image',
            message: `"${spec.image}" is a ${kind === 'parallels' ? 'Parallels (.pvm)' : 'Tart'} image, and pool "${pool.name}" has no ${kind} host (its hosts run ${[...kinds].join(', ')})`,
          });
        else if (asked !== undefined && asked !== kind)
          errors.push({
            field: 'labels.hypervisor',
            message: `"${spec.image}" is a ${kind} image: it cannot run on a ${asked} host; drop the label or give a ${asked} image`,
          });
        else if (mixedHypervisors(pool)) spec = { ...spec, labels: { ...spec.labels, hypervisor: kind } };
      }
    } finally {
      s3.destroy();
    }
  }
  if (errors.length) throw new JobSpecError(errors);
  return spec;
}

/** A job id names one job: a second submit is refused, saying what the first one is doing. */
export class JobIdTakenError extends Error {
  override name = 'JobIdTakenError';
}

async function jobIdTaken(client: Client, id: string): Promise<JobIdTakenError> {
  const h = client.workflow.getHandle(jobWorkflowId(id));
  const d = await h.describe().catch(() => undefined);
  const state = (d?.searchAttributes as Record<string, unknown[] | undefined> | undefined)?.MarinaJobState?.[0];
  const what = d
    ? `${d.status.name === 'RUNNING' ? 'running' : `finished (${d.status.name})`}${state ? `, state ${String(state)}` : ''}, started ${d.startTime.toISOString()}`
    : 'its state could not be read';
  return new JobIdTakenError(
    `job id "${id}" is taken: job ${id} (workflow ${jobWorkflowId(id)}) is ${what}. ` +
      `See it with \`marina job show ${id}\`${d?.status.name === 'RUNNING' ? ` (cancel: \`marina job cancel ${id}\`)` : ''}, ` +
      'or submit with another --id (a job id names one job)',
  );
}

const unknownPool = (config: LoadedConfig, pool: string): FieldError => ({
  field: 'pool',
  message: `unknown pool "${pool}"; configured pools: ${config.pools.map((p) => p.name).join(', ')}`,
});

export async function startJob(
  client: Client,
  config: LoadedConfig,
  input: unknown,
  opts: { checkImage?: boolean } = { checkImage: true },
): Promise<WorkflowHandleWithFirstExecutionRunId<typeof jobWorkflow>> {
  const spec = await checkJobSpec(config, input, opts);
  const handle = await client.workflow
    .start<typeof jobWorkflow>('jobWorkflow', {
      workflowId: jobWorkflowId(spec.id),
      taskQueue: config.temporal.taskQueue,
      args: [spec],
      // A job id names one job forever: its VM name and log derive from it.
      workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
      typedSearchAttributes: [
        { key: SA_POOL, value: spec.pool },
        { key: SA_IMAGE, value: spec.image },
        { key: SA_JOB_STATE, value: 'validating' },
        ...(spec.client ? [{ key: SA_CLIENT, value: spec.client }] : []),
      ],
      staticSummary: `${spec.image} on ${spec.pool}${spec.client ? ` for ${spec.client}` : ''}`,
      staticDetails: `**script**\n\`\`\`bash\n${spec.script.slice(0, 1500)}\n\`\`\`\ntimeout ${spec.timeoutSeconds}s · resources ${JSON.stringify(spec.resources)}`,
    })
    .catch(async (e: unknown) => {
      if (e instanceof WorkflowExecutionAlreadyStartedError) throw await jobIdTaken(client, spec.id);
      throw e;
    });
  return jobHandle(handle);
}

/** How a job's script ended, as its stored log says (before the job's cleanup is over). */
export interface ScriptEnd {
  exitCode: number;
  timedOut: boolean;
}

/** The shortest and the longest wait between two looks at a job's log. */
const LOOK_FAST_MS = 25;
/** Output within this long keeps the follower looking every LOOK_FAST_MS; after it, the waits double. */
const LIVELY_MS = 2000;
/** Every this many looks that found nothing, the chunks are listed (a re-attached run may re-send from earlier). */
const LIST_EVERY = 10;

/**
 * Streams a job's log to `write` while it runs (from the chunks the run activity uploads) and finishes
 * from the whole log object. Chunks are keyed by byte offset, so re-sent bytes after a worker restart are
 * printed once. The next chunk is looked for by its key, every 25 ms while output flows, backing off to
 * `maxWaitMs` in a quiet spell, so a line printed in the VM shows within a few tens of milliseconds.
 *
 * `job`: `{ jobId, runId }` (the run id is the start handle's `firstExecutionRunId`); a bare job id
 * follows the layout from before logs were kept per run. The final object is the one the job's
 * result names, when `done` resolves to a JobResult. With `untilScriptEnd`, it returns as soon as the
 * script's end is stored with the whole log (the job's cleanup may still run), with how it ended.
 */
export async function followJobLog(
  config: LoadedConfig,
  job: string | LogRef,
  write: (chunk: Buffer) => void,
  done: Promise<unknown>,
  opts: { maxWaitMs?: number; untilScriptEnd?: boolean } = {},
): Promise<{ printed: number; end?: ScriptEnd }> {
  const ref: LogRef = typeof job === 'string' ? { jobId: job } : job;
  const loc = logsLocation(config);
  const s3 = s3ClientFor(config, loc);
  const maxWait = Math.max(LOOK_FAST_MS, opts.maxWaitMs ?? 1000);
  let printed = 0;
  let finished = false;
  let wake: (() => void) | undefined;
  void done
    .finally(() => {
      finished = true;
      wake?.();
    })
    .catch(() => undefined);
  const print = (body: Buffer, start: number) => {
    if (start > printed || start + body.length <= printed) return;
    write(body.subarray(printed - start));
    printed = start + body.length;
  };
  const get = async (key: string, range?: string) => {
    try {
      const out = await s3.send(
        new GetObjectCommand({ Bucket: loc.bucket, Key: key, ...(range ? { Range: range } : {}) }),
      );
      return { body: Buffer.from(await out.Body!.transformToByteArray()), meta: out.Metadata ?? {} };
    } catch (e) {
      if (missing(e)) return undefined;
      throw e;
    }
  };
  /** The next chunk, by the key it must have; true if one was printed. */
  const nextChunk = async () => {
    const got = await get(logChunkKey(loc, ref, printed));
    if (!got || got.body.length === 0) return false;
    print(got.body, printed);
    return true;
  };
  const listChunks = async () => {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const out = await s3.send(
        new ListObjectsV2Command({ Bucket: loc.bucket, Prefix: logChunkPrefix(loc, ref), ContinuationToken: token }),
      );
      for (const o of out.Contents ?? []) keys.push(o.Key!);
      token = out.NextContinuationToken;
    } while (token);
    keys.sort();
    for (const key of keys) {
      const start = offsetOfChunkKey(key);
      if (start > printed) break; // a gap: an earlier chunk is still on its way
      const got = await get(key);
      if (got) print(got.body, start);
    }
  };
  /** The script's end, from the whole log's metadata (written once every chunk is stored), and the rest of it. */
  const scriptEnd = async (): Promise<ScriptEnd | undefined> => {
    const head = await s3
      .send(new HeadObjectCommand({ Bucket: loc.bucket, Key: logObjectKey(loc, ref) }))
      .catch((e: unknown) => {
        if (missing(e)) return undefined;
        throw e;
      });
    const code = head?.Metadata?.[LOG_EXIT_META];
    if (code === undefined || !/^-?\d+$/.test(code)) return undefined;
    if ((head!.ContentLength ?? 0) > printed) {
      const rest = await get(logObjectKey(loc, ref), `bytes=${printed}-`);
      if (rest) print(rest.body, printed);
    }
    return { exitCode: Number(code), timedOut: head!.Metadata?.[LOG_TIMED_OUT_META] === 'true' };
  };
  try {
    let lastOutput = Date.now();
    let wait = LOOK_FAST_MS;
    let misses = 0;
    while (!finished) {
      const got = await nextChunk().catch(() => false);
      if (got) {
        lastOutput = Date.now();
        wait = LOOK_FAST_MS;
        continue;
      }
      misses++;
      if (misses % LIST_EVERY === 0) await listChunks().catch(() => undefined);
      if (opts.untilScriptEnd) {
        const end = await scriptEnd().catch(() => undefined);
        if (end) return { printed, end };
      }
      wait = Date.now() - lastOutput < LIVELY_MS ? LOOK_FAST_MS : Math.min(wait * 2, maxWait);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, wait);
      });
    }
    // Chunks are deleted once the full log is stored: what was not printed yet is read from it.
    const result = await done.then(
      (r) => r as Partial<JobResult> | undefined,
      () => undefined,
    );
    try {
      const key = result?.log?.key ?? logObjectKey(loc, ref);
      const out = await s3.send(new GetObjectCommand({ Bucket: result?.log?.bucket ?? loc.bucket, Key: key }));
      print(Buffer.from(await out.Body!.transformToByteArray()), 0);
    } catch {
      await listChunks().catch(() => undefined);
    }
    return { printed };
  } finally {
    s3.destroy();
  }
}

/** `followJobLog` to the workflow's end; the bytes printed. */
export async function followLog(
  config: LoadedConfig,
  job: string | LogRef,
  write: (chunk: Buffer) => void,
  done: Promise<unknown>,
  maxWaitMs?: number,
): Promise<number> {
  return (await followJobLog(config, job, write, done, maxWaitMs ? { maxWaitMs } : {})).printed;
}

const missing = (e: unknown) =>
  (e as { name?: string }).name === 'NoSuchKey' ||
  (e as { name?: string }).name === 'NotFound' ||
  (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404;

export type { JobResult };
