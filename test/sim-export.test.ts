/** `marina trace export`'s pure part: closed jobs as a simulator trace (src/sim/export.ts). */
import { describe, expect, it } from 'vitest';
import { exportTrace } from '../src/sim/export';
import { formatTrace, parseTrace } from '../src/sim/trace';

const at = (s: number) => new Date(s * 1000);

describe('trace export', () => {
  it('turns closed jobs into a sorted trace the simulator reads back, leaving out jobs that never ran', () => {
    const { jobs, skipped } = exportTrace([
      { workflowId: 'job/b', startedAt: at(1_800_000_100), closedAt: at(1_800_000_400), runMs: 1, pool: 'ci' },
      {
        workflowId: 'job/a',
        startedAt: at(1_800_000_000),
        closedAt: at(1_800_000_900),
        runMs: 600_400,
        pool: 'ci',
        image: 'macos-xcode:16',
        client: 'gha',
      },
      { workflowId: 'job/cancelled-queued', startedAt: at(1_800_000_050), closedAt: at(1_800_000_060) },
    ]);
    expect(skipped).toBe(1);
    expect(jobs.map((j) => [j.jobName, j.start, j.duration, j.stageName])).toEqual([
      ['a', 1_800_000_000, 601, 'gha'], // run time rounded up to whole seconds
      ['b', 1_800_000_100, 1, 'job'], // a job that ran at all ran for a second
    ]);
    const again = parseTrace(formatTrace(jobs), 'exported.csv');
    expect(again.map((j) => [j.jobName, j.start, j.duration, j.pool, j.image || undefined])).toEqual([
      ['a', 1_800_000_000, 601, 'ci', 'macos-xcode:16'],
      ['b', 1_800_000_100, 1, 'ci', undefined],
    ]);
  });
});
