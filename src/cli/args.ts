/** Parsing of CLI values, with errors that say which flag and how to fix it. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export function parseDuration(flag: string, v: string): number {
  const m = /^(\d+(?:\.\d+)?)(s|m|h|d)?$/.exec(v.trim());
  if (!m) throw new UsageError(`${flag}: "${v}" is not a duration; use seconds or a unit, e.g. 90, 90s, 30m, 2h`);
  const n = Number(m[1]);
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] ?? 's') as 's' | 'm' | 'h' | 'd'];
  return n * unit;
}

export function parsePairs(flag: string, values: string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values ?? []) {
    const i = v.indexOf('=');
    if (i <= 0) throw new UsageError(`${flag}: "${v}" must be KEY=VALUE`);
    out[v.slice(0, i)] = v.slice(i + 1);
  }
  return out;
}

export function parseNumberPairs(flag: string, values: string[] | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(parsePairs(flag, values))) {
    const n = Number(v);
    if (!Number.isFinite(n)) throw new UsageError(`${flag}: "${k}=${v}" needs a number, e.g. ${k}=1`);
    out[k] = n;
  }
  return out;
}

export const collect = (v: string, prev: string[] = []): string[] => [...prev, v];
