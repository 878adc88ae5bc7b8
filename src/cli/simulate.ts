/** `marina simulate` and `marina trace generate`: price policies on a year of demand before spending a dollar. */
import { readFileSync, writeFileSync } from 'node:fs';
import { gunzipSync, gzipSync } from 'node:zlib';
import type { Command } from 'commander';
import { BILLING_MODES, DEFAULT_TIMINGS, HOURLY_PRICE_USD, type BillingMode, type MacTimings } from '../ec2mac/model';
import { compare, defaultCompareOptions, simConfig, type CompareOptions } from '../sim/compare';
import { SWEEP_PARAMS, formatSweep, parseSweep, sweep } from '../sim/sweep';
import { compareParallel } from '../sim/parallel';
import { generateTrace, PRESETS, shapeFor } from '../sim/generate';
import { POLICY_NAMES, type PolicyName } from '../sim/policies';
import { fullReport, toJson } from '../sim/report';
import { formatTrace, parseTrace, type TraceJob } from '../sim/trace';
import { writePlots } from '../sim/plot';
import { collect, parseDuration, UsageError } from './args';

const TIMING_NAMES = Object.keys(DEFAULT_TIMINGS).filter((k) => k !== 'scrubSeconds') as (keyof MacTimings)[];

/** `preset:days[:seed]`, e.g. `large:365:7`. */
export function parseGenerate(flag: string, v: string): { preset: string; days: number; seed: number } {
  const [preset = '', days = '', seed = '1'] = v.split(':');
  if (!PRESETS[preset])
    throw new UsageError(
      `${flag}: unknown preset "${preset}" in "${v}"; use one of ${Object.keys(PRESETS).join(', ')}, e.g. ${flag} large:365`,
    );
  if (!/^\d+$/.test(days) || Number(days) < 1)
    throw new UsageError(`${flag}: "${v}" needs a whole number of days ≥ 1, e.g. ${preset}:365`);
  if (!/^\d+$/.test(seed))
    throw new UsageError(`${flag}: seed "${seed}" in "${v}" must be a whole number, e.g. ${preset}:${days}:7`);
  return { preset, days: Number(days), seed: Number(seed) };
}

export function parseOptions(o: SimulateFlags): CompareOptions {
  const base = defaultCompareOptions();
  const policies = o.policies ? o.policies.split(',').map((p) => p.trim()) : [...POLICY_NAMES];
  for (const p of policies) {
    if (!(POLICY_NAMES as readonly string[]).includes(p))
      throw new UsageError(`--policies: unknown policy "${p}"; choose from ${POLICY_NAMES.join(', ')}`);
  }
  if (!(BILLING_MODES as readonly string[]).includes(o.billing)) {
    throw new UsageError(`--billing: "${o.billing}" is not a billing reading; use one of ${BILLING_MODES.join(', ')}`);
  }
  const price = o.price !== undefined ? Number(o.price) : HOURLY_PRICE_USD[o.instanceType];
  if (price === undefined) {
    throw new UsageError(
      `--instance-type: no price known for "${o.instanceType}"; give one with --price USD_PER_HOUR (known: ${Object.keys(HOURLY_PRICE_USD).join(', ')})`,
    );
  }
  if (!Number.isFinite(price) || price < 0)
    throw new UsageError(`--price: "${o.price}" must be a number of dollars per host-hour ≥ 0, e.g. --price 0.878`);
  const maxHosts = Number(o.maxHosts);
  if (!Number.isInteger(maxHosts) || maxHosts < 1)
    throw new UsageError(`--max-hosts: "${o.maxHosts}" must be a whole number ≥ 1`);
  const seed = Number(o.seed);
  if (!Number.isInteger(seed)) throw new UsageError(`--seed: "${o.seed}" must be a whole number`);
  const timings: MacTimings = { ...DEFAULT_TIMINGS, scrubSeconds: [...DEFAULT_TIMINGS.scrubSeconds] };
  if (o.scrub) {
    const [lo, hi] = o.scrub.split('-');
    if (!lo || !hi) throw new UsageError(`--scrub: "${o.scrub}" must be a range MIN-MAX, e.g. --scrub 1h-2h`);
    const range: [number, number] = [parseDuration('--scrub', lo), parseDuration('--scrub', hi)];
    if (range[0] > range[1]) throw new UsageError(`--scrub: the minimum ${lo} is above the maximum ${hi}`);
    timings.scrubSeconds = range;
  }
  for (const t of o.timing ?? []) {
    const [name = '', value = ''] = t.split('=');
    if (!(TIMING_NAMES as string[]).includes(name))
      throw new UsageError(`--timing: unknown timing "${name}"; known: ${TIMING_NAMES.join(', ')} (and --scrub)`);
    (timings as unknown as Record<string, number>)[name] = parseDuration(`--timing ${name}`, value);
  }
  let zones = base.zones;
  if (o.zones) {
    zones = o.zones.split(',').map((z) => {
      const [name = '', cap] = z.split('=');
      const hosts = cap === undefined ? Number.MAX_SAFE_INTEGER : Number(cap);
      if (!name || !Number.isInteger(hosts) || hosts < 0)
        throw new UsageError(`--zones: "${z}" must be NAME or NAME=HOSTS, e.g. --zones us-east-1a=40,us-east-1b`);
      return { name, hosts };
    });
  }
  const refreshAfterJobs = Number(o.refreshAfterJobs ?? 0);
  if (!Number.isInteger(refreshAfterJobs) || refreshAfterJobs < 0)
    throw new UsageError(
      `--refresh-after-jobs: "${o.refreshAfterJobs}" must be a whole number ≥ 0 (0: never), e.g. --refresh-after-jobs 50`,
    );
  return {
    policies: policies as PolicyName[],
    marina: { refreshAfterJobs, rootVolumeReplacement: o.rootVolumeReplacement !== false },
    timings,
    billing: o.billing as BillingMode,
    maxHosts,
    zones,
    instanceType: o.instanceType,
    hourlyPriceUsd: price,
    seed,
  };
}

export interface SimulateFlags {
  generate?: string[];
  policies?: string;
  billing: string;
  instanceType: string;
  price?: string;
  maxHosts: string;
  zones?: string;
  scrub?: string;
  timing?: string[];
  seed: string;
  json?: boolean;
  months: boolean;
  plots?: string;
  refreshAfterJobs?: string;
  rootVolumeReplacement?: boolean;
}

export function loadTraces(files: string[], generate: string[] | undefined): { name: string; jobs: TraceJob[] }[] {
  const traces = files.map((f) => {
    let text: string;
    try {
      const raw = readFileSync(f);
      text = (f.endsWith('.gz') ? gunzipSync(raw) : raw).toString('utf8');
    } catch (e) {
      throw new UsageError(`cannot read trace ${f}: ${(e as Error).message}`);
    }
    return { name: f, jobs: parseTrace(text, f) };
  });
  for (const g of generate ?? []) {
    const { preset, days, seed } = parseGenerate('--generate', g);
    traces.push({ name: `generated ${preset}:${days}:${seed}`, jobs: generateTrace(shapeFor(preset, days, seed)) });
  }
  if (traces.length === 0)
    throw new UsageError(
      'give trace files (Aquarium CSV) or --generate PRESET:DAYS, e.g. marina simulate --generate large:365',
    );
  return traces;
}

export function registerSimulateCommands(program: Command): void {
  program
    .command('simulate [traces...]')
    .description(
      "replay CI demand (Aquarium-format CSV traces) against Marina's policy and the baselines, in virtual time",
    )
    .option(
      '--generate <preset:days[:seed]>',
      `simulate a generated trace (presets: ${Object.keys(PRESETS).join(', ')}); repeatable`,
      collect,
    )
    .option('--policies <list>', `comma-separated, from ${POLICY_NAMES.join(', ')} (default: all)`)
    .option(
      '--billing <mode>',
      `how scrubbing meets the 24 h minimum: ${BILLING_MODES.join(' | ')}`,
      'minimum-of-metered',
    )
    .option('--instance-type <type>', 'Mac instance type, for the price', 'mac2-m2.metal')
    .option('--price <usd>', "dollars per host-hour (default: the instance type's us-east-1 On-Demand price)")
    .option('--max-hosts <n>', 'host cap (account quota)', '500')
    .option(
      '--zones <list>',
      'zones in order of preference with their free Mac hosts, e.g. us-east-1a=40,us-east-1b=100',
    )
    .option('--scrub <range>', 'scrub duration range, e.g. 1h-2h (Apple silicon: up to 4.5h)')
    .option('--timing <name=duration>', `override a timing (${TIMING_NAMES.join(', ')}); repeatable`, collect)
    .option('--seed <n>', 'seed for scrub durations and random placement', '1')
    .option('--json', 'print the comparison as JSON')
    .option('--no-months', 'leave out the monthly tables')
    .option('--plots <dir>', 'write hosts.svg, queue.svg and cost.svg into this directory')
    .option('--refresh-after-jobs <n>', "Marina: clean a host's instance after this many jobs (0: never)", '0')
    .option('--no-root-volume-replacement', 'Marina: clean hosts by scrubbing only, never by root-volume replacement')
    .option(
      '--sweep <name=from..to[:step]>',
      `Marina only: sweep a setting (${Object.keys(SWEEP_PARAMS).join(', ')}; e.g. headroom=0..4 keepWarm=5m..60m) and print the cost/p95 frontier; repeatable`,
      collect,
    )
    .option('--all', 'with --sweep: print every combination, not only the frontier')
    .action(async (files: string[], o: SimulateFlags & { sweep?: string[]; all?: boolean }) => {
      const options = parseOptions(o);
      const traces = loadTraces(files, o.generate);
      if (o.sweep) {
        let axes;
        try {
          axes = o.sweep.map((v) => parseSweep(v, (d) => parseDuration('--sweep', d)));
        } catch (e) {
          throw e instanceof UsageError ? e : new UsageError((e as Error).message);
        }
        for (const t of traces) {
          const points = sweep(t.jobs, axes, simConfig(options), options.marina);
          process.stdout.write(
            o.json
              ? JSON.stringify({ trace: t.name, billing: options.billing, points }, null, 2) + '\n'
              : `== ${t.name} (${options.billing})\n${formatSweep(points, o.all === true)}\n`,
          );
        }
        return;
      }
      const results = [];
      for (const t of traces) {
        // Each policy in its own worker thread: a year of jobs per policy takes seconds.
        const c = options.policies.length > 1 ? await compareParallel(t.jobs, options) : compare(t.jobs, options);
        results.push({ trace: t.name, ...(toJson(c) as object) });
        if (!o.json) process.stdout.write(`== ${t.name}\n${fullReport(c, o.months)}\n`);
        if (o.plots) {
          const dir = traces.length > 1 ? `${o.plots}/${t.name.replace(/[^\w.-]+/g, '_')}` : o.plots;
          const paths = await writePlots(c, dir);
          if (!o.json) process.stdout.write(`plots: ${paths.join(', ')}\n\n`);
        }
      }
      if (o.json) process.stdout.write(JSON.stringify(results.length === 1 ? results[0] : results, null, 2) + '\n');
    });

  const trace = program.command('trace').description('workload traces for the simulator');
  trace
    .command('generate')
    .description("write a seeded synthetic trace in Aquarium's CSV format")
    .requiredOption('--preset <name>', `shape: ${Object.keys(PRESETS).join(', ')}`)
    .option('--days <n>', 'length in days', '365')
    .option('--seed <n>', 'seed', '1')
    .option('--start <date>', 'first day, YYYY-MM-DD (UTC)', '2026-01-05')
    .option('--out <file>', 'write here instead of stdout (gzipped if it ends in .gz)')
    .action((o: { preset: string; days: string; seed: string; start: string; out?: string }) => {
      const { preset, days, seed } = parseGenerate('--preset/--days/--seed', `${o.preset}:${o.days}:${o.seed}`);
      if (!/^\d{4}-\d{2}-\d{2}$/.test(o.start)) throw new UsageError(`--start: "${o.start}" must be YYYY-MM-DD`);
      const csv = formatTrace(generateTrace(shapeFor(preset, days, seed, o.start)));
      if (o.out) writeFileSync(o.out, o.out.endsWith('.gz') ? gzipSync(csv, { level: 9 }) : csv);
      else process.stdout.write(csv);
    });
}
