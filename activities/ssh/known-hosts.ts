/** OpenSSH known_hosts matching, so host keys are pinned the way operators already manage them. */
import { createHmac } from 'node:crypto';

export interface KnownHostEntry {
  patterns: string[];
  keyType: string;
  key: Buffer;
  revoked: boolean;
}

export function parseKnownHosts(text: string): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const parts = line.split(/\s+/);
    let revoked = false;
    if (parts[0]?.startsWith('@')) {
      const marker = parts.shift();
      if (marker === '@cert-authority') continue; // certificates are not supported; such lines never match
      revoked = marker === '@revoked';
    }
    const [hosts, keyType, key] = parts;
    if (!hosts || !keyType || !key) continue;
    entries.push({ patterns: hosts.split(','), keyType, key: Buffer.from(key, 'base64'), revoked });
  }
  return entries;
}

/** The name OpenSSH looks up: `host` on port 22, `[host]:port` otherwise. */
export function hostKeyName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function globMatch(pattern: string, name: string): boolean {
  const re = new RegExp(
    `^${pattern
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')}$`,
    'i',
  );
  return re.test(name);
}

function patternMatches(pattern: string, name: string): boolean {
  if (pattern.startsWith('|1|')) {
    const [, , salt, hash] = pattern.split('|');
    if (!salt || !hash) return false;
    const digest = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64');
    return digest === hash;
  }
  return globMatch(pattern, name);
}

export function entriesFor(entries: KnownHostEntry[], host: string, port: number): KnownHostEntry[] {
  const name = hostKeyName(host, port);
  return entries.filter((e) => {
    const negated = e.patterns.some((p) => p.startsWith('!') && patternMatches(p.slice(1), name));
    return !negated && e.patterns.some((p) => !p.startsWith('!') && patternMatches(p, name));
  });
}

export type HostKeyVerdict = 'match' | 'mismatch' | 'unknown' | 'revoked';

export function verifyHostKey(entries: KnownHostEntry[], host: string, port: number, key: Buffer): HostKeyVerdict {
  const mine = entriesFor(entries, host, port);
  if (mine.some((e) => e.revoked && e.key.equals(key))) return 'revoked';
  const pinned = mine.filter((e) => !e.revoked);
  if (pinned.length === 0) return 'unknown';
  return pinned.some((e) => e.key.equals(key)) ? 'match' : 'mismatch';
}
