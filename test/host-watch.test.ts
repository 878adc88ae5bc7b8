/** The static host watch's pure rule: what its pool hears, and when (src/policy/host-watch.ts). */
import { describe, expect, it } from 'vitest';
import {
  afterCheck,
  classifyVms,
  initialReport,
  jobVmsOf,
  type HostCheck,
  type HostReport,
} from '../src/policy/host-watch';
import { UNHEALTHY_AFTER_FAILURES } from '../src/policy/placement';

const ok = (vms: string[] = [], images: string[] = []): HostCheck => ({ ok: true, vms, images });
const fail = (error = 'ssh to host p/mac-1 failed: connect ECONNREFUSED'): HostCheck => ({
  ok: false,
  error,
  vms: [],
  images: [],
});

/** Folds checks one by one; returns every step's `due`, and the last view. */
function run(checks: HostCheck[], from: HostReport = initialReport('mac-1', 'host/p/mac-1')) {
  let view = from;
  const due: boolean[] = [];
  const why: Array<string | undefined> = [];
  for (const c of checks) {
    const step = afterCheck(view, c);
    due.push(step.due);
    why.push(step.why);
    view = step.report;
  }
  return { due, why, view };
}

describe('host watch policy', () => {
  it('reports a healthy host once, on its first good check, and then stays quiet', () => {
    const r = run([ok(), ok(), ok()]);
    expect(r.due).toEqual([true, false, false]);
    expect(r.why[0]).toBe('first report: healthy');
    expect(r.view).toMatchObject({ healthy: true, failures: 0, seq: 1 });
    expect(r.view.error).toBeUndefined();
  });

  it('reports a host that never answered only once it has failed enough checks in a row', () => {
    expect(UNHEALTHY_AFTER_FAILURES).toBe(3);
    const r = run([fail(), fail(), fail('handshake timed out'), fail()]);
    expect(r.due).toEqual([false, false, true, false]);
    expect(r.why[2]).toBe('first report: unhealthy after 3 failed checks');
    expect(r.view).toMatchObject({ healthy: false, failures: 4, seq: 1 });
  });

  it('flips to unhealthy after 3 failures in a row, not on 2, and back on the first success', () => {
    const healthy = run([ok()]).view;
    const blip = run([fail(), fail(), ok()], healthy);
    expect(blip.due).toEqual([false, false, false]);
    expect(blip.view).toMatchObject({ healthy: true, failures: 0, seq: 1 });

    const down = run([fail('a'), fail('b'), fail('c')], healthy);
    expect(down.due).toEqual([false, false, true]);
    expect(down.why[2]).toBe('unhealthy after 3 failed checks');
    // The report carries the error that tipped it.
    expect(down.view).toMatchObject({ healthy: false, failures: 3, error: 'c', seq: 2 });

    const up = run([ok()], down.view);
    expect(up.due).toEqual([true]);
    expect(up.why[0]).toBe('healthy again');
    expect(up.view).toMatchObject({ healthy: true, failures: 0, seq: 3 });
    expect(up.view.error).toBeUndefined();
  });

  it('does not report a new error text alone', () => {
    const down = run([fail('a'), fail('a'), fail('a')], run([ok()]).view).view;
    const r = run([fail('connect ETIMEDOUT'), fail('handshake timed out'), fail('tart: exited 1')], down);
    expect(r.due).toEqual([false, false, false]);
    expect(r.view.seq).toBe(down.seq);
    // The view still knows the latest error (heartbeats show it), the pool does not hear it.
    expect(r.view.error).toBe('tart: exited 1');
  });

  it('compares images and VMs as sets: order and duplicates are not news, a change is', () => {
    const start = run([ok(['marina-a', 'marina-b'], ['marina-img-1'])]).view;
    const same = run([ok(['marina-b', 'marina-a', 'marina-a'], ['marina-img-1', 'marina-img-1'])], start);
    expect(same.due).toEqual([false]);

    const vmGone = run([ok(['marina-b'], ['marina-img-1'])], start);
    expect(vmGone.due).toEqual([true]);
    expect(vmGone.why[0]).toBe('vms -marina-a');
    expect(vmGone.view).toMatchObject({ vms: ['marina-b'], seq: start.seq + 1 });

    const imageNew = run([ok(['marina-a', 'marina-b'], ['marina-img-2', 'marina-img-1'])], start);
    expect(imageNew.why[0]).toBe('images +marina-img-2');
    expect(imageNew.view.images).toEqual(['marina-img-1', 'marina-img-2']);
  });

  it('keeps the last known VMs through failed checks: a host that does not answer has not lost its VMs', () => {
    const start = run([ok(['marina-a'], ['marina-img-1'])]).view;
    const r = run([fail(), ok(['marina-a'], ['marina-img-1'])], start);
    expect(r.due).toEqual([false, false]);
    expect(r.view).toMatchObject({ vms: ['marina-a'], images: ['marina-img-1'] });
  });

  it('reports health and set changes together in one report', () => {
    const down = run([fail(), fail(), fail()], run([ok(['marina-a'])]).view).view;
    const r = run([ok(['marina-b'])], down);
    expect(r.due).toEqual([true]);
    expect(r.why[0]).toBe('healthy again; vms +marina-b -marina-a');
  });

  it('sorts VMs into images and job/standby VMs, and reaps by itself only job VMs', () => {
    const names = ['marina-img-abc', 'marina-42', 'marina-standby-ci-0-1-3', 'my-own-vm', 'macos-base'];
    expect(classifyVms(names)).toEqual({
      images: ['marina-img-abc'],
      vms: ['marina-42', 'marina-standby-ci-0-1-3'],
    });
    expect(jobVmsOf(classifyVms(names).vms)).toEqual(['marina-42']);
  });
});
