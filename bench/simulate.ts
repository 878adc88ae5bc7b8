/**
 * Simulator benchmark and goals. Prints:
 * 1. speed: one generated year (preset `large`, ≥ 300,000 jobs) with a 500-host cap, per
 *    policy: wall time and jobs/s (goal: ≤ 10 s);
 * 2. goals on each reference trace in traces/: Marina's billed host-hours against
 *    Aquarium (as Fish runs it, goal ≤ 0.5× at equal or better p95 wait), the 2-slot
 *    Aquarium variant, the naive policy and the lower bound (goal ≤ 1.25×), under each
 *    billing reading.
 * Run: npm run bench:simulate
 */
import { readdirSync, readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { BILLING_MODES } from '../src/ec2mac/model';
import { compare, defaultCompareOptions } from '../src/sim/compare';
import { simulate } from '../src/sim/engine';
import { generateTrace, shapeFor } from '../src/sim/generate';
import { POLICY_NAMES, policyByName } from '../src/sim/policies';
import { parseTrace } from '../src/sim/trace';

const o = defaultCompareOptions();
const g0 = performance.now();
const year = generateTrace(shapeFor('large', 365, 7));
console.log(
  `one year, preset large, seed 7: ${year.length.toLocaleString('en-US')} jobs, generated in ${((performance.now() - g0) / 1000).toFixed(2)} s`,
);
console.log('policy           sim s   jobs/s      host-h   peak hosts  p95 wait min');
let total = 0;
for (const name of POLICY_NAMES) {
  const r = simulate(year, policyByName(name), {
    timings: o.timings,
    billing: o.billing,
    maxHosts: 500,
    zones: o.zones,
    hourlyPriceUsd: o.hourlyPriceUsd,
    seed: 1,
  });
  total += r.wallMs;
  console.log(
    `${name.padEnd(15)} ${(r.wallMs / 1000).toFixed(2).padStart(6)} ${Math.round(year.length / (r.wallMs / 1000))
      .toLocaleString('en-US')
      .padStart(
        8,
      )} ${Math.round(r.hostHours).toLocaleString('en-US').padStart(11)} ${String(r.peakHosts).padStart(12)} ${(r.wait.p95 / 60).toFixed(1).padStart(13)}`,
  );
}
console.log(`all ${POLICY_NAMES.length} policies: ${(total / 1000).toFixed(2)} s\n`);

console.log('goals on the reference traces (marina ÷ other, billed host-hours; p95 wait in minutes)');
console.log(
  'trace              billing              ×aquarium ×aq-2slot ×naive ×bound ×yardstick  p95 marina/aquarium',
);
for (const f of readdirSync('traces')
  .filter((x) => x.endsWith('.csv.gz'))
  .sort()) {
  const trace = parseTrace(gunzipSync(readFileSync(`traces/${f}`)).toString('utf8'), f);
  for (const billing of BILLING_MODES) {
    const c = compare(trace, { ...o, billing, policies: ['marina', 'aquarium', 'aquarium-2slot', 'naive'] });
    const [m, aq, aq2, naive] = c.rows;
    console.log(
      `${f.replace('.csv.gz', '').padEnd(18)} ${billing.padEnd(20)} ${(m!.hostHours / aq!.hostHours).toFixed(2).padStart(9)} ${(
        m!.hostHours / aq2!.hostHours
      )
        .toFixed(2)
        .padStart(
          9,
        )} ${(m!.hostHours / naive!.hostHours).toFixed(2).padStart(6)} ${m!.vsLowerBound.toFixed(2).padStart(6)} ${(
        m!.hostHours / c.parkingYardstick.hostHours
      )
        .toFixed(2)
        .padStart(10)}  ${(m!.wait.p95 / 60).toFixed(1)}/${(aq!.wait.p95 / 60).toFixed(1)}`,
    );
  }
}
