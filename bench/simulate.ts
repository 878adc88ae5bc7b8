/**
 * Simulator benchmark and goals. Prints:
 * 1. speed: a generated year of ~560,000 jobs (preset `large` at 196 jobs/h at the peak, seed 7),
 *    written as CSV and read back, then the five policies in worker threads with a 500-host cap:
 *    per policy its simulated seconds and jobs/s, and the whole comparison's wall time (goal ≤ 10 s);
 * 2. goals on each reference trace in traces/, each policy run under each billing reading: Marina's
 *    billed host-hours ÷ Aquarium's (goal ≤ 0.5 at equal or better p95), ÷ the 2-slot variant's
 *    (goal < 1.0), ÷ naive, ÷ the lower bound (goal ≤ 1.5 under the default reading); p95 waits with
 *    and without the VM boot; parks per year.
 * The machine is shared: the load average is printed with the times.
 * Run: npm run bench:simulate
 */
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { BILLING_MODES } from '../src/ec2mac/model';
import { defaultCompareOptions } from '../src/sim/compare';
import { generateTrace, shapeFor } from '../src/sim/generate';
import { compareParallel, runPolicies } from '../src/sim/parallel';
import { POLICY_NAMES } from '../src/sim/policies';
import { formatTrace, parseTrace } from '../src/sim/trace';

const fmt = (n: number, d = 0): string =>
  n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
const min = (s: number): string => (s / 60).toFixed(1);

async function speed(): Promise<void> {
  const o = { ...defaultCompareOptions(), maxHosts: 500 };
  const file = join(mkdtempSync(join(tmpdir(), 'marina-bench-sim-')), 'year.csv');
  writeFileSync(file, formatTrace(generateTrace({ ...shapeFor('large', 365, 7), peakJobsPerHour: 196 })));
  const t0 = performance.now();
  const year = parseTrace(readFileSync(file, 'utf8'), file);
  const t1 = performance.now();
  const rows = await runPolicies(year, o, availableParallelism());
  const t2 = performance.now();
  console.log(`one year, ${fmt(year.length)} jobs: CSV read in ${((t1 - t0) / 1000).toFixed(2)} s`);
  console.log('policy           sim s    jobs/s      host-h  peak hosts  p95 wait min  parks/yr');
  for (const r of rows) {
    console.log(
      `${r.policy.padEnd(15)} ${(r.wallMs / 1000).toFixed(2).padStart(6)} ${fmt(year.length / (r.wallMs / 1000)).padStart(9)} ${fmt(r.hostHours).padStart(11)} ${String(r.peakHosts).padStart(11)} ${min(r.wait.p95).padStart(13)} ${fmt(r.parksPerYear).padStart(9)}`,
    );
  }
  console.log(
    `all ${POLICY_NAMES.length} policies on ${availableParallelism()} worker threads: ${((t2 - t1) / 1000).toFixed(2)} s ` +
      `(with the CSV read: ${((t2 - t0) / 1000).toFixed(2)} s); load average ${loadavg()[0]!.toFixed(1)}\n`,
  );
}

async function goals(): Promise<void> {
  console.log(
    'goals on the reference traces: marina ÷ other (billed host-hours); p95 wait min, with the VM boot / for a slot',
  );
  console.log(
    'trace       billing              ×aquarium ×aq-2slot ×naive ×bound  marina p95   aq p95  aq-2slot p95  marina parks/yr',
  );
  for (const f of readdirSync('traces')
    .filter((x) => x.endsWith('.csv.gz'))
    .sort()) {
    const trace = parseTrace(gunzipSync(readFileSync(`traces/${f}`)).toString('utf8'), f);
    for (const billing of BILLING_MODES) {
      const c = await compareParallel(trace, {
        ...defaultCompareOptions(),
        billing,
        policies: ['marina', 'aquarium', 'aquarium-2slot', 'naive'],
      });
      const [m, aq, aq2, naive] = c.rows;
      const p95 = (r: typeof m): string => `${min(r!.wait.p95)}/${min(r!.waitForSlot.p95)}`;
      console.log(
        `${f.replace('.csv.gz', '').padEnd(11)} ${billing.padEnd(20)} ${(m!.hostHours / aq!.hostHours).toFixed(2).padStart(9)} ${(m!.hostHours / aq2!.hostHours).toFixed(2).padStart(9)} ${(m!.hostHours / naive!.hostHours).toFixed(2).padStart(6)} ${m!.vsLowerBound.toFixed(2).padStart(6)} ${p95(m).padStart(11)} ${p95(aq).padStart(8)} ${p95(aq2).padStart(13)} ${fmt(m!.parksPerYear).padStart(16)}`,
      );
    }
  }
}

void (async () => {
  await speed();
  await goals();
})();
