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
