/** `marina trace export`: a pool's recent jobs, from Temporal's visibility, as a simulator trace. */
import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { LoadedConfig } from '../config/load';
import { connectClient } from '../client/jobs';
import { unwrapJobResult } from '../client/job-result';
import { exportTrace, type ClosedJob } from '../sim/export';
import { formatTrace } from '../sim/trace';
import { SA_CLIENT, SA_IMAGE, SA_POOL, type JobResult } from '../../workflows/definitions';
import { parseDuration, UsageError } from './args';

/** Results are read a few at a time: enough to be quick, few enough to spare the server. */
const CONCURRENCY = 8;

export function registerTraceExportCommand(program: Command, config: () => LoadedConfig): void {
  const trace = program.commands.find((c) => c.name() === 'trace') ?? program.command('trace');
  trace
    .command('export')
    .description("write a pool's closed jobs (submit time, run time, pool, image) as a trace for marina simulate")
    .requiredOption('--since <duration>', 'how far back, e.g. 30d or 12h')
    .option('--pool <name>', 'one pool only')
    .option('--out <file>', 'write here (default: stdout)')
    .action(async (o: { since: string; pool?: string; out?: string }) => {
      const sinceMs = parseDuration('--since', o.since) * 1000;
      if (o.pool !== undefined && !/^[a-z0-9][a-z0-9._-]{0,62}$/.test(o.pool))
        throw new UsageError(`--pool: "${o.pool}" is not a pool name (lower-case letters, digits, ".", "_", "-")`);
      const cfg = config();
      const client = await connectClient(cfg);
      try {
        const since = new Date(Date.now() - sinceMs).toISOString();
        const query =
          `WorkflowType="jobWorkflow" AND ExecutionStatus!="Running" AND StartTime>="${since}"` +
          (o.pool ? ` AND MarinaPool="${o.pool}"` : '');
        const found: Array<Omit<ClosedJob, 'runMs'> & { runId: string }> = [];
        for await (const w of client.workflow.list({ query })) {
          if (!w.closeTime) continue;
          found.push({
            workflowId: w.workflowId,
            runId: w.runId,
            startedAt: w.startTime,
            closedAt: w.closeTime,
            pool: w.typedSearchAttributes.get(SA_POOL),
            image: w.typedSearchAttributes.get(SA_IMAGE),
            client: w.typedSearchAttributes.get(SA_CLIENT),
          });
        }
        const jobs: ClosedJob[] = [];
        for (let i = 0; i < found.length; i += CONCURRENCY) {
          const batch = found.slice(i, i + CONCURRENCY);
          const runs = await Promise.all(
            batch.map((j) =>
              unwrapJobResult(client.workflow.getHandle(j.workflowId, j.runId).result() as Promise<JobResult>)
                .then((r) => r.stages.run)
                .catch(() => undefined),
            ),
          );
          batch.forEach(({ runId: _r, ...j }, k) => jobs.push({ ...j, runMs: runs[k] }));
        }
        const { jobs: rows, skipped } = exportTrace(jobs);
        const csv = formatTrace(rows);
        if (o.out) writeFileSync(o.out, csv);
        else process.stdout.write(csv);
        console.error(
          `trace export: ${rows.length} job(s) since ${since}${o.pool ? ` in pool ${o.pool}` : ''}` +
            (skipped ? `; ${skipped} left out (cancelled or failed before their script ran)` : '') +
            (o.out ? `; written to ${o.out}` : ''),
        );
      } finally {
        await client.connection.close();
      }
    });
}
