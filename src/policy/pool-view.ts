/**
 * What a pool shows: its query result and its Web UI details. Both are bounded whatever the
 * pool's size, since a query result and a workflow task's metadata travel whole.
 */
import type { PoolState } from '../domain/pool';

/** Queued requests and leases listed in the query; the counts give the rest. */
export const VIEW_QUEUE = 100;
export const VIEW_LEASES = 500;
const DETAIL_HOSTS = 20;

export interface PoolView extends Omit<PoolState, 'outbox'> {
  /** Totals, where `leases` and `queue` list only the first ones. */
  running: number;
  queued: number;
  /** Messages waiting in the outbox. */
  outboxed: number;
}

export function poolView(state: PoolState, outboxed: number): PoolView {
  const { outbox: _, ...rest } = state;
  return {
    ...rest,
    leases: state.leases.slice(0, VIEW_LEASES),
    queue: state.queue.slice(0, VIEW_QUEUE),
    running: state.leases.length,
    queued: state.queue.length,
    outboxed,
  };
}

/** The Web UI's current details: what an operator needs at a glance. */
export function describePool(state: PoolState, outboxed: number): string {
  const shown = state.hosts.slice(0, DETAIL_HOSTS);
  const lines = shown.map((h) => {
    const leases = state.leases.filter((l) => l.host === h.name).length;
    const pulling = Object.entries(state.prePulls ?? {})
      .filter(([k, r]) => r.running && k.startsWith(`${h.name}|`))
      .map(([k]) => k.slice(h.name.length + 1));
    const drain = state.drains?.[h.name] !== undefined ? ' · draining' : '';
    const retire = state.retiring?.[h.name] ? ' · retiring once drained' : '';
    return (
      `- **${h.name}**: ${leases} lease(s)${h.cordoned ? ` · cordoned (${h.cordoned})` : ''}${drain}${retire}` +
      (h.cordoned === 'health' && h.lastHealthError ? ` · ${h.lastHealthError}` : '') +
      (pulling.length ? ` · pre-pulling ${pulling.join(', ')} (workflow prepull/${state.name}/${h.name}/…)` : '')
    );
  });
  const decisions = (state.decisions ?? []).slice(-5).map((d) => `- ${d.at.slice(11, 19)} ${d.what}`);
  const parked = (state.parked ?? []).slice(-3).map((p) => `- ${p.at.slice(11, 19)} ${p.kind} to ${p.to}: ${p.error}`);
  return [
    `${state.recovering ? '**recovering** leases from the jobs · ' : ''}${state.paused ? '**paused** · ' : ''}` +
      `**${state.leases.length}** running, **${state.queue.length}** queued` +
      (state.standbyWorkflows?.length
        ? ` · **${Object.keys(state.standbys ?? {}).length}**/${state.standbyWorkflows.length} standby VMs booted`
        : '') +
      (outboxed > 0 ? ` · ${outboxed} message(s) to send` : ''),
    ...lines,
    ...(state.hosts.length > shown.length ? [`- … and ${state.hosts.length - shown.length} more hosts`] : []),
    ...(parked.length > 0 ? ['', `**Messages given up on** (${state.parked!.length})`, ...parked] : []),
    ...(decisions.length > 0 ? ['', '**Latest decisions**', ...decisions] : []),
  ].join('\n');
}
