/**
 * Planner and operator controls of a pool: whether one can be taken (checked before the pool records it,
 * so a bad one changes nothing) and the capacity in force once they are.
 */
import type { HostState, PoolState } from '../domain/pool';
import { capacityAt, scheduleErrors } from './schedule';
import type { AwsPoolSettings, PoolControl, PoolSettings } from '../../workflows/definitions';

/** Throws an Error whose message names the field and the fix, for a control the pool cannot take. */
export function validateControl(state: PoolState, settings: PoolSettings, c: PoolControl): void {
  const hostNamed = (host: string): HostState => {
    const h = state.hosts.find((x) => x.name === host);
    if (!h)
      throw new Error(
        `no host "${host}" in pool ${state.name}; hosts: ${state.hosts.map((x) => x.name).join(', ') || '(none)'}`,
      );
    return h;
  };
  switch (c.action) {
    case 'pause':
    case 'resume':
      return;
    case 'cordon':
    case 'uncordon':
    case 'drain':
      hostNamed(c.host);
      return;
    case 'retire': {
      if (Object.values(state.fleet ?? {}).some((r) => r.host === c.host && r.commanded !== 'release')) return;
      if (!hostNamed(c.host).dynamic)
        throw new Error(
          `host "${c.host}" is an on-prem host of pool ${state.name}: remove it from the config to retire it, or drain it`,
        );
      return;
    }
    case 'capacity': {
      if (!settings.aws)
        throw new Error(`pool ${state.name} has no aws section: its capacity is the hosts in its config`);
      for (const k of ['minHosts', 'maxHosts', 'headroomSlots'] as const) {
        const v = c[k];
        if (v !== undefined && (!Number.isInteger(v) || v < 0))
          throw new Error(`${k}: must be a whole number ≥ 0, got ${String(v)}`);
      }
      const next = effectiveAws(state, settings.aws, Date.now(), { ...state.capacity, ...c });
      if (next.maxHosts < 1) throw new Error(`maxHosts: must be at least 1, got ${next.maxHosts}`);
      if (next.minHosts > next.maxHosts)
        throw new Error(
          `minHosts ${next.minHosts} exceeds maxHosts ${next.maxHosts}: lower minHosts or raise maxHosts`,
        );
      return;
    }
    case 'schedules': {
      if (!settings.aws)
        throw new Error(`pool ${state.name} has no aws section: its capacity is the hosts in its config`);
      if (c.schedules === null) return;
      const errors = scheduleErrors(c.schedules);
      if (errors.length > 0) throw new Error(errors.join('; '));
      return;
    }
    default:
      throw new Error(
        `unknown action "${(c as { action: string }).action}"; use pause, resume, cordon, uncordon, drain, retire, capacity or schedules`,
      );
  }
}

/** The capacity in force: the config's, then the schedule's (the last matching period), then a planner's override. */
export function effectiveAws(
  state: PoolState,
  aws: AwsPoolSettings,
  now: number,
  over = state.capacity,
): AwsPoolSettings {
  const sched = capacityAt(state.schedules ?? aws.schedules ?? [], new Date(now));
  return {
    ...aws,
    ...(sched?.minHosts !== undefined ? { minHosts: sched.minHosts } : {}),
    ...(sched?.maxHosts !== undefined ? { maxHosts: sched.maxHosts } : {}),
    ...(sched?.headroomSlots !== undefined ? { headroomSlots: sched.headroomSlots } : {}),
    ...(over?.minHosts !== undefined ? { minHosts: over.minHosts } : {}),
    ...(over?.maxHosts !== undefined ? { maxHosts: over.maxHosts } : {}),
    ...(over?.headroomSlots !== undefined ? { headroomSlots: over.headroomSlots } : {}),
  };
}

/**
 * Why a pool cannot take these settings (a message naming the field and the fix), or undefined. The full
 * schema is checked where the file is read (src/config/schema.ts); this guards the pool against a stale
 * difference and against callers that skipped that check.
 */
export function settingsRequestProblem(
  request: { settings?: Partial<PoolSettings>; by?: string; basedOn?: number },
  currentVersion: number,
): string | undefined {
  if (request.basedOn !== undefined && request.basedOn !== currentVersion)
    return `the pool's settings moved to v${currentVersion} since the difference was made against v${request.basedOn}: run marina pool apply again to see the new difference`;
  if (typeof request.by !== 'string' || request.by.trim() === '') return 'by: say who applies the settings';
  const s = request.settings;
  if (!s || !Array.isArray(s.hosts)) return 'settings.hosts: give the list of hosts (may be empty)';
  for (const field of ['healthCheckSeconds', 'leaseCheckSeconds'] as const)
    if (!(typeof s[field] === 'number' && s[field] > 0))
      return `settings.${field}: must be a positive number of seconds`;
  return undefined;
}
