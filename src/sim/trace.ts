/**
 * Workload traces in Aquarium Fish's CSV format: a header, then `startTime` (Unix epoch
 * seconds), `executionTime` (seconds), `jobName`, `stageName`, sorted by start. `endTime`
 * (read by nobody, as in Fish) and the extra columns `pool`, `labels`, `image` are accepted.
 */

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

/**
 * Bounds on every column, so that a typo is refused with its line instead of hanging the
 * simulator (which steps every virtual minute of the trace) or failing deep inside it.
 */
export const TRACE_LIMITS = {
  /** 2200-01-01T00:00:00Z: a start past it is a typo or milliseconds. */
  maxStartTime: 7_258_118_400,
  /** A job runs at most a year. */
  maxExecutionSeconds: 366 * 86400,
  /** First to last start: the simulator steps each minute of it. */
  maxSpanDays: 3660,
  maxTextLength: 1024,
  maxRows: 20_000_000,
} as const;

function wholeSeconds(
  source: string,
  raw: string | undefined,
  column: string,
  line: number,
  max: number,
  hint: string,
): number {
  const text = raw === undefined ? '' : raw;
  // Digits only, as most rows are: read them without a regular expression.
  let n = 0;
  let k = 0;
  for (; k < text.length && k < 16; k++) {
    const d = text.charCodeAt(k) - 48;
    if (d < 0 || d > 9) break;
    n = n * 10 + d;
  }
  if (k > 0 && k === text.length) {
    if (n > max)
      throw new TraceError(`${source}: line ${line}: ${column} ${n} is out of range (at most ${max}): ${hint}`, line);
    return n;
  }
  return wholeSecondsSlow(source, text.trim(), column, line, max, hint);
}

function wholeSecondsSlow(
  source: string,
  text: string,
  column: string,
  line: number,
  max: number,
  hint: string,
): number {
  if (!/^-?\d{1,20}$/.test(text)) {
    throw new TraceError(
      `${source}: line ${line}: ${column} must be a whole number of seconds, got ${JSON.stringify(text.length > 40 ? text.slice(0, 40) + '…' : text)}`,
      line,
    );
  }
  const n = Number(text);
  if (n < 0) throw new TraceError(`${source}: line ${line}: ${column} must be ≥ 0, got ${n}`, line);
  if (n > max)
    throw new TraceError(`${source}: line ${line}: ${column} ${n} is out of range (at most ${max}): ${hint}`, line);
  return n;
}

/** Where the next quote is, per text: found once, reused by every row before it. */
let quoteText = '';
let quoteFrom = 0;
let quoteAt = -1;
function nextQuote(text: string, from: number): number {
  if (text !== quoteText || from < quoteFrom || (quoteAt !== -1 && quoteAt < from)) {
    quoteText = text;
    quoteFrom = from;
    quoteAt = text.indexOf('"', from);
  }
  return quoteAt === -1 ? Infinity : quoteAt;
}

/** The fields of one CSV record (RFC 4180 quoting), and the index just past it. */
function record(text: string, from: number, fields: string[]): number {
  fields.length = 0;
  const end = text.indexOf('\n', from);
  const stop = end === -1 ? text.length : end;
  // Most rows have no quotes: split them without looking at each character.
  if (nextQuote(text, from) >= stop) {
    let line = text.slice(from, stop);
    if (line.endsWith('\r')) line = line.slice(0, -1);
    const parts = line.split(',');
    for (const p of parts) fields.push(p);
    return stop + 1;
  }
  let i = from;
  let field = '';
  for (;;) {
    if (text[i] === '"') {
      i++;
      for (;;) {
        const q = text.indexOf('"', i);
        if (q === -1) throw new Error('a quoted field is never closed');
        field += text.slice(i, q);
        if (text[q + 1] === '"') {
          field += '"';
          i = q + 2;
        } else {
          i = q + 1;
          break;
        }
      }
    }
    const c = text[i];
    if (c === ',') {
      fields.push(field);
      field = '';
      i++;
    } else if (c === '\n' || c === undefined || (c === '\r' && text[i + 1] === '\n')) {
      fields.push(field);
      return c === '\r' ? i + 2 : i + 1;
    } else {
      field += c;
      i++;
    }
  }
}

/** Parses a trace; every malformed row is an error naming its line and column. `source` names the file. */
export function parseTrace(text: string, source = 'trace'): TraceJob[] {
  const L = TRACE_LIMITS;
  const fields: string[] = [];
  let at = record(text, 0, fields);
  const columns = fields.map((c) => c.trim());
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
  const col = (name: string): number => columns.indexOf(name);
  const [iStart, iExec, iJob, iStage, iPool, iLabels, iImage] = [
    col('startTime'),
    col('executionTime'),
    col('jobName'),
    col('stageName'),
    col('pool'),
    col('labels'),
    col('image'),
  ];
  const jobs: TraceJob[] = [];
  let previous = -Infinity;
  let first = 0;
  let line = 1;
  while (at < text.length) {
    const from = at;
    line++;
    try {
      at = record(text, at, fields);
    } catch (e) {
      throw new TraceError(`${source}: line ${line}: ${(e as Error).message}`, line);
    }
    const rowLine = line;
    for (let k = text.indexOf('\n', from); k !== -1 && k < at - 1; k = text.indexOf('\n', k + 1)) line++; // quoted newlines
    if (fields.length === 1 && fields[0]!.trim() === '') continue; // an empty line
    if (fields.length !== columns.length) {
      throw new TraceError(
        `${source}: line ${rowLine}: Invalid Record Length: ${fields.length} field(s), the header has ${columns.length}`,
        rowLine,
      );
    }
    if (jobs.length >= L.maxRows)
      throw new TraceError(`${source}: line ${rowLine}: more than ${L.maxRows} rows; split the trace`, rowLine);
    const start = wholeSeconds(
      source,
      fields[iStart],
      'startTime',
      rowLine,
      L.maxStartTime,
      'Unix epoch seconds before 2200 (milliseconds? divide by 1000)',
    );
    const duration = wholeSeconds(
      source,
      fields[iExec],
      'executionTime',
      rowLine,
      L.maxExecutionSeconds,
      'seconds, at most 366 days (milliseconds? divide by 1000)',
    );
    if (start < previous) {
      throw new TraceError(
        `${source}: line ${rowLine}: rows must be sorted by startTime (${start} comes after ${previous}); sort the file, e.g. \`sort -t, -k1,1n\``,
        rowLine,
      );
    }
    if (jobs.length === 0) first = start;
    else if (start - first > L.maxSpanDays * 86400) {
      throw new TraceError(
        `${source}: line ${rowLine}: startTime ${start} is ${Math.round((start - first) / 86400)} days after the first row's; a trace may span at most ${L.maxSpanDays} days: split it`,
        rowLine,
      );
    }
    previous = start;
    const field = (i: number, name: string): string => {
      const v = i < 0 ? '' : fields[i]!.trim();
      if (v.length > L.maxTextLength)
        throw new TraceError(
          `${source}: line ${rowLine}: ${name} is longer than ${L.maxTextLength} characters`,
          rowLine,
        );
      return v;
    };
    const job: TraceJob = { start, duration, jobName: field(iJob, 'jobName'), stageName: field(iStage, 'stageName') };
    const pool = field(iPool, 'pool');
    const labels = field(iLabels, 'labels');
    const image = field(iImage, 'image');
    if (pool) job.pool = pool;
    if (labels) job.labels = labels;
    if (image) job.image = image;
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
