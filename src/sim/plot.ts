/** SVG plots of a comparison, rendered headless by Vega-Lite: hosts over time, queue length, monthly cost. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Comparison } from './compare';

type Row = Record<string, string | number>;

/** Hourly samples folded into at most ~1,200 points per policy (max within each step). */
function timeRows(
  c: Comparison,
  pick: (s: Comparison['rows'][number]['series']) => number[],
): { rows: Row[]; stepHours: number } {
  const longest = Math.max(...c.rows.map((r) => r.series.hostsLive.length));
  const fold = Math.max(1, Math.ceil(longest / 1200));
  const rows: Row[] = [];
  for (const r of c.rows) {
    const values = pick(r.series);
    for (let i = 0; i < values.length; i += fold) {
      let m = 0;
      for (let k = i; k < Math.min(values.length, i + fold); k++) m = Math.max(m, values[k]!);
      rows.push({ time: new Date((r.series.t0 + i * r.series.step) * 1000).toISOString(), value: m, policy: r.policy });
    }
  }
  return { rows, stepHours: fold };
}

async function render(spec: object): Promise<string> {
  const vl = await import('vega-lite');
  const vega = await import('vega');
  const view = new vega.View(vega.parse(vl.compile(spec as never).spec), { renderer: 'none' });
  return view.toSVG();
}

function lineSpec(title: string, yTitle: string, rows: Row[]): object {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 900,
    height: 280,
    background: 'white',
    data: { values: rows },
    mark: { type: 'line', strokeWidth: 1, interpolate: 'step-after' },
    encoding: {
      x: { field: 'time', type: 'temporal', title: 'time (UTC)' },
      y: { field: 'value', type: 'quantitative', title: yTitle },
      color: { field: 'policy', type: 'nominal' },
    },
  };
}

/** Writes hosts.svg, queue.svg and cost.svg into dir; returns their paths. */
export async function writePlots(c: Comparison, dir: string): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const hosts = timeRows(c, (s) => s.hostsBilled);
  const queue = timeRows(c, (s) => s.queued);
  const costRows: Row[] = c.rows.flatMap((r) =>
    r.months.map((m) => ({ month: m.month, cost: Math.round(m.costUsd), policy: r.policy })),
  );
  const out: [string, object][] = [
    ['hosts.svg', lineSpec(`Billed hosts (not scrubbing), max per ${hosts.stepHours} h`, 'hosts', hosts.rows)],
    ['queue.svg', lineSpec(`Jobs waiting for a slot, max per ${queue.stepHours} h`, 'queued jobs', queue.rows)],
    [
      'cost.svg',
      {
        $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
        title: `Monthly cost (${c.options.instanceType} at $${c.options.hourlyPriceUsd}/h, billing ${c.options.billing})`,
        width: { step: 14 },
        height: 280,
        background: 'white',
        data: { values: costRows },
        mark: 'bar',
        encoding: {
          x: { field: 'month', type: 'ordinal', title: 'month' },
          xOffset: { field: 'policy' },
          y: { field: 'cost', type: 'quantitative', title: 'USD' },
          color: { field: 'policy', type: 'nominal' },
        },
      },
    ],
  ];
  const paths: string[] = [];
  for (const [name, spec] of out) {
    const path = join(dir, name);
    writeFileSync(path, await render(spec));
    paths.push(path);
  }
  return paths;
}
