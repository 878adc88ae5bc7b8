/**
 * Runs the job's script detached inside the VM, so a worker crash does not kill
 * it: output to a log file, exit status to a status file. The activity follows
 * the log from its heartbeated offset, so a retry re-attaches instead of
 * starting the script again.
 */
import { randomUUID } from 'node:crypto';
import { Context, CancelledFailure } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { shq, type SshConnection } from './ssh/connection';
import type { ActivityContext, VmRef } from './context';
import { isWorkerShutdown, workerShutdownFailure } from './shutdown';
import { logChunkKey, logChunkPrefix, logObjectKey, type LogRef } from '../src/logs/keys';
import { deleteLogChunks } from '../src/logs/chunks';
import { LOG_EXIT_META, LOG_TIMED_OUT_META } from '../src/logs/end';
import { SecretMasker } from '../src/logs/mask';
import { checkJobId, checkVmRef, invalidInput } from './inputs';
import { fetchStepScript } from './session';
import type { ScriptRef } from '../src/domain/session';

export interface RunRequest {
  id: string;
  script: string;
  env: Record<string, string>;
  /** variable name -> secret name in the worker config */
  secrets: Record<string, string>;
  timeoutSeconds: number;
  /**
   * The script by reference instead (`script` then empty): a session's stage script, which carries CI
   * tokens and so must not enter history. Read from S3 inside this activity (activities/session.ts).
   */
  scriptRef?: ScriptRef;
}

export interface RunResult {
  exitCode: number;
  timedOut: boolean;
  attached: boolean;
  bytes: number;
  log: { bucket: string; key: string };
}

interface RunProgress {
  /** Bytes of the script's own log followed so far. */
  offset: number;
  /**
   * Where those bytes end in the masked log that is uploaded (chunks are keyed by it). Absent in progress
   * recorded before masking existed, when the two were the same.
   */
  masked?: number;
  /**
   * The log is keyed by workflow run (src/logs/keys.ts). Absent in progress recorded by a worker from
   * before that layout: its attempt's retry keeps writing where the earlier chunks are.
   */
  byRun?: boolean;
}

// Exit code of the follow loop when the runner died without writing a status (the VM crashed).
const RUNNER_LOST = 3;
/**
 * Output is stored as a chunk the moment it comes when none was stored in the last CHUNK_MIN_MS, else
 * at that mark: a line after a quiet spell reaches a follower at once, a chatty build costs at most
 * five PUTs a second.
 */
const CHUNK_MIN_MS = 200;
const HEARTBEAT_MS = 500;
/** A log up to this size is kept in memory while it streams, so storing it whole needs no second read. */
const KEEP_IN_MEMORY = 64 * 1024 * 1024;

/** The job's directory in the VM, as a shell word: `$HOME` expands, the id is quoted. */
export const jobDir = (jobId: string): string => `"$HOME"/.marina/jobs/${shq(checkJobId(jobId))}`;

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The run request is checked here too: its names become shell words and paths in the VM. */
function checkRunRequest(req: RunRequest): void {
  checkJobId(req.id, 'req.id');
  for (const [field, map] of [
    ['env', req.env],
    ['secrets', req.secrets],
  ] as const)
    for (const k of Object.keys(map ?? {}))
      if (!ENV_NAME.test(k)) throw invalidInput(`${field} name`, k, 'a variable name is letters, digits and "_"');
  if (typeof req.timeoutSeconds !== 'number' || !(req.timeoutSeconds > 0) || !Number.isFinite(req.timeoutSeconds))
    throw invalidInput('timeoutSeconds', req.timeoutSeconds, 'a positive number of seconds');
}

/** The values of the job's secrets, which the log must not show (resolved here, never stored). */
function secretValues(ctx: ActivityContext, req: RunRequest): string[] {
  return Object.values(req.secrets).flatMap((ref) => {
    const secretRef = ctx.config.secrets[ref];
    return secretRef ? [ctx.secret(secretRef, `secret ${ref}`)] : [];
  });
}

export function runActivities(ctx: ActivityContext) {
  return {
    async runScript(target: VmRef & { ip: string }, req: RunRequest): Promise<RunResult> {
      checkVmRef(target);
      checkRunRequest(req);
      const actx = Context.current();
      const progress = actx.info.heartbeatDetails as RunProgress | undefined;
      const resumeFrom = progress?.offset ?? 0;
      const vm = await ctx.vmConnection(target, target.ip);
      const dir = jobDir(req.id);
      // Resumed only where the last attempt held nothing back, so a fresh masker continues it exactly.
      const masker = new SecretMasker(secretValues(ctx, req));
      const byRun = progress === undefined || progress.byRun === true;
      const runId = actx.info.workflowExecution?.runId;
      const ref: LogRef = { jobId: req.id, ...(byRun && runId ? { runId } : {}) };

      const script = req.scriptRef ? await fetchStepScript(ctx, target.jobId, req.scriptRef) : req.script;
      // Launch (unless a runner already started: then attach) and follow in one session, one round trip.
      const launch = launchScript(ctx, { ...req, script });
      let attached = false;

      const logs = ctx.logsLocation;
      const s3 = ctx.s3(logs);
      let offset = resumeFrom;
      /** Masked bytes not yet uploaded, where they start in the masked log, and the raw offset they end at. */
      let pending: Buffer[] = [];
      let pendingStart = progress?.masked ?? resumeFrom;
      let pendingEnd = pendingStart;
      let rawDecided = resumeFrom;
      let uploaded: RunProgress = { offset: resumeFrom, masked: pendingStart, byRun };
      let flushing: Promise<void> = Promise.resolve();
      let lastFlush = 0;
      let flushTimer: NodeJS.Timeout | undefined;
      const take = (masked: Buffer) => {
        if (masked.length > 0) pending.push(masked);
        pendingEnd += masked.length;
        rawDecided = offset - masker.held;
        if (pending.length === 0 || flushTimer) return;
        flushTimer = setTimeout(
          () => {
            flushTimer = undefined;
            void flush().catch(() => undefined);
          },
          Math.max(0, lastFlush + CHUNK_MIN_MS - Date.now()),
        );
      };
      const flush = () => {
        if (flushTimer) clearTimeout(flushTimer);
        flushTimer = undefined;
        if (pending.length === 0) return flushing;
        lastFlush = Date.now();
        const body = Buffer.concat(pending);
        const start = pendingStart;
        const upTo: RunProgress = { offset: rawDecided, masked: pendingEnd, byRun };
        pending = [];
        pendingStart = pendingEnd;
        flushing = flushing.then(async () => {
          // Chunks are keyed by masked byte offset: a re-attach that re-sends bytes overwrites or overlaps with
          // the same bytes, never reorders.
          await s3.send(new PutObjectCommand({ Bucket: logs.bucket, Key: logChunkKey(logs, ref, start), Body: body }));
          uploaded = upTo;
          actx.heartbeat(upTo satisfies RunProgress);
        });
        return flushing;
      };
      const timer = setInterval(() => actx.heartbeat(uploaded satisfies RunProgress), HEARTBEAT_MS);
      /** The raw log as it streams, while it is whole from byte 0 and small enough to keep. */
      let raw: Buffer[] | undefined = resumeFrom === 0 ? [] : undefined;
      let status = '';

      let cancelled = false;
      const onCancel = () => {
        cancelled = true;
      };
      actx.cancellationSignal.addEventListener('abort', onCancel, { once: true });
      let follow;
      try {
        follow = await vm.exec(`bash -s -- ${offset}`, {
          stdin: `${launch}\n${FOLLOW_SCRIPT}`,
          signal: actx.cancellationSignal,
          onStdout: (d) => {
            offset += d.length;
            if (raw && offset <= KEEP_IN_MEMORY) raw.push(d);
            else raw = undefined;
            take(masker.push(d));
          },
          // The follow loop's last word is the script's status (one round trip fewer than reading it after).
          onStderr: (d) => {
            status = (status + d.toString()).slice(-2000);
            if (!attached && status.includes('MARINA_ATTACHED')) attached = true;
          },
        });
        if (follow.code === 0) take(masker.end());
        await flush();
      } finally {
        if (flushTimer) clearTimeout(flushTimer);
        clearInterval(timer);
        actx.cancellationSignal.removeEventListener('abort', onCancel);
      }

      if (cancelled && isWorkerShutdown(actx)) {
        // Only this worker is going away (a rolling restart): the script runs on, detached in the VM,
        // and the next attempt re-attaches from the offset heartbeated above.
        throw workerShutdownFailure(
          `stopped following the script in ${target.vm} at byte ${offset}; it runs on, and the next attempt re-attaches`,
        );
      }
      if (cancelled) {
        // Stop the script itself, not just our view of it; cleanup then destroys the VM.
        await stopScript(vm, dir).catch(() => undefined);
        await uploadFullLog(ctx, vm, ref, masker).catch(() => undefined);
        throw new CancelledFailure('job cancelled: script stopped');
      }
      if (follow.code === RUNNER_LOST) {
        throw ApplicationFailure.create({
          message: `the script's runner in ${target.vm} vanished without an exit status (VM crashed or rebooted)`,
          type: 'RunnerLost',
          nonRetryable: true,
        });
      }
      if (follow.code !== 0)
        throw new Error(`following the log in ${target.vm} failed: exit ${follow.code} ${status.trim()}`);

      const end = /MARINA_STATUS (-?\d+)( TIMEOUT)?\s*$/.exec(status);
      const exitCode = end ? Number(end[1]) : -1;
      const timedOut = end?.[2] !== undefined;
      const key = await uploadFullLog(ctx, vm, ref, masker, {
        ...(raw ? { raw: Buffer.concat(raw) } : {}),
        end: { exitCode, timedOut },
      });
      return {
        exitCode,
        timedOut,
        attached,
        bytes: offset,
        log: { bucket: logs.bucket, key },
      };
    },
  };
}

/** Stores the whole log as one object, then drops the streaming chunks it supersedes. */
async function uploadFullLog(
  ctx: ActivityContext,
  vm: SshConnection,
  ref: LogRef,
  masker: SecretMasker,
  /** `raw`: the whole log as streamed, when this attempt saw all of it; `end`: how the script ended. */
  opts: { raw?: Buffer; end?: { exitCode: number; timedOut: boolean } } = {},
): Promise<string> {
  const logs = ctx.logsLocation;
  let raw = opts.raw;
  if (!raw) {
    // Collected as raw bytes: a build log is not always valid UTF-8.
    const chunks: Buffer[] = [];
    await vm.run(`cat ${jobDir(ref.jobId)}/log`, { onStdout: (d) => chunks.push(d) });
    raw = Buffer.concat(chunks);
  }
  // Masked in one pass: the same bytes as the streamed chunks, which a follower already printed.
  const body = masker.maskWhole(raw);
  const key = logObjectKey(logs, ref);
  const s3 = ctx.s3(logs);
  await s3.send(
    new PutObjectCommand({
      Bucket: logs.bucket,
      Key: key,
      Body: body,
      ContentType: 'text/plain',
      ...(opts.end
        ? {
            Metadata: {
              [LOG_EXIT_META]: String(opts.end.exitCode),
              [LOG_TIMED_OUT_META]: String(opts.end.timedOut),
            },
          }
        : {}),
    }),
  );
  // The job's outcome does not hang on tidying: chunks left behind are what the lifecycle rule is for (README).
  await deleteLogChunks(s3, logs.bucket, logChunkPrefix(logs, ref)).catch((e: unknown) =>
    Context.current().log.warn('log chunks not deleted', { key, error: String(e) }),
  );
  return key;
}

async function stopScript(vm: SshConnection, dir: string): Promise<void> {
  await vm.run(
    `p=$(cat ${dir}/pid 2>/dev/null) || exit 0; kill -TERM -- -$p 2>/dev/null; ` +
      `for i in 1 2 3 4 5 6 7 8 9 10; do [ -f ${dir}/status ] && exit 0; sleep 0.5; done; kill -KILL -- -$p 2>/dev/null; true`,
  );
}

/**
 * Writes the job's files and starts the runner unless it already started (says which on stderr). The
 * runner claims the job with an atomic mkdir, so however often this is sent, the script starts once.
 * Sets d to the job's directory for the follow loop after it.
 */
function launchScript(ctx: ActivityContext, req: RunRequest): string {
  const eof = `MARINA_EOF_${randomUUID().replace(/-/g, '')}`;
  const env = Object.entries({ ...req.env, MARINA_JOB_ID: req.id })
    .map(([k, v]) => `${k}=${shq(v)}`)
    .join('\n');
  const secrets = Object.entries(req.secrets)
    .map(([name, ref]) => {
      const secretRef = ctx.config.secrets[ref];
      if (!secretRef) {
        throw ApplicationFailure.create({
          message: `secret "${ref}" (for ${name}) is not defined under secrets: in the worker config`,
          type: 'UnknownSecret',
          nonRetryable: true,
        });
      }
      return `${name}=${shq(ctx.secret(secretRef, `secret ${ref}`))}`;
    })
    .join('\n');
  const dir = jobDir(req.id);
  return `set -eu
d=${dir}
mkdir -p "$d"
if [ -d "$d/started" ]; then echo MARINA_ATTACHED >&2; else
umask 077
cat > "$d/script.sh" <<'${eof}'
${req.script}
${eof}
cat > "$d/env.sh" <<'${eof}'
${env}
${eof}
cat > "$d/secrets.env" <<'${eof}'
${secrets}
${eof}
cat > "$d/runner.sh" <<'${eof}'
${RUNNER_SCRIPT.replace('__TIMEOUT__', String(Math.ceil(req.timeoutSeconds)))}
${eof}
nohup bash "$d/runner.sh" "$d" >/dev/null 2>&1 </dev/null &
echo MARINA_STARTED >&2
fi
set +eu
`;
}

// Runs inside the VM, detached from any SSH session.
const RUNNER_SCRIPT = `d="$1"
mkdir "$d/started" 2>/dev/null || exit 0
echo $$ > "$d/runner.pid"
set -m  # each background job gets its own process group, so a timeout or cancel kills the whole tree
(
  set -a; . "$d/env.sh"; . "$d/secrets.env"; set +a
  rm -f "$d/secrets.env"
  cd "$HOME"
  exec bash "$d/script.sh"
) > "$d/log" 2>&1 < /dev/null &
child=$!
echo $child > "$d/pid"
( sleep __TIMEOUT__; if kill -0 $child 2>/dev/null; then touch "$d/timed_out"; kill -TERM -- -$child; sleep 10; kill -KILL -- -$child; fi ) >/dev/null 2>&1 &
watchdog=$!
wait $child; code=$?
kill -- -$watchdog 2>/dev/null
echo $code > "$d/status.tmp"; mv "$d/status.tmp" "$d/status"`;

// Streams the log from an offset until the status file appears, then says the status on stderr. It looks
// every 0.01 s for the first 0.2 s after output (or the start), every 0.05 s for 10 s, then every 0.2 s.
// It follows the launch in the same script, which set d; the offset is its argument.
const FOLLOW_SCRIPT = `off="$1"; quiet=0; rp=
[ -d "$d" ] || { echo "job directory $d is missing" >&2; exit ${RUNNER_LOST}; }
while :; do
  done=0; [ -f "$d/status" ] && done=1
  size=$(wc -c < "$d/log" 2>/dev/null || echo 0); size=$((size + 0))
  if [ "$size" -gt "$off" ]; then tail -c +$((off + 1)) "$d/log" | head -c $((size - off)); off=$size; quiet=0; else quiet=$((quiet + 1)); fi
  if [ $done = 1 ]; then echo "MARINA_STATUS $(cat "$d/status")$([ -f "$d/timed_out" ] && echo ' TIMEOUT')" >&2; exit 0; fi
  [ -z "$rp" ] && [ -f "$d/runner.pid" ] && rp=$(cat "$d/runner.pid")
  if [ -d "$d/started" ] && [ -n "$rp" ] && ! kill -0 "$rp" 2>/dev/null && [ ! -f "$d/status" ]; then exit ${RUNNER_LOST}; fi
  if [ $quiet -lt 20 ]; then sleep 0.01; elif [ $quiet -lt 200 ]; then sleep 0.05; else sleep 0.2; fi
done`;
