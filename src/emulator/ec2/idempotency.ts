/** ClientToken idempotency, as EC2 keeps it (ec2-mac.md §1.2): per action, per token, for the account. */
import { Ec2Error } from './wire';

export interface TokenRecord {
  action: string;
  fingerprint: string;
  result: string[];
}

/** `action/token` → what the first call with it made. A plain map: DryRun copies and puts it back. */
export type TokenRecords = Map<string, TokenRecord>;

/** A token seen before returns its result (nothing new is made), or refuses different parameters. */
export function idempotent(
  records: TokenRecords,
  action: string,
  token: string | undefined,
  fingerprint: string,
  make: () => string[],
): string[] {
  if (!token) return make();
  if (token.length > 64) throw new Ec2Error('InvalidClientToken', 'The client token must be at most 64 ASCII characters.');
  const key = `${action}/${token}`;
  const seen = records.get(key);
  if (seen) {
    if (seen.fingerprint !== fingerprint)
      throw new Ec2Error('IdempotentParameterMismatch', `The client token ${token} was used with different parameters.`);
    return seen.result;
  }
  const result = make();
  records.set(key, { action, fingerprint, result });
  return result;
}
