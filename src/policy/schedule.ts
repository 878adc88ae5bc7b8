/**
 * Capacity by schedule, as GitLab's autoscaler policies: each entry holds cron periods in a
 * time zone and the capacity that applies while one of them matches the current minute; the
 * last matching entry wins, and outside every period the configured capacity applies. Pure
 * (croner evaluates the cron patterns, Intl the time zones), so the pool workflow calls it on
 * its deterministic clock and tests step it across boundaries.
 */
import { Cron } from 'croner';

export interface CapacitySchedule {
  /** Cron patterns (5 fields: minute hour day month weekday), e.g. `* 8-18 * * mon-fri`. */
  periods: string[];
  /** IANA time zone the periods are read in, e.g. `Europe/Berlin`. */
  timezone: string;
  minHosts?: number;
  maxHosts?: number;
  /** Spare VM slots kept serving above the forecast (idle capacity). */
  headroomSlots?: number;
}

export interface ScheduledCapacity {
  /** Index of the winning schedule entry. */
  index: number;
  minHosts?: number;
  maxHosts?: number;
  headroomSlots?: number;
}

const MINUTE = 60_000;

/** The capacity the schedules set at this time, or undefined outside every period. */
export function capacityAt(schedules: readonly CapacitySchedule[], at: Date): ScheduledCapacity | undefined {
  // Patterns have no seconds field: test the start of the minute.
  const minute = new Date(Math.floor(at.getTime() / MINUTE) * MINUTE);
  for (let i = schedules.length - 1; i >= 0; i--) {
    const s = schedules[i]!;
    if (s.periods.some((p) => new Cron(p, { timezone: s.timezone, paused: true }).match(minute))) {
      return {
        index: i,
        ...(s.minHosts !== undefined ? { minHosts: s.minHosts } : {}),
        ...(s.maxHosts !== undefined ? { maxHosts: s.maxHosts } : {}),
        ...(s.headroomSlots !== undefined ? { headroomSlots: s.headroomSlots } : {}),
      };
    }
  }
  return undefined;
}

/** Why a period or time zone is unusable, or undefined if it is fine. */
export function periodError(pattern: string, timezone: string): string | undefined {
  if (pattern.trim().split(/\s+/).length !== 5)
    return `"${pattern}" must have 5 fields (minute hour day month weekday), e.g. "* 8-18 * * mon-fri"`;
  try {
    new Cron(pattern, { timezone, paused: true }).nextRun();
    return undefined;
  } catch (e) {
    return `"${pattern}" in ${timezone}: ${(e as Error).message}`;
  }
}

/**
 * Everything wrong with a list of schedules a planner sends (the pool's update validator and
 * the CLI call it): each problem names the field and the fix. Empty when the list is usable.
 */
export function scheduleErrors(schedules: unknown): string[] {
  if (!Array.isArray(schedules))
    return ['schedules: must be a list of { periods, timezone, minHosts?, maxHosts?, headroomSlots? }'];
  const errors: string[] = [];
  schedules.forEach((raw: unknown, i) => {
    const at = `schedules[${i}]`;
    if (typeof raw !== 'object' || raw === null)
      return errors.push(`${at}: must be an object with periods and timezone`);
    const e = raw as Record<string, unknown>;
    for (const k of Object.keys(e)) {
      if (!['periods', 'timezone', 'minHosts', 'maxHosts', 'headroomSlots'].includes(k))
        errors.push(`${at}.${k}: unknown field; use periods, timezone, minHosts, maxHosts or headroomSlots`);
    }
    const tz = e.timezone ?? 'UTC';
    if (typeof tz !== 'string' || tz.length === 0) errors.push(`${at}.timezone: an IANA time zone, e.g. Europe/Berlin`);
    if (!Array.isArray(e.periods) || e.periods.length === 0 || e.periods.some((p) => typeof p !== 'string'))
      errors.push(`${at}.periods: list at least one cron period, e.g. ["* 8-18 * * mon-fri"]`);
    else if (typeof tz === 'string')
      (e.periods as string[]).forEach((p, j) => {
        const why = periodError(p, tz);
        if (why) errors.push(`${at}.periods[${j}]: ${why}`);
      });
    for (const k of ['minHosts', 'maxHosts', 'headroomSlots']) {
      const v = e[k];
      if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < 0))
        errors.push(`${at}.${k}: must be a whole number ≥ 0, got ${JSON.stringify(v)}`);
    }
    if (e.maxHosts === 0) errors.push(`${at}.maxHosts: must be at least 1`);
    if (typeof e.minHosts === 'number' && typeof e.maxHosts === 'number' && e.minHosts > e.maxHosts)
      errors.push(`${at}: minHosts ${e.minHosts} exceeds maxHosts ${e.maxHosts}: lower minHosts or raise maxHosts`);
  });
  return errors;
}
