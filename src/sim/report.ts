/** Human-readable reports of a comparison: Aquarium-style monthly tables and a side-by-side table. */
import Table from 'cli-table3';
import type { Comparison, PolicyRow } from './compare';

const f2 = (n: number): string => n.toFixed(2);
const f0 = (n: number): string => Math.round(n).toLocaleString('en-US');
const minutes = (s: number): string => (s / 60).toFixed(1);

function table(head: string[]): Table.Table {
  return new Table({
    head,
    style: { head: [], border: [] },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
}

/** Fish's monthly table (rows × months), plus the figures Fish's simulator does not print. */
export function monthlyTable(row: PolicyRow): string {
  const months = row.months;
  const t = table(['', ...months.map((m) => m.month)]);
  t.push(
    ['Instances h/mon', ...months.map((m) => f2(m.instanceHours))],
    ['Hosts h/mon (billed)', ...months.map((m) => f2(m.hostHours))],
    ['Hosts h/mon incl. scrub', ...months.map((m) => f2(m.hostHoursWithScrub))],
    ['Queue h/mon', ...months.map((m) => f2(m.queueHours))],
    ['Mean wait min (waited)', ...months.map((m) => f2(m.meanWaitMinutes))],
    ['Cost $/mon', ...months.map((m) => f0(m.costUsd))],
  );
  const w = row.wait;
  return (
    `${row.policy} (${row.slotModel}): Max: Hosts: ${row.peakHosts} wait (minutes): ${minutes(w.max)}` +
    ` | wait p50 ${minutes(w.p50)} p95 ${minutes(w.p95)} max ${minutes(w.max)} min | peak hosts ${row.peakHosts}` +
    ` | ${f0(row.costUsd)} $\n${t.toString()}`
  );
}

export function comparisonTable(c: Comparison): string {
  const t = table([
    'policy',
    'billed host-h',
    'incl. scrub',
    'cost $',
    '× lower bound',
    '× aquarium',
    '× aquarium-2slot',
    'wait p50/p95/max min',
    'peak hosts',
    'hosts allocated',
    'scrubs',
    'sim s',
  ]);
  for (const r of c.rows) {
    t.push([
      r.policy,
      f0(r.hostHours),
      f0(r.hostHoursWithScrub),
      f0(r.costUsd),
      f2(r.vsLowerBound),
      r.vsAquarium === undefined ? '-' : f2(r.vsAquarium),
      r.vsAquarium2Slot === undefined ? '-' : f2(r.vsAquarium2Slot),
      `${minutes(r.wait.p50)} / ${minutes(r.wait.p95)} / ${minutes(r.wait.max)}`,
      String(r.peakHosts),
      f0(r.hostsAllocated),
      f0(r.scrubs),
      (r.wallMs / 1000).toFixed(2),
    ]);
  }
  const lb = c.lowerBound;
  const o = c.options;
  return (
    `trace: ${f0(c.trace.jobs)} jobs, ${c.trace.from} → ${c.trace.to} UTC, ${f0(c.trace.workHours)} h of work\n` +
    `model: ${o.instanceType} at $${o.hourlyPriceUsd}/h, billing ${o.billing}, max ${o.maxHosts} hosts, ` +
    `scrub ${o.timings.scrubSeconds.map((s) => minutes(s)).join('–')} min, launch→serve ` +
    `${minutes(o.timings.instanceRunningSeconds + o.timings.sshReadySeconds + o.timings.prepareSeconds)} min\n` +
    `lower bound (every job starts on arrival): ${f0(lb.hostHours)} host-h ` +
    `(slot-hours ${f0(lb.slotHours)}, ${lb.peakHosts} peak hosts × 24 h = ${f0(lb.peakHours)})\n` +
    `parking yardstick (a perfect forecaster's unparked hosts, ${minutes(c.parkingYardstick.windowSeconds)} min ahead): ` +
    `${f0(c.parkingYardstick.hostHours)} host-h = ${f2(c.parkingYardstick.hostHours / lb.hostHours)} × the bound\n` +
    t.toString()
  );
}

export function fullReport(c: Comparison, withMonths: boolean): string {
  const parts = [comparisonTable(c)];
  if (withMonths) for (const r of c.rows) parts.push(monthlyTable(r));
  return parts.join('\n\n') + '\n';
}

/** The comparison for machines: everything but the hourly series (those go to plots). */
export function toJson(c: Comparison): unknown {
  return { ...c, rows: c.rows.map(({ series: _series, ...rest }) => rest) };
}
