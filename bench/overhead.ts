/**
 * Marina's own overhead on a job, on the local stack with the emulated VM boot at 0 s and images cached, so
 * what remains is Marina: Temporal round trips, SSH, hypervisor calls, log streaming, the pool's answers.
 *   npm run bench:overhead -- [jobs=50]
 * Prints p50/p95 with a stage breakdown for: submit -> first byte (cold: the job boots its VM; warm: a
 * standby VM takes it), a line printed in the VM -> shown by the follower, script exit -> `marina run`
 * returns, script exit -> the slot leased again, and jobs per minute on 2 hosts x 2 slots. Then the floors
 * it cannot beat, measured in the same run: an empty workflow, an activity, an SSH command, an S3 PUT+GET.
 * The emulated VMs are processes on this machine, so a time the script prints (`date +%s%3N`) is on the
 * bench's clock.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { Runtime, DefaultLogger } from '@temporalio/worker';
import type { Client } from '@temporalio/client';
import { startDevStack } from '../src/emulator/dev-stack';
import { createMarinaWorker } from '../src/worker';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { loadConfig, logsLocation, type LoadedConfig } from '../src/config/load';
import { s3ClientFor } from '../src/config/s3';
import { followJobLog, startJob } from '../src/client/jobs';
import { SEED_IMAGE } from '../src/emulator/seed-image';
import { poolWorkflowId, poolStateQuery, jobStatusQuery, type JobResult } from '../workflows/definitions';
import { measureFloors } from './overhead/floors';
import { eventTimes } from './overhead/history';
import { pct } from './stats';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** Lines 0.3 s apart (each reaches the follower alone), then the script's last word: when it ends. */
const SCRIPT =
  'echo first-byte; for i in 1 2 3 4 5; do sleep 0.3; echo "line $(date +%s%3N)"; done; echo "end $(date +%s%3N)"';

const fmt = (xs: number[]) =>
  xs.length ? `p50 ${pct(xs, 50).toFixed(0).padStart(5)} ms  p95 ${pct(xs, 95).toFixed(0).padStart(5)} ms` : 'n/a';

interface Sample {
  firstByte: number;
  lineLatencies: number[];
  exitToReturn: number;
  /** The end stamp -> runScript's completion in the job's history (the whole log stored before it). */
  exitToActivityDone: number;
  result: JobResult;
}

async function main() {
  const n = Number(process.argv[2] ?? 50);
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  const state = mkdtempSync(join(tmpdir(), 'marina-bench-'));
  const stack = await startDevStack({ stateDir: state, hosts: 4, headless: true, vmBootSeconds: 0, inMemory: true });
  const config = benchConfig(stack.configPath, state);
  const w = await createMarinaWorker(config);
  const running = w.worker.run();
  try {
    const client = w.client;
    // Every host holds the image before any figure is taken: these are not download times.
    await Promise.all(
      ['cold', 'cold', 'turn'].map((pool, i) =>
        job(client, config, pool, `warmup-${i}`, 'true').then((h) => h.result()),
      ),
    );
    await standbysReady(client, 'warm', 2);

    console.log(`jobs: ${n} per figure; emulated VM boot 0 s; images cached; load average ${loadavg()}`);
    const cold: Sample[] = [];
    for (let i = 0; i < n; i++) cold.push(await sample(client, config, 'cold', `cold-${i}`));
    const warm: Sample[] = [];
    for (let i = 0; i < n; i++) {
      await standbysReady(client, 'warm', 2);
      warm.push(await sample(client, config, 'warm', `warm-${i}`));
    }
    const turns: Array<Record<string, number>> = [];
    for (let i = 0; i < n; i++) turns.push(await turnaround(client, config, i));
    const throughput = await jobsPerMinute(client, config, Math.max(20, n));
    const floors = await measureFloors(stack, config);

    const report = (name: string, xs: number[], goal: number, floor?: { name: string; ms: number }) => {
      const p = name.includes('p95') ? pct(xs, 95) : pct(xs, 50);
      const ratio = floor ? `, ${(p / floor.ms).toFixed(1)}x the floor (${floor.name} ${floor.ms.toFixed(0)} ms)` : '';
      console.log(`${name.padEnd(44)} ${fmt(xs)}   goal ${goal} ms: ${p <= goal ? 'met' : 'NOT met'}${ratio}`);
    };
    const stagesOf = (ss: Sample[]) => {
      const keys = [...new Set(ss.flatMap((s) => Object.keys(s.result.stages)))];
      for (const k of keys)
        console.log(
          `    stage ${k.padEnd(10)} ${fmt(ss.map((s) => s.result.stages[k as keyof JobResult['stages']] ?? 0))}`,
        );
    };
    console.log('');
    report(
      'submit -> first byte, cold (p50)',
      cold.map((s) => s.firstByte),
      800,
      floors.workflow,
    );
    stagesOf(cold);
    const warmOnes = warm.filter((s) => s.result.standbyVm);
    report(
      'submit -> first byte, warm (p50)',
      warmOnes.map((s) => s.firstByte),
      250,
      floors.workflow,
    );
    console.log(`    ${warmOnes.length} of ${warm.length} took a standby VM`);
    stagesOf(warmOnes);
    const lines = [...cold, ...warm].flatMap((s) => s.lineLatencies);
    report('a line printed in the VM -> shown (p95)', lines, 200, floors.s3);
    report(
      'script exit -> marina run returns (p50)',
      [...cold, ...warm].map((s) => s.exitToReturn),
      300,
      floors.s3,
    );
    console.log(
      `    script end -> runScript done (history)  ${fmt([...cold, ...warm].map((s) => s.exitToActivityDone))}   (the follower returns once the whole log is stored, before this)`,
    );
    report(
      'script exit -> slot leased again (p50)',
      turns.map((t) => t.total!),
      500,
      floors.activity,
    );
    for (const k of Object.keys(turns[0] ?? {}).filter((x) => x !== 'total'))
      console.log(`    ${k.padEnd(40)} ${fmt(turns.map((t) => t[k]!))}`);
    console.log(
      `throughput, 2 hosts x 2 slots, 0.1 s script:   ${throughput.perMinute.toFixed(0)} jobs/min (${throughput.jobs} jobs in ${(throughput.ms / 1000).toFixed(1)} s)`,
    );
    console.log('');
    console.log('floors (same run, same server):');
    for (const f of Object.values(floors)) console.log(`  ${f.name.padEnd(42)} ${f.ms.toFixed(1)} ms (p50 of ${f.n})`);
  } finally {
    w.worker.shutdown();
    await running.catch(() => undefined);
    await w.close();
    await stack.stop();
  }
}

/** Three pools on four hosts: `cold` (2 hosts), `warm` (1 host, both slots standby), `turn` (1 host, 1 slot). */
function benchConfig(path: string, state: string): LoadedConfig {
  const raw = parse(readFileSync(path, 'utf8'));
  const base = raw.pools[0];
  const hosts = base.hosts as Array<{ name: string }>;
  raw.pools = [
    { ...base, name: 'cold', hosts: hosts.slice(0, 2) },
    { ...base, name: 'warm', hosts: hosts.slice(2, 3), standby: [{ image: SEED_IMAGE, count: 2 }] },
    { ...base, name: 'turn', hosts: hosts.slice(3, 4), hostResources: { ...base.hostResources, vm: 1 } },
  ];
  const file = join(state, 'bench.yaml');
  writeFileSync(file, stringify(raw));
  return loadConfig(file);
}

async function job(client: Client, config: LoadedConfig, pool: string, name: string, script: string) {
  return startJob(
    client,
    config,
    { id: `${name}-${Date.now().toString(36)}`, pool, image: SEED_IMAGE, script, timeoutSeconds: 120 },
    { checkImage: false },
  );
}

/** One job followed as `marina run` follows it: first byte, each line's delay, and the return after the script's end. */
async function sample(client: Client, config: LoadedConfig, pool: string, name: string): Promise<Sample> {
  const t0 = Date.now();
  const h = await job(client, config, pool, name, SCRIPT);
  let firstByte = NaN;
  let text = '';
  const lineLatencies: number[] = [];
  let ended = NaN;
  const result = h.result();
  const { end } = await followJobLog(
    config,
    { jobId: h.workflowId.slice('job/'.length), runId: h.firstExecutionRunId },
    (b) => {
      const now = Date.now();
      if (Number.isNaN(firstByte)) firstByte = now - t0;
      text += b.toString();
      let nl: number;
      while ((nl = text.indexOf('\n')) >= 0) {
        const line = text.slice(0, nl);
        text = text.slice(nl + 1);
        const m = /^(line|end) (\d+)$/.exec(line);
        if (m?.[1] === 'line') lineLatencies.push(now - Number(m[2]));
        if (m?.[1] === 'end') ended = Number(m[2]);
      }
    },
    result,
    { untilScriptEnd: true },
  );
  const returned = Date.now();
  if (!end) throw new Error(`${h.workflowId}: the follower saw no script end before the workflow ended`);
  const r = await result;
  const runDone = (await eventTimes(client, h.workflowId)).activityDone('runScript');
  return { firstByte, lineLatencies, exitToReturn: returned - ended, exitToActivityDone: runDone - ended, result: r };
}

/** A job holds the pool's only slot; a second waits; the figure is the first's script end -> the second's grant. */
async function turnaround(client: Client, config: LoadedConfig, i: number): Promise<Record<string, number>> {
  const a = await job(client, config, 'turn', `turn-a-${i}`, 'sleep 0.5; echo "end $(date +%s%3N)"');
  for (;;) {
    const s = await a.query(jobStatusQuery);
    if (s.state === 'running') break;
    await new Promise((r) => setTimeout(r, 20));
  }
  const b = await job(client, config, 'turn', `turn-b-${i}`, 'true');
  const ra = await a.result();
  await b.result();
  // The script's last word, from its stored log.
  const log = await readLog(config, ra);
  const end = Number(/end (\d+)/.exec(log)?.[1]);
  const ta = await eventTimes(client, a.workflowId);
  const tb = await eventTimes(client, b.workflowId);
  const granted = tb.signal('leaseGranted');
  return {
    'script end -> runScript done': ta.activityDone('runScript') - end,
    'runScript done -> destroyVm done': ta.activityDone('destroyVm') - ta.activityDone('runScript'),
    'destroyVm done -> release sent': ta.signalSent() - ta.activityDone('destroyVm'),
    'release sent -> waiting job granted': granted - ta.signalSent(),
    total: granted - end,
  };
}

async function readLog(config: LoadedConfig, r: JobResult): Promise<string> {
  const s3 = s3ClientFor(config, logsLocation(config));
  try {
    const out = await s3.send(new GetObjectCommand({ Bucket: r.log.bucket, Key: r.log.key }));
    return await out.Body!.transformToString();
  } finally {
    s3.destroy();
  }
}

/** `jobs` 0.1 s jobs submitted at once on `cold` (2 hosts x 2 slots): first submit -> last result. */
async function jobsPerMinute(client: Client, config: LoadedConfig, jobs: number) {
  const t0 = Date.now();
  const handles = await Promise.all(
    Array.from({ length: jobs }, (_, i) => job(client, config, 'cold', `tput-${i}`, 'sleep 0.1')),
  );
  await Promise.all(handles.map((h) => h.result()));
  const ms = Date.now() - t0;
  return { jobs, ms, perMinute: (jobs * 60_000) / ms };
}

async function standbysReady(client: Client, pool: string, count: number): Promise<void> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const view = await client.workflow.getHandle(poolWorkflowId(pool)).query(poolStateQuery);
    if (view.leases.filter((l) => l.jobWorkflowId.startsWith('standby/') && l.ip).length >= count) return;
    if (Date.now() > deadline) throw new Error(`pool ${pool}: ${count} standby VMs not ready within 120 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
