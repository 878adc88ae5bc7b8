/**
 * A planner's sweep: Marina's policy over a grid of its settings, and the cost / p95-wait
 * frontier (the settings no other setting beats on both). `headroom=0..4 keepWarm=5m..60m`.
 */
import type { FleetPolicyConfig } from '../policy/fleet';
import { simulate } from './engine';
import { marinaPolicy } from './policies';
import type { TraceJob } from './trace';
import type { SimConfig } from './types';

/** The settings a sweep may vary, and how each reads. */
export const SWEEP_PARAMS = {
  headroom: { key: 'headroomSlots', unit: 'slots' },
  keepWarm: { key: 'idleGraceSeconds', unit: 'duration' },
} as const satisfies Record<string, { key: keyof FleetPolicyConfig; unit: 'slots' | 'duration' }>;
export type SweepParam = keyof typeof SWEEP_PARAMS;

export interface SweepAxis {
  param: SweepParam;
  values: number[];
}

export interface SweepPoint {
  settings: Partial<Record<SweepParam, number>>;
  hostHours: number;
  costUsd: number;
  p95WaitSeconds: number;
  frontier: boolean;
}

/**
 * `headroom=0..4` (whole numbers, every one) or `keepWarm=5m..60m[:5m]` (durations, every step; the step is
 * the start unless given). `duration` turns `5m` into seconds; it throws with the flag named.
 */
export function parseSweep(spec: string, duration: (v: string) => number): SweepAxis {
  const m = /^(\w+)=([^.]+)\.\.([^:]+)(?::(.+))?$/.exec(spec.trim());
  if (!m) throw new Error(`--sweep: "${spec}" must be NAME=FROM..TO[:STEP], e.g. headroom=0..4 or keepWarm=5m..60m`);
  const param = m[1]! as SweepParam;
  const p = SWEEP_PARAMS[param];
  if (!p) throw new Error(`--sweep: unknown setting "${m[1]}"; sweep one of ${Object.keys(SWEEP_PARAMS).join(', ')}`);
  const read = (v: string): number => (p.unit === 'duration' ? duration(v) : Number(v));
  const from = read(m[2]!);
  const to = read(m[3]!);
  const step = m[4] !== undefined ? read(m[4]) : p.unit === 'slots' ? 1 : from;
  if (![from, to, step].every((x) => Number.isFinite(x) && x >= 0) || step <= 0 || to < from)
    throw new Error(`--sweep: "${spec}" needs FROM ≤ TO and a STEP > 0`);
  const values: number[] = [];
  for (let v = from; v <= to + 1e-9 && values.length <= 100; v += step) values.push(v);
  if (values.length > 100) throw new Error(`--sweep: "${spec}" has more than 100 values; give a larger STEP`);
  return { param, values };
}

/** Every combination of the axes' values, Marina simulated under each, the frontier marked. */
export function sweep(
  trace: readonly TraceJob[],
  axes: SweepAxis[],
  config: SimConfig,
  base: Partial<FleetPolicyConfig> = {},
): SweepPoint[] {
  let grid: Array<Partial<Record<SweepParam, number>>> = [{}];
  for (const a of axes) grid = grid.flatMap((g) => a.values.map((v) => ({ ...g, [a.param]: v })));
  if (grid.length > 400) throw new Error(`--sweep: ${grid.length} combinations; at most 400`);
  const points = grid.map((settings) => {
    const overrides: Partial<FleetPolicyConfig> = { ...base };
    for (const [k, v] of Object.entries(settings)) Object.assign(overrides, { [SWEEP_PARAMS[k as SweepParam].key]: v });
    const r = simulate(trace, marinaPolicy(overrides), config);
    return { settings, hostHours: r.hostHours, costUsd: r.costUsd, p95WaitSeconds: r.wait.p95, frontier: false };
  });
  for (const p of points)
    p.frontier = !points.some(
      (q) =>
        q !== p &&
        q.hostHours <= p.hostHours &&
        q.p95WaitSeconds <= p.p95WaitSeconds &&
        (q.hostHours < p.hostHours || q.p95WaitSeconds < p.p95WaitSeconds),
    );
  return points;
}

export function formatSweep(points: SweepPoint[], all: boolean): string {
  const shown = points.filter((p) => all || p.frontier).sort((a, b) => a.hostHours - b.hostHours);
  const lines = ['settings                          host-h      cost $   p95 wait min  frontier'];
  for (const p of shown) {
    const s = Object.entries(p.settings)
      .map(([k, v]) => `${k}=${SWEEP_PARAMS[k as SweepParam].unit === 'duration' ? `${Math.round(v / 60)}m` : v}`)
      .join(' ');
    lines.push(
      `${s.padEnd(30)} ${Math.round(p.hostHours).toLocaleString('en-US').padStart(9)} ${Math.round(p.costUsd).toLocaleString('en-US').padStart(11)} ${(p.p95WaitSeconds / 60).toFixed(1).padStart(14)}  ${p.frontier ? '*' : ''}`,
    );
  }
  return lines.join('\n') + '\n';
}
