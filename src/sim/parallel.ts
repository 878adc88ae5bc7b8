/**
 * Runs a comparison's policies in worker threads (node:worker_threads), one policy per task,
 * the slowest first, on as many threads as the machine has cores. The trace goes to each
 * worker once, as two typed arrays (the simulator reads only start and duration).
 *
 * A worker starts as a few lines of JavaScript that register tsx's CommonJS hook and then require the
 * TypeScript worker module: Node's own loader in a worker thread does not take a .ts entry, whatever
 * loader flags its parent was started with (bin/marina and `npm run bench:simulate` both use tsx).
 */
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { assemble, type CompareOptions, type Comparison } from './compare';
import type { PolicyName } from './policies';
import type { TraceJob } from './trace';
import type { SimResult } from './types';

/** What the worker is sent: the trace once, then one task per policy. */
export type WorkerMessage =
  | { kind: 'trace'; starts: Float64Array; durations: Float64Array }
  | { kind: 'run'; task: number; policy: PolicyName; opts: CompareOptions };
export type WorkerReply = { task: number; result?: SimResult; error?: string };

// Rough relative cost per job (measured on a year of jobs): the slowest go first so the threads end together.
const COST: Record<PolicyName, number> = {
  aquarium: 5,
  marina: 4,
  'marina-noscrub': 4,
  'aquarium-2slot': 1,
  naive: 1,
};

function startWorker(): Worker {
  const hook = require.resolve('tsx/cjs/api');
  const entry = join(__dirname, 'sim-worker.ts');
  return new Worker(`require(${JSON.stringify(hook)}).register(); require(${JSON.stringify(entry)});`, {
    eval: true,
    execArgv: [],
  });
}

export async function compareParallel(
  trace: readonly TraceJob[],
  opts: CompareOptions,
  threads = Math.min(availableParallelism(), opts.policies.length),
): Promise<Comparison> {
  const results = await runPolicies(trace, opts, threads);
  return assemble(trace, opts, results);
}

/** The policies' results, in the order of `opts.policies`. */
export async function runPolicies(
  trace: readonly TraceJob[],
  opts: CompareOptions,
  threads: number,
): Promise<SimResult[]> {
  const starts = new Float64Array(trace.length);
  const durations = new Float64Array(trace.length);
  trace.forEach((j, i) => {
    starts[i] = j.start;
    durations[i] = j.duration;
  });
  const order = opts.policies.map((p, i) => ({ p, i })).sort((a, b) => COST[b.p] - COST[a.p]);
  const results: SimResult[] = new Array(opts.policies.length);
  let next = 0;
  const workers = Array.from({ length: Math.max(1, Math.min(threads, order.length)) }, () => {
    const w = startWorker();
    w.postMessage({ kind: 'trace', starts, durations } satisfies WorkerMessage);
    return w;
  });
  try {
    await Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((resolve, reject) => {
            const give = (): void => {
              const t = order[next++];
              if (!t) return resolve();
              w.postMessage({ kind: 'run', task: t.i, policy: t.p, opts } satisfies WorkerMessage);
            };
            w.on('message', (m: WorkerReply) => {
              if (m.error !== undefined) return reject(new Error(m.error));
              results[m.task] = m.result!;
              give();
            });
            w.on('error', reject);
            w.on('exit', (code) => {
              if (code !== 0) reject(new Error(`a simulator worker exited with code ${code}`));
            });
            give();
          }),
      ),
    );
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
  return results;
}
