/**
 * The emulator's admin API under /_emulator/ (not EC2-shaped; for tests and operators): the clock, the
 * windows, fault injection, host health, eventual consistency, IAM refusals and the billing ledger. Every
 * input is checked: a bad one gets a JSON 400 naming the field and what it takes, never a plain-text 500.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { normaliseKey } from '../../ec2mac/console-host-keys';
import type { EmulatorClock } from './clock';
import type { Ec2MacCloud } from './cloud';
import { DEFAULT_EMULATOR_TIMINGS, type ConsoleRule, type EmulatorTimings } from './resources';
import { Ec2Error } from './wire';

export interface Faults {
  /** Share of requests answered 503 RequestLimitExceeded. */
  throttleRate: number;
  /** Share answered 500 InternalError. */
  serverErrorRate: number;
  /** Share whose effect is committed and whose answer is lost (the connection is reset). */
  dropAfterCommitRate: number;
  /** Added latency per request before it is served, ms. */
  slowMs: number;
  /** Delay between committing a request's effect and answering it, ms: a window to kill the caller in. */
  holdAfterCommitMs: number;
  /** Only these actions (all when empty). */
  actions: string[];
  seed: number;
}

export const NO_FAULTS: Faults = {
  throttleRate: 0,
  serverErrorRate: 0,
  dropAfterCommitRate: 0,
  slowMs: 0,
  holdAfterCommitMs: 0,
  actions: [],
  seed: 1,
};

/** What the admin API works on: the server's state besides the cloud. */
export interface AdminTarget {
  cloud: Ec2MacCloud;
  clock: EmulatorClock;
  faults(): Faults;
  setFaults(f: Partial<Faults>): void;
  pageCap: number;
  /** Actions answered UnauthorizedOperation (403), as EC2 answers a caller whose IAM policy lacks them. */
  denied: Set<string>;
  /** Brings the instances' SSH servers in line with the cloud (after a vanish). */
  syncSsh(): void;
}

/** A bad admin request: answered 400 (or `status`) with this message as JSON. */
class AdminError extends Error {
  constructor(
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

/** AWS's health states a host can be put in by AWS (and back). */
export const HEALTH_STATES = ['available', 'under-assessment', 'permanent-failure'] as const;
type Health = (typeof HEALTH_STATES)[number];

type Input = Record<string, unknown>;

function only(input: Input, allowed: readonly string[], path: string): void {
  const unknown = Object.keys(input).filter((k) => !allowed.includes(k));
  if (unknown.length)
    throw new AdminError(`${path}: unknown field(s) ${unknown.join(', ')}; it takes ${allowed.join(', ')}`);
}

function num(input: Input, key: string, check: (n: number) => boolean, takes: string): number | undefined {
  const v = input[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || !check(v))
    throw new AdminError(`${key} must be ${takes}, got ${JSON.stringify(v)}`);
  return v;
}

const nonNegative = (n: number): boolean => n >= 0;
const share = (n: number): boolean => n >= 0 && n <= 1;

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function parse(req: IncomingMessage): Promise<Input> {
  const text = req.method === 'POST' ? await readBody(req) : '';
  if (!text.trim()) return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new AdminError(`the request body is not JSON (${(e as Error).message}); send an object, e.g. {"speed": 60}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new AdminError(`the request body must be a JSON object, got ${Array.isArray(v) ? 'an array' : typeof v}`);
  return v as Input;
}

const TIMING_KEYS = Object.keys(DEFAULT_EMULATOR_TIMINGS) as (keyof EmulatorTimings)[];

/** New timings for the windows (`{"occupiedSeconds": 1200}`), each checked; the scrub a [min, max] pair. */
function timings(input: Input, current: EmulatorTimings): EmulatorTimings {
  only(input, TIMING_KEYS, '/_emulator/timings');
  const next = { ...current, scrubSeconds: [...current.scrubSeconds] as [number, number] };
  for (const k of TIMING_KEYS) {
    if (input[k] === undefined) continue;
    if (k === 'scrubSeconds') {
      const v = input[k];
      if (!Array.isArray(v) || v.length !== 2 || !v.every((x) => typeof x === 'number' && x >= 0) || v[0] > v[1])
        throw new AdminError(`scrubSeconds must be [min, max] seconds with 0 ≤ min ≤ max, got ${JSON.stringify(v)}`);
      next.scrubSeconds = [v[0] as number, v[1] as number];
    } else {
      next[k] = num(input, k, nonNegative, 'a number of seconds ≥ 0')!;
    }
  }
  return next;
}

function faultsPatch(input: Input): Partial<Faults> {
  only(input, Object.keys(NO_FAULTS), '/_emulator/faults');
  const out: Partial<Faults> = {};
  for (const k of ['throttleRate', 'serverErrorRate', 'dropAfterCommitRate'] as const) {
    const v = num(input, k, share, 'a share between 0 and 1');
    if (v !== undefined) out[k] = v;
  }
  for (const k of ['slowMs', 'holdAfterCommitMs'] as const) {
    const v = num(input, k, nonNegative, 'a number of milliseconds ≥ 0');
    if (v !== undefined) out[k] = v;
  }
  const seed = num(input, 'seed', Number.isInteger, 'an integer');
  if (seed !== undefined) out.seed = seed;
  if (input.actions !== undefined) {
    if (!Array.isArray(input.actions) || !input.actions.every((a) => typeof a === 'string'))
      throw new AdminError(`actions must be a list of EC2 action names, e.g. ["RunInstances"], got ${JSON.stringify(input.actions)}`);
    out.actions = input.actions as string[];
  }
  return out;
}

const PATHS =
  'GET /_emulator/ledger, /_emulator/clock {advanceSeconds, speed}, /_emulator/timings {occupiedSeconds, settleSeconds, …}, ' +
  '/_emulator/faults, /_emulator/consistency {hostMs, instanceMs}, /_emulator/root-volume {failNext}, ' +
  '/_emulator/iam {deny: [actions]}, /_emulator/hosts/<id>/health {state}, POST /_emulator/hosts/<id>/vanish, ' +
  'POST /_emulator/console, POST /_emulator/paging {maxItems}';

async function route(t: AdminTarget, req: IncomingMessage, path: string): Promise<unknown> {
  const input = await parse(req);
  const { cloud, clock } = t;
  if (path === '/_emulator/ledger') return cloud.ledger();
  if (path === '/_emulator/clock') {
    only(input, ['advanceSeconds', 'speed'], path);
    const advance = num(input, 'advanceSeconds', nonNegative, 'a number of seconds ≥ 0 (the clock never runs backwards)');
    const speed = num(input, 'speed', (n) => n > 0, 'a number > 0 (virtual seconds per real second)');
    if (advance !== undefined) clock.advance(advance);
    if (speed !== undefined) clock.setSpeed(speed);
    return { now: new Date(clock.now() * 1000).toISOString(), speed: clock.speed };
  }
  if (path === '/_emulator/timings') {
    cloud.settle(); // what happened under the old windows stays
    cloud.options.timings = timings(input, cloud.options.timings);
    return cloud.options.timings;
  }
  if (path === '/_emulator/consistency') {
    only(input, ['hostMs', 'instanceMs'], path);
    for (const k of ['hostMs', 'instanceMs'] as const) {
      const v = num(input, k, nonNegative, 'a number of real milliseconds ≥ 0 (0: off)');
      if (v !== undefined) cloud.consistency[k] = v;
    }
    return cloud.consistency;
  }
  if (path === '/_emulator/root-volume') {
    only(input, ['failNext'], path);
    const n = num(input, 'failNext', (x) => Number.isInteger(x) && x >= 0, 'a whole number ≥ 0');
    if (n !== undefined) cloud.failRootVolumeTasks = n;
    return { failNext: cloud.failRootVolumeTasks };
  }
  if (path === '/_emulator/iam') {
    only(input, ['deny'], path);
    if (input.deny !== undefined) {
      if (!Array.isArray(input.deny) || !input.deny.every((a) => typeof a === 'string'))
        throw new AdminError(`deny must be a list of EC2 action names, e.g. ["TerminateInstances"], got ${JSON.stringify(input.deny)}`);
      t.denied.clear();
      for (const a of input.deny as string[]) t.denied.add(a);
    }
    return { deny: [...t.denied] };
  }
  // Tests: what instances print to their console (another host key, or nothing), by instance id or tag.
  if (path === '/_emulator/console' && req.method === 'POST') {
    if (input.clear === true) {
      cloud.consoleRules = [];
      return { rules: [] };
    }
    const rule = input as ConsoleRule;
    if (rule.hostKey !== undefined && !normaliseKey(rule.hostKey))
      throw new AdminError('hostKey must be an OpenSSH public key, e.g. "ssh-ed25519 AAAA…"');
    if (!rule.instanceId && !rule.tag) throw new AdminError('name an instanceId or a tag {key, value}');
    cloud.consoleRules.unshift({
      ...(rule.instanceId ? { instanceId: rule.instanceId } : {}),
      ...(rule.tag ? { tag: rule.tag } : {}),
      ...(rule.hostKey ? { hostKey: normaliseKey(rule.hostKey)! } : {}),
      ...(rule.empty === true ? { empty: true } : {}),
    });
    return { rules: cloud.consoleRules };
  }
  // Tests: EC2 answers at most this many items per Describe page (1000 on AWS).
  if (path === '/_emulator/paging' && req.method === 'POST') {
    only(input, ['maxItems'], path);
    const n = num(input, 'maxItems', (x) => Number.isInteger(x) && x >= 1, 'a whole number ≥ 1');
    if (n !== undefined) t.pageCap = n;
    return { maxItems: t.pageCap };
  }
  if (path === '/_emulator/faults') {
    if (Object.keys(input).length) t.setFaults(faultsPatch(input));
    return t.faults();
  }
  const health = /^\/_emulator\/hosts\/([^/]+)\/health$/.exec(path);
  if (health) {
    only(input, ['state'], path);
    const state = input.state;
    if (!HEALTH_STATES.includes(state as Health))
      throw new AdminError(`state must be one of ${HEALTH_STATES.join(', ')} (AWS's health states), got ${JSON.stringify(state)}`);
    cloud.setHostHealth(health[1]!, state as Health);
    return { hostId: health[1], state };
  }
  // Released behind Marina's back (release-hosts by someone else, or AWS reclaiming it).
  const vanish = /^\/_emulator\/hosts\/([^/]+)\/vanish$/.exec(path);
  if (vanish && req.method === 'POST') {
    only(input, ['keepListed'], path);
    const out = cloud.vanishHost(vanish[1]!, input.keepListed === true);
    t.syncSsh();
    return out;
  }
  throw new AdminError(`unknown admin path ${path}; try ${PATHS}`, 404);
}

/** Serves one admin request; every answer is JSON. */
export async function serveAdmin(t: AdminTarget, req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
  const json = (status: number, v: unknown): void => {
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(v, null, 2));
  };
  try {
    json(200, await route(t, req, path));
  } catch (e) {
    if (e instanceof AdminError) return json(e.status, { error: e.message });
    // The cloud refused (an unknown or released host): the resource is what is wrong.
    if (e instanceof Ec2Error) return json(e.code.endsWith('NotFound') ? 404 : 409, { error: e.message, code: e.code });
    json(500, { error: (e as Error).message });
  }
}
