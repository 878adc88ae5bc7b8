/**
 * A real pool's recent jobs as a simulator trace (Aquarium's CSV): what `marina trace export` writes, so a
 * planner re-prices the fleet on its own history. Pure: the CLI reads Temporal's visibility and job results.
 */
import type { TraceJob } from './trace';

/** One closed job workflow, as visibility and its result tell it. */
export interface ClosedJob {
  /** `job/<id>`. */
  workflowId: string;
  /** Submit time: the workflow's start. */
  startedAt: Date;
  closedAt: Date;
  pool?: string;
  image?: string;
  client?: string;
  /** The script's run time from the job's result (`stages.run`), when the job got as far as running. */
  runMs?: number;
}

/**
 * The job as the simulator replays it: submitted when its workflow started, busy for its script's run time.
 * A job with no run time (cancelled or failed before it ran) is left out: it held no slot for work.
 */
export function traceJobOf(job: ClosedJob): TraceJob | undefined {
  if (job.runMs === undefined || !Number.isFinite(job.runMs) || job.runMs < 0) return undefined;
  const id = job.workflowId.replace(/^job\//, '');
  return {
    start: Math.floor(job.startedAt.getTime() / 1000),
    // The simulator counts whole seconds; a job that ran at all ran for one.
    duration: Math.max(1, Math.ceil(job.runMs / 1000)),
    jobName: id,
    stageName: job.client ?? 'job',
    ...(job.pool ? { pool: job.pool } : {}),
    ...(job.image ? { image: job.image } : {}),
  };
}

/** The trace, sorted by submit time as the format wants, and how many jobs were left out. */
export function exportTrace(jobs: readonly ClosedJob[]): { jobs: TraceJob[]; skipped: number } {
  const out: TraceJob[] = [];
  for (const j of jobs) {
    const t = traceJobOf(j);
    if (t) out.push(t);
  }
  out.sort((a, b) => a.start - b.start || a.jobName.localeCompare(b.jobName));
  return { jobs: out, skipped: jobs.length - out.length };
}
