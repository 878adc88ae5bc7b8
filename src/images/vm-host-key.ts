/**
 * The SSH host key of the guest inside an image. Every VM cloned from an image answers with the key baked
 * into it (Tart clones share it), so the image's version records it and a job trusts only that key on the
 * VM's address: on Tart's shared NAT another VM can take the address, and must not receive the script,
 * its secrets or its credentials.
 */

const KEY_TYPES = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256',
  'ssh-rsa',
];
const KEY = /^([a-z0-9-]+) ([A-Za-z0-9+/]+={0,2})$/;

/** True for a normalised key, `<type> <base64>`. */
export const isVmHostKey = (key: string): boolean => {
  const m = KEY.exec(key);
  return m !== null && KEY_TYPES.includes(m[1]!);
};

/**
 * Reads a public key as an operator has it: a `.pub` file (`type key comment`), or a line of
 * `ssh-keyscan` output (`host type key`). Returns `<type> <base64>`; throws naming what is wrong.
 */
export function parseVmHostKey(text: string): string {
  for (const line of text.split('\n')) {
    const words = line.trim().split(/\s+/);
    if (words.length < 2 || line.trim().startsWith('#')) continue;
    const at = KEY_TYPES.includes(words[0]!) ? 0 : KEY_TYPES.includes(words[1]!) ? 1 : -1;
    if (at < 0) continue;
    const key = `${words[at]} ${words[at + 1] ?? ''}`;
    if (isVmHostKey(key)) return key;
  }
  throw new Error(
    "no SSH public key found: give the guest's host key as a .pub file or `ssh-keyscan -t ed25519 <vm ip>` output",
  );
}
