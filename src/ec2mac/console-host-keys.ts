/**
 * The SSH host keys an EC2 instance prints to its console, and the user data that makes a macOS instance print
 * them. The console is written by the instance and read through the EC2 API (GetConsoleOutput), a channel a
 * machine that merely answers at the instance's private address cannot write to: a key seen there is the
 * instance's own. Pure, so the parsing is shared by the activity, the emulator and the tests.
 */
import { createHash } from 'node:crypto';

export const KEYS_BEGIN = '-----BEGIN SSH HOST KEY KEYS-----';
export const KEYS_END = '-----END SSH HOST KEY KEYS-----';

/**
 * The user data Marina launches macOS instances with. EC2's macOS AMIs have no cloud-init, and ec2-macos-init
 * (which runs user data once per instance, as root, after the network is up) prints no host keys of its own, so
 * this prints them in the block cloud-init prints on Linux. macOS makes its host keys lazily, on the first SSH
 * connection: `ssh-keygen -A` makes any that are missing now, the same files sshd would use. No secret is in it.
 */
export const HOST_KEY_USER_DATA = `#!/bin/bash
# Marina: print this instance's SSH host public keys to the console (EC2 GetConsoleOutput), so the key SSH
# offers can be checked against one only this instance could have printed.
/usr/bin/ssh-keygen -A >/dev/null 2>&1 || true
{
  echo '${KEYS_BEGIN}'
  cat /etc/ssh/ssh_host_*_key.pub
  echo '${KEYS_END}'
} > /dev/console
`;

/** An OpenSSH public key reduced to `type base64` (comment dropped), or undefined if the line is not one. */
export function normaliseKey(line: string): string | undefined {
  const m = /^\s*((?:ssh|ecdsa|sk)-[\w@.-]+)\s+([A-Za-z0-9+/]+={0,2})(?:\s|$)/.exec(line);
  return m ? `${m[1]} ${m[2]}` : undefined;
}

/**
 * The keys of the last complete host-key block in a console output (EC2's base64 `Output`), or undefined while
 * there is none: EC2 posts nothing for minutes after a launch, and a boot still printing has no END line yet.
 * The last block wins: after a root-volume replacement the console holds the old keys above the new ones.
 */
export function consoleHostKeys(outputBase64: string | undefined): string[] | undefined {
  if (!outputBase64) return undefined;
  const text = Buffer.from(outputBase64, 'base64').toString('utf8');
  const end = text.lastIndexOf(KEYS_END);
  if (end < 0) return undefined;
  const begin = text.lastIndexOf(KEYS_BEGIN, end);
  if (begin < 0) return undefined;
  const keys = text
    .slice(begin + KEYS_BEGIN.length, end)
    .split(/\r?\n/)
    // Console lines may carry a syslog or timestamp prefix: the key starts at its type.
    .map((l) => normaliseKey(l.slice(Math.max(0, l.search(/(?:ssh|ecdsa|sk)-/)))))
    .filter((k): k is string => k !== undefined);
  return keys;
}

/** `SHA256:…`, as `ssh-keygen -l` prints it: how an operator compares keys. */
export function fingerprint(key: string): string {
  const blob = key.split(/\s+/)[1] ?? '';
  return `SHA256:${createHash('sha256').update(Buffer.from(blob, 'base64')).digest('base64').replace(/=+$/, '')}`;
}
