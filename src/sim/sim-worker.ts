/** A simulator worker thread (parallel.ts): holds one trace and simulates the policies it is sent. */
import { parentPort } from 'node:worker_threads';
import { simConfig } from './compare';
import { simulate } from './engine';
import { policyByName } from './policies';
import type { WorkerMessage, WorkerReply } from './parallel';
import type { TraceJob } from './trace';

let trace: TraceJob[] = [];
parentPort!.on('message', (m: WorkerMessage) => {
  if (m.kind === 'trace') {
    trace = Array.from(m.starts, (start, i) => ({ start, duration: m.durations[i]!, jobName: '', stageName: '' }));
    return;
  }
  let reply: WorkerReply;
  try {
    reply = { task: m.task, result: simulate(trace, policyByName(m.policy, m.opts.marina), simConfig(m.opts)) };
  } catch (e) {
    reply = { task: m.task, error: (e as Error).message };
  }
  parentPort!.postMessage(reply);
});
