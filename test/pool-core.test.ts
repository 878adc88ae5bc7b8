/** The pool core (src/policy/pool-core.ts): pure, so every rule is checked here event by event. */
import { describe, expect, it } from 'vitest';
import {
  REAP_GRACE_MS,
  COMMAND_RESEND_MS,
  DECISIONS_KEPT,
  newPoolState,
  step,
  type PoolCommand,
  type PoolEvent,
} from '../src/policy/pool-core';
import type { PoolState } from '../src/domain/pool';
import type { HostReport, LeaseRequestMsg, PoolMessage, PoolSettings } from '../workflows/definitions';
import { poolView } from '../src/policy/pool-view';
import { validateControl } from '../src/policy/pool-controls';
import { packState, unpackState } from '../src/policy/pool-snapshot';

const host = (name: string, vm = 2) => ({ name, resources: { vm }, labels: {} });

function harness(settings: Partial<PoolSettings> = {}, state?: PoolState) {
  const s: PoolSettings = {
    hosts: [host('mac-1'), host('mac-2')],
    healthCheckSeconds: 30,
    leaseCheckSeconds: 15,
    ...settings,
  };
  let now = 1_000_000;
  let n = 0;
  const st = state ?? newPoolState('p');
  const feed = (e: PoolEvent): { commands: PoolCommand[]; reply?: string } =>
    step(st, e, { now, settings: s, newId: () => `id-${++n}` });
  feed({ type: 'settings', settings: s });
  return {
    state: st,
    settings: s,
    feed,
    tick: () => feed({ type: 'tick' }).commands,
    advance: (ms: number) => (now += ms),
    request: (id: string, extra: Partial<LeaseRequestMsg> = {}) =>
      feed({ type: 'lease-requested', request: { jobWorkflowId: id, resources: { vm: 1 }, labels: {}, ...extra } })
        .commands,
  };
}

const sent = (cmds: PoolCommand[]): PoolMessage[] => cmds.flatMap((c) => (c.kind === 'send' ? [c.message] : []));
const grants = (cmds: PoolCommand[]) =>
  sent(cmds).flatMap((m) => (m.kind === 'granted' ? [{ to: m.to, host: m.lease.host }] : []));

describe('pool core', () => {
  it('answers a drain at once, keeps placing elsewhere, and reports the host drained once its job ends', () => {
    const p = harness();
    p.request('job/a');
    expect(grants(p.tick())).toEqual([{ to: 'job/a', host: 'mac-1' }]);
    const { reply } = p.feed({ type: 'control', control: { action: 'drain', host: 'mac-1' } });
    expect(reply).toMatch(/drain host mac-1: no new work; waiting for its 1 running job/);
    // The drain is an intent: the pool goes on placing, on the other host.
    p.request('job/b');
    p.request('job/c');
    expect(grants(p.tick()).map((g) => g.host)).toEqual(['mac-2', 'mac-2']);
    expect(p.state.drains).toHaveProperty('mac-1');
    p.advance(5000);
    p.feed({ type: 'lease-released', jobWorkflowId: 'job/a' });
    p.tick();
    expect(p.state.drains).not.toHaveProperty('mac-1');
    expect(p.state.decisions!.at(-1)!.what).toMatch(/^operator: host mac-1 drained \(5 s\)/);
    // Drained stays cordoned until uncordoned.
    p.request('job/d');
    expect(grants(p.tick())).toEqual([]);
  });

  it('applies a host report to that host by name only, and ignores one for a host no longer configured', () => {
    const p = harness();
    p.tick(); // starts the host watchers
    const report = (h: string, seq: number, healthy: boolean): HostReport => ({
      host: h,
      workflowId: `host/p/${h}`,
      healthy,
      failures: healthy ? 0 : 3,
      error: healthy ? undefined : 'ssh timed out',
      images: ['marina-img-x'],
      vms: [],
      seq,
    });
    // mac-1 leaves the config while its report is on the way.
    const next = { ...p.settings, hosts: [host('mac-2')] };
    Object.assign(p.settings, next);
    p.feed({ type: 'settings', settings: next });
    p.feed({ type: 'host-report', report: report('mac-1', 1, false) });
    expect(p.state.hosts.map((h) => [h.name, h.cordoned, h.images])).toEqual([['mac-2', undefined, undefined]]);
    p.feed({ type: 'host-report', report: report('mac-2', 1, false) });
    expect(p.state.hosts[0]!.cordoned).toBe('health');
    // An older report arriving late changes nothing.
    p.feed({ type: 'host-report', report: report('mac-2', 2, true) });
    p.feed({ type: 'host-report', report: report('mac-2', 1, false) });
    expect(p.state.hosts[0]!.cordoned).toBeUndefined();
    // The removed host's watcher is told to stop, once.
    expect(sent(p.tick())).toEqual([expect.objectContaining({ kind: 'stop-watch', to: 'host/p/mac-1' })]);
    expect(sent(p.tick())).toEqual([]);
  });

  it('tells a removed host to stop watching, and starts a watcher for each configured host once', () => {
    const p = harness();
    const starts = p.tick().filter((c) => c.kind === 'start');
    expect(starts.map((c) => c.kind === 'start' && c.workflowId)).toEqual(['host/p/mac-1', 'host/p/mac-2']);
    expect(p.tick().filter((c) => c.kind === 'start')).toEqual([]);
    Object.assign(p.settings, { hosts: [host('mac-2')] });
    p.feed({ type: 'settings', settings: p.settings });
    expect(sent(p.tick())).toEqual([expect.objectContaining({ kind: 'stop-watch', to: 'host/p/mac-1' })]);
  });

  it('refuses past the queue limit, naming the limit, and loses nothing already queued', () => {
    const p = harness({ queueLimit: 3, hosts: [host('mac-1', 1)] });
    for (const id of ['job/1', 'job/2', 'job/3']) expect(sent(p.request(id))).toEqual([]);
    expect(sent(p.request('job/4'))).toEqual([
      {
        kind: 'refused',
        to: 'job/4',
        reason: 'pool p has 3 jobs queued, its limit (queueLimit: 3): submit again later, or raise pools[].queueLimit',
      },
    ]);
    expect(p.state.decisions!.at(-1)!.what).toMatch(/^refuse job\/4: pool p has 3 jobs queued/);
    // Those admitted are all there and run in order; a freed place in the queue takes a new job again.
    expect(grants(p.tick())).toEqual([{ to: 'job/1', host: 'mac-1' }]);
    expect(p.state.queue.map((q) => q.jobWorkflowId)).toEqual(['job/2', 'job/3']);
    expect(sent(p.request('job/5'))).toEqual([]);
    // Repeated requests of queued jobs are not refused and not queued twice.
    expect(sent(p.request('job/2'))).toEqual([]);
    expect(p.state.queue.map((q) => q.jobWorkflowId)).toEqual(['job/2', 'job/3', 'job/5']);
  });

  it('places nothing while a new run recovers, then never double-books the slots the jobs already hold', () => {
    const p = harness({}, { ...newPoolState('p'), recovering: true });
    p.request('job/new');
    expect(grants(p.tick())).toEqual([]);
    const held = (id: string, h: string) => ({
      leaseId: `l-${id}`,
      jobWorkflowId: id,
      host: h,
      resources: { vm: 1 },
      grantedAt: 1,
    });
    const r = p.feed({
      type: 'recovered',
      leases: [held('job/x', 'mac-1'), held('job/y', 'mac-1'), held('job/z', 'mac-2')],
      requests: [{ jobWorkflowId: 'job/old', resources: { vm: 1 }, labels: {}, requestedAt: 5 }],
      hostWorkflows: ['host/p/mac-1'],
    });
    expect(sent(r.commands)).toEqual([{ kind: 'resend-report', to: 'host/p/mac-1' }]);
    // One slot is free (mac-2); the older request goes first.
    expect(grants(p.tick())).toEqual([{ to: 'job/old', host: 'mac-2' }]);
    expect(p.state.queue.map((q) => q.jobWorkflowId)).toEqual(['job/new']);
    // A job that asks again while holding its lease hears the same lease again, not a second slot.
    expect(grants(p.request('job/x'))).toEqual([{ to: 'job/x', host: 'mac-1' }]);
    expect(p.state.leases.filter((l) => l.jobWorkflowId === 'job/x')).toHaveLength(1);
  });

  it('retires an AWS host once drained, and sends the retire again until the host is gone', () => {
    const aws = {
      maxHosts: 2,
      minHosts: 0,
      headroomSlots: 0,
      template: host('template'),
      timeScale: 1,
      pollSeconds: 10,
      keepWarmSeconds: 60,
      park: false,
      billing: 'minimum-of-metered' as const,
      refreshAfterJobs: 0,
      rootVolumeReplacement: false,
    };
    const p = harness({ hosts: [], aws });
    p.feed({
      type: 'host-ready',
      spec: {
        ...host('h-1'),
        dynamic: {
          workflowId: 'host/p/abc',
          address: '10.0.0.1',
          port: 22,
          knownHostsLine: 'x',
          ageSecondsAtReady: 100,
          readyAtMs: 1,
        },
      },
    });
    p.request('job/a');
    expect(grants(p.tick())).toEqual([{ to: 'job/a', host: 'h-1' }]);
    expect(() => validateControl(p.state, p.settings, { action: 'retire', host: 'h-1' })).not.toThrow();
    const { reply, commands } = p.feed({ type: 'control', control: { action: 'retire', host: 'h-1' } });
    expect(reply).toMatch(/retire host h-1: draining its 1 running job\(s\) first/);
    expect(sent(commands)).toEqual([]);
    expect(sent(p.tick()).filter((m) => m.kind === 'retire-host')).toEqual([]);
    p.feed({ type: 'lease-released', jobWorkflowId: 'job/a' });
    expect(sent(p.tick()).filter((m) => m.kind === 'retire-host')).toEqual([
      { kind: 'retire-host', to: 'host/p/abc', reason: 'retired by an operator' },
    ]);
    // Not reported gone: sent again, but not before the resend interval.
    expect(sent(p.tick()).filter((m) => m.kind === 'retire-host')).toEqual([]);
    p.advance(COMMAND_RESEND_MS);
    expect(sent(p.tick()).filter((m) => m.kind === 'retire-host').length).toBeGreaterThan(0);
    p.feed({ type: 'host-gone', workflowId: 'host/p/abc', reason: 'released' });
    p.advance(COMMAND_RESEND_MS);
    expect(sent(p.tick()).filter((m) => m.kind === 'retire-host')).toEqual([]);
  });

  it('keeps the slot of a grant the outbox gave up on (it may have landed) until the job asks again or closes', () => {
    const p = harness({ hosts: [host('mac-1', 1)] });
    p.request('job/poisoned');
    p.request('job/next');
    expect(grants(p.tick())).toEqual([{ to: 'job/poisoned', host: 'mac-1' }]);
    p.feed({ type: 'grant-undeliverable', jobWorkflowId: 'job/poisoned', error: 'signal limit' });
    // Never two VMs in one slot: the next job waits.
    expect(grants(p.tick())).toEqual([]);
    expect(p.state.decisions!.map((d) => d.what)).toContainEqual(
      expect.stringMatching(/grant to job\/poisoned undeliverable \(signal limit\): its slot on mac-1 stays held/),
    );
    // Asking again, it hears the same grant; once it has closed, the slot goes to the next job.
    expect(grants(p.request('job/poisoned'))).toEqual([{ to: 'job/poisoned', host: 'mac-1' }]);
    p.feed({ type: 'workflows-closed', ids: ['job/poisoned'] });
    expect(grants(p.tick())).toEqual([{ to: 'job/next', host: 'mac-1' }]);
  });

  it('revokes the leases on a host that is gone, so their jobs run again', () => {
    const p = harness({ hosts: [] });
    p.feed({
      type: 'host-ready',
      spec: {
        ...host('h-9'),
        dynamic: {
          workflowId: 'host/p/x',
          address: 'a',
          port: 22,
          knownHostsLine: 'k',
          ageSecondsAtReady: 0,
          readyAtMs: 0,
        },
      },
    });
    p.request('job/a');
    p.tick();
    const r = p.feed({ type: 'host-gone', workflowId: 'host/p/x', reason: 'AWS no longer knows host h-9' });
    expect(sent(r.commands)).toEqual([
      expect.objectContaining({
        kind: 'revoked',
        to: 'job/a',
        reason: 'host h-9 is gone: AWS no longer knows host h-9',
      }),
    ]);
    expect(p.state.leases).toEqual([]);
  });

  it('keeps a bounded ring of decisions and hands older ones to the log; its view is bounded', () => {
    const p = harness({ hosts: [host('mac-1', 1)], queueLimit: 5000 });
    const logged: string[] = [];
    for (let i = 0; i < 3 * DECISIONS_KEPT; i++) {
      const r = p.feed({ type: 'control', control: { action: i % 2 ? 'pause' : 'resume' } });
      for (const c of r.commands) if (c.kind === 'log') logged.push(c.decision.what);
    }
    expect(p.state.decisions).toHaveLength(DECISIONS_KEPT);
    expect(logged).toHaveLength(2 * DECISIONS_KEPT);
    for (let i = 0; i < 4000; i++) p.request(`job/${i}`, { requestedAt: i });
    const view = poolView(p.state, 0);
    expect(view.queued).toBe(4000);
    expect(view.queue.length).toBeLessThanOrEqual(100);
    expect(JSON.stringify(view).length).toBeLessThan(64 * 1024);
  });

  it('reaps a standby VM no lease holds only after a grace, and none while a new run recovers', () => {
    const p = harness({ hosts: [host('mac-1')] }, { ...newPoolState('p'), recovering: true });
    const report = (seq: number, vms: string[]): HostReport => ({
      host: 'mac-1',
      workflowId: 'host/p/mac-1',
      healthy: true,
      failures: 0,
      images: [],
      vms,
      seq,
    });
    const claimed = 'marina-standby-p-0-0-3'; // a job took it: the job's lease holds it by name
    const orphan = 'marina-standby-p-0-1-1';
    p.feed({ type: 'host-report', report: report(1, [claimed, orphan]) });
    p.advance(REAP_GRACE_MS * 2);
    expect(sent(p.tick())).toEqual([]); // recovering: nothing is reaped
    p.feed({
      type: 'recovered',
      leases: [
        { leaseId: 'l', jobWorkflowId: 'job/j', host: 'mac-1', resources: { vm: 1 }, grantedAt: 0, vm: claimed },
      ],
      requests: [],
      hostWorkflows: [],
    });
    expect(sent(p.tick()).filter((m) => m.kind === 'reap-vms')).toEqual([
      { kind: 'reap-vms', to: 'host/p/mac-1', vms: [orphan], reason: 'standby VMs no lease holds' },
    ]);
    // A VM reported just now waits out the grace.
    p.feed({ type: 'host-report', report: report(2, ['marina-standby-p-0-2-1']) });
    expect(sent(p.tick()).filter((m) => m.kind === 'reap-vms')).toEqual([]);
  });

  it('packs its state for continue-as-new into parts far under 256 KB each, and unpacks it whole', () => {
    const p = harness({ hosts: Array.from({ length: 500 }, (_, i) => host(`mac-${i}`)), queueLimit: 10_000 });
    const image = `marina-img-${'a'.repeat(64)}`;
    const ask = (i: number) =>
      p.request(`job/ci-${i.toString(36)}-${'x'.repeat(8)}`, { client: `ci-${i % 4}`, image, requestedAt: 1_000 + i });
    for (let i = 0; i < 10_000; i++) ask(i);
    p.tick(); // 1,000 leases; then the queue fills to its limit again
    for (let i = 10_000; i < 11_000; i++) ask(i);
    expect(p.state.leases).toHaveLength(1000);
    expect(p.state.queue).toHaveLength(10_000);
    const { packed, parts } = packState(p.state);
    const sizes = [JSON.stringify(packed), ...parts.map((x) => JSON.stringify(x))].map((x) => x.length);
    expect(Math.max(...sizes)).toBeLessThan(128 * 1024);
    expect(sizes.reduce((a, b) => a + b, 0)).toBeLessThan(1024 * 1024);
    // The state query of this pool (500 hosts, 1,000 leases, 10,000 queued) stays under 256 KB too.
    expect(JSON.stringify(poolView(p.state, 0)).length).toBeLessThan(200 * 1024);
    expect(unpackState(JSON.parse(JSON.stringify(packed)), JSON.parse(JSON.stringify(parts)))).toEqual(
      JSON.parse(JSON.stringify({ ...p.state, outbox: [] })),
    );
  });
});
