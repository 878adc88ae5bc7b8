/**
 * Request checks EC2 makes before it looks anything up, with EC2's codes (ec2-mac.md §2.3, AWS's error-code
 * list): a missing required parameter (`MissingParameter`), an id that cannot be an id (`…Malformed`, not
 * `…NotFound`), and a NextToken this endpoint never issued (`InvalidParameterValue`, as EC2's Describe calls
 * answer a bad token in the field; AWS's list also has `InvalidNextToken`).
 */
import { createHmac, randomBytes } from 'node:crypto';
import { Ec2Error, members, type Params } from './wire';

/** A parameter the action cannot do without. */
export function required(p: Params, name: string): string {
  const v = p.get(name);
  if (v === null || v === '') throw missing(name);
  return v;
}

/** A list (`Prefix.N`) the action needs at least one member of. `wireName` is how EC2's message names it. */
export function requiredMembers(p: Params, prefix: string, wireName = prefix): string[] {
  const v = members(p, prefix);
  // `--instance-ids ''` sends `InstanceId.1=`: EC2 answers that as missing too.
  if (v.length === 0 || v.every((x) => x === '')) throw missing(wireName);
  return v;
}

/** An optional list, where a list of only empty values (`HostId.1=`) is missing, as EC2 takes it. */
export function optionalMembers(p: Params, prefix: string): string[] {
  const v = members(p, prefix);
  return v.length > 0 && v.every((x) => x === '') ? requiredMembers(p, prefix) : v;
}

const missing = (name: string): Ec2Error =>
  new Ec2Error('MissingParameter', `The request must contain the parameter ${name}`);

// AWS ids: the prefix, then 8 (old) or 17 (current) hex digits.
const ID = (prefix: string): RegExp => new RegExp(`^${prefix}-(?:[0-9a-f]{8}|[0-9a-f]{17})$`);
const HOST_ID = ID('h');
const INSTANCE_ID = ID('i');

/**
 * A host id must look like one before EC2 looks for it. AWS's list has both `InvalidHostID.Malformed` and
 * `InvalidHostId.Malformed`; the emulator answers the second, the spelling of DescribeHosts' own model.
 */
export function checkHostId(id: string): string {
  if (!HOST_ID.test(id))
    throw new Ec2Error('InvalidHostId.Malformed', `Invalid id: "${id}" (expecting "h-" and 17 hex digits)`);
  return id;
}

export function checkInstanceId(id: string): string {
  if (!INSTANCE_ID.test(id))
    throw new Ec2Error('InvalidInstanceID.Malformed', `Invalid id: "${id}" (expecting "i-" and 17 hex digits)`);
  return id;
}

/** CreateTags takes any resource id; one that is no id at all is `InvalidID`. */
export function checkResourceId(id: string): string {
  if (id.startsWith('h-')) return checkHostId(id);
  if (id.startsWith('i-')) return checkInstanceId(id);
  if (!/^[a-z]+-[0-9a-f]{8,17}$/.test(id)) throw new Ec2Error('InvalidID', `The ID '${id}' is not valid`);
  return id;
}

/**
 * NextTokens this endpoint issues: the offset, sealed with a per-emulator key and tied to the action and query
 * it continues, so a token it never issued (or one for another query) is refused as EC2 refuses it, instead of
 * silently starting again from page 1. Stateless: nothing to expire or bound.
 */
export class PageTokens {
  private readonly key = randomBytes(16);

  private seal(body: string): string {
    return createHmac('sha256', this.key).update(body).digest('base64url').slice(0, 22);
  }

  /** What ties a token to its query: every parameter but the paging ones. */
  private static query(action: string, p: Params): string {
    return JSON.stringify([
      action,
      [...p]
        .filter(([k]) => k !== 'NextToken' && k !== 'MaxResults' && k !== 'Action' && k !== 'Version')
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    ]);
  }

  issue(action: string, p: Params, offset: number): string {
    const body = `${offset}`;
    return `${Buffer.from(body).toString('base64url')}.${this.seal(`${PageTokens.query(action, p)}/${body}`)}`;
  }

  /** The offset a request's NextToken stands for (0 without one; EC2 takes an empty token as none). */
  offset(action: string, p: Params): number {
    const token = p.get('NextToken');
    if (!token) return 0;
    const [b64, mac] = token.split('.');
    const body = b64 ? Buffer.from(b64, 'base64url').toString() : '';
    if (!/^\d+$/.test(body) || mac !== this.seal(`${PageTokens.query(action, p)}/${body}`)) {
      throw new Ec2Error(
        'InvalidParameterValue',
        `Value (${token}) for parameter NextToken is invalid. The token is invalid.`,
      );
    }
    return Number(body);
  }
}
