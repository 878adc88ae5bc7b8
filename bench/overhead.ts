/**
 * Orchestration overhead: submit -> first byte of script output, with the emulated
 * VM boot delay set to 0 so what remains is Marina (Temporal round trips, SSH,
 * tart calls, log streaming). Prints p50/p95 over N sequential jobs, and per stage.
 *   node --import tsx bench/overhead.ts [jobs=50]
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Runtime, DefaultLogger } from '@temporalio/worker';
import { startDevStack } from '../src/emulator/dev-stack';
import { createMarinaWorker } from '../src/worker';
import { followLog, startJob } from '../src/client/jobs';
import { SEED_IMAGE } from '../src/emulator/seed-image';

import { pct } from './stats';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

async function main() {
  const n = Number(process.argv[2] ?? 50);
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  const stack = await startDevStack({
    stateDir: mkdtempSync(join(tmpdir(), 'marina-bench-')),
    hosts: 2,
    headless: true,
    vmBootSeconds: 0,
  });
  const w = await createMarinaWorker(stack.config);
  const running = w.worker.run();
  try {
    // Warm the image cache on both hosts so the figures measure orchestration, not the first download.
    await Promise.all(
      [0, 1].map((i) =>
        startJob(w.client, stack.config, {
          id: `warm-${Date.now()}-${i}`,
          pool: 'local',
          image: SEED_IMAGE,
          script: 'true',
          timeoutSeconds: 60,
        }).then((h) => h.result()),
      ),
    );
    const firstByte: number[] = [];
    const total: number[] = [];
    const stages: Record<string, number[]> = {};
    for (let i = 0; i < n; i++) {
      const id = `bench-${Date.now()}-${i}`;
      const t0 = performance.now();
      const h = await startJob(
        w.client,
        stack.config,
        { id, pool: 'local', image: SEED_IMAGE, script: 'echo first-byte; sleep 0.2', timeoutSeconds: 60 },
        { checkImage: false },
      );
      let tFirst = NaN;
      const result = h.result();
      await followLog(
        stack.config,
        { jobId: id, runId: h.firstExecutionRunId },
        () => {
          if (Number.isNaN(tFirst)) tFirst = performance.now();
        },
        result,
        20,
      );
      const r = await result;
      total.push(performance.now() - t0);
      firstByte.push(tFirst - t0);
      for (const [k, v] of Object.entries(r.stages)) (stages[k] ??= []).push(v ?? 0);
    }
    const fmt = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(0)} ms  p95 ${pct(xs, 95).toFixed(0)} ms`;
    console.log(`jobs: ${n} sequential, 2 emulated hosts, emulated VM boot delay 0 s, image cached`);
    console.log(`submit -> first output byte: ${fmt(firstByte)}`);
    console.log(`submit -> result:            ${fmt(total)}`);
    for (const [k, v] of Object.entries(stages)) console.log(`  stage ${k.padEnd(8)} ${fmt(v)}`);
  } finally {
    w.worker.shutdown();
    await running.catch(() => undefined);
    await w.close();
    await stack.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
