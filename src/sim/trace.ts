/**
 * Workload traces in Aquarium Fish's CSV format: a header, then `startTime` (Unix epoch
 * seconds), `executionTime` (seconds), `jobName`, `stageName`, sorted by start. `endTime`
 * (read by nobody, as in Fish) and the extra columns `pool`, `labels`, `image` are accepted.
 */
import { parse } from 'csv-parse/sync';

export interface TraceJob {
  /** Submit time, Unix epoch seconds. */
  start: number;
  /** Seconds of work once the job runs. */
  duration: number;
  jobName: string;
  stageName: string;
  pool?: string;
  labels?: string;
  image?: string;
}

export class TraceError extends Error {
  constructor(
    message: string,
    readonly line?: number,
  ) {
    super(message);
    this.name = 'TraceError';
  }
}

const REQUIRED = ['startTime', 'executionTime', 'jobName', 'stageName'] as const;
const OPTIONAL = ['endTime', 'pool', 'labels', 'image'] as const;

function wholeSeconds(source: string, raw: string | undefined, column: string, line: number, min: number): number {
  const text = (raw ?? '').trim();
  if (!/^-?\d+$/.test(text)) {
    throw new TraceError(
      `${source}: line ${line}: ${column} must be a whole number of seconds, got ${JSON.stringify(text)}`,
      line,
    );
  }
  const n = Number(text);
  if (n < min) throw new TraceError(`${source}: line ${line}: ${column} must be ≥ ${min}, got ${n}`, line);
  return n;
}

/** Parses a trace; every malformed row is an error naming its line and column. `source` names the file. */
export function parseTrace(text: string, source = 'trace'): TraceJob[] {
  let rows: { record: Record<string, string>; info: { lines: number } }[];
  try {
    rows = parse(text, { columns: true, skip_empty_lines: true, trim: true, info: true }) as typeof rows;
  } catch (e) {
    const err = e as Error & { lines?: number };
    throw new TraceError(`${source}: ${err.message}`, err.lines);
  }
  const header = text.slice(0, text.indexOf('\n') === -1 ? text.length : text.indexOf('\n'));
  const columns = header.split(',').map((c) => c.trim());
  const missing = REQUIRED.filter((c) => !columns.includes(c));
  if (missing.length > 0) {
    throw new TraceError(
      `${source}: line 1: the header lacks ${missing.join(', ')} (expected startTime,executionTime,jobName,stageName[,pool,labels,image])`,
      1,
    );
  }
  const unknown = columns.filter(
    (c) => !(REQUIRED as readonly string[]).includes(c) && !(OPTIONAL as readonly string[]).includes(c),
  );
  if (unknown.length > 0) {
    throw new TraceError(`${source}: line 1: unknown column(s) ${unknown.join(', ')}`, 1);
  }
  const jobs: TraceJob[] = [];
  let previous = -Infinity;
  for (const { record, info } of rows) {
    const line = info.lines;
    const start = wholeSeconds(source, record.startTime, 'startTime', line, 0);
    const duration = wholeSeconds(source, record.executionTime, 'executionTime', line, 0);
    if (start < previous) {
      throw new TraceError(
        `${source}: line ${line}: rows must be sorted by startTime (${start} comes after ${previous}); sort the file, e.g. \`sort -t, -k1,1n\``,
        line,
      );
    }
    previous = start;
    const job: TraceJob = { start, duration, jobName: record.jobName ?? '', stageName: record.stageName ?? '' };
    if (record.pool) job.pool = record.pool;
    if (record.labels) job.labels = record.labels;
    if (record.image) job.image = record.image;
    jobs.push(job);
  }
  if (jobs.length === 0) throw new TraceError(`${source}: no jobs (a header and at least one row are needed)`);
  return jobs;
}

function csvField(v: string): string {
  return /[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}

export function formatTrace(jobs: readonly TraceJob[]): string {
  const extra = (['pool', 'labels', 'image'] as const).filter((c) => jobs.some((j) => j[c] !== undefined));
  const lines = [['startTime', 'executionTime', 'jobName', 'stageName', ...extra].join(',')];
  for (const j of jobs) {
    lines.push(
      [
        String(j.start),
        String(j.duration),
        csvField(j.jobName),
        csvField(j.stageName),
        ...extra.map((c) => csvField(j[c] ?? '')),
      ].join(','),
    );
  }
  return lines.join('\n') + '\n';
}
