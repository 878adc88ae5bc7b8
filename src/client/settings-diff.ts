/**
 * The difference between two pool settings, as `marina pool apply` shows it before sending: one line per
 * changed leaf. Lists of named things (hosts, standby specs) are matched by name, so adding a host reads
 * as one added host, not as every later host shifted by one.
 */
export interface SettingsChange {
  path: string;
  kind: 'added' | 'removed' | 'changed';
  from?: unknown;
  to?: unknown;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const named = (v: unknown): v is { name: string }[] =>
  Array.isArray(v) && v.length > 0 && v.every((x) => isObject(x) && typeof x.name === 'string');
const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

export function settingsDiff(from: unknown, to: unknown, path = ''): SettingsChange[] {
  if (same(from, to)) return [];
  if (from === undefined) return [{ path, kind: 'added', to }];
  if (to === undefined) return [{ path, kind: 'removed', from }];
  if (isObject(from) && isObject(to)) {
    const keys = [...new Set([...Object.keys(from), ...Object.keys(to)])].sort();
    return keys.flatMap((k) => settingsDiff(from[k], to[k], path ? `${path}.${k}` : k));
  }
  if (
    (named(from) || (Array.isArray(from) && from.length === 0)) &&
    (named(to) || (Array.isArray(to) && to.length === 0))
  ) {
    const a = new Map((from as { name: string }[]).map((x) => [x.name, x]));
    const b = new Map((to as { name: string }[]).map((x) => [x.name, x]));
    const names = [...new Set([...a.keys(), ...b.keys()])];
    return names.flatMap((n) => settingsDiff(a.get(n), b.get(n), `${path}[${n}]`));
  }
  return [{ path, kind: 'changed', from, to }];
}

const shown = (v: unknown): string => JSON.stringify(v) ?? 'undefined';

export function formatChange(c: SettingsChange): string {
  switch (c.kind) {
    case 'added':
      return `+ ${c.path}: ${shown(c.to)}`;
    case 'removed':
      return `- ${c.path}: ${shown(c.from)}`;
    case 'changed':
      return `~ ${c.path}: ${shown(c.from)} -> ${shown(c.to)}`;
  }
}
