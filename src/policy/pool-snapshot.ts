/**
 * A pool's state as it crosses continue-as-new: packed and cut into parts, so that no payload
 * comes near Temporal's limits (a warning at 256 KB, an error at 2 MB for the whole input) even
 * with the queue at its limit. Queued requests and leases are rows of a few fields; what many
 * share (resources, labels, client, image, volumes) is written once and referred to by index.
 */
import type { Lease, LeaseRequest, OutboxEntry, PoolState } from '../domain/pool';

/** Rows per part: ~40 bytes a queued request, ~110 a lease, so a part stays well under 256 KB. */
export const ROWS_PER_PART = 1500;

type Shape = Omit<LeaseRequest, 'jobWorkflowId' | 'requestedAt'>;
type LeaseShape = Omit<Lease, 'leaseId' | 'jobWorkflowId' | 'host' | 'grantedAt'>;

export interface PoolStatePart {
  /** Requests: [jobWorkflowId, requestedAt - base, shape]; leases: [leaseId, jobWorkflowId, host, grantedAt - base, shape]. */
  kind: 'queue' | 'leases' | 'outbox';
  base: number;
  shapes: string[];
  rows: Array<Array<string | number>>;
}

export interface PackedPoolState {
  /** The state without its queue, leases and outbox, which travel as parts. */
  rest: Omit<PoolState, 'queue' | 'leases' | 'outbox'>;
}

function intern(shapes: string[], index: Map<string, number>, shape: object): number {
  const key = JSON.stringify(shape);
  let i = index.get(key);
  if (i === undefined) {
    i = shapes.length;
    shapes.push(key);
    index.set(key, i);
  }
  return i;
}

function cut<T>(rows: T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < rows.length; i += ROWS_PER_PART) out.push(rows.slice(i, i + ROWS_PER_PART));
  return out;
}

export function packState(state: PoolState): { packed: PackedPoolState; parts: PoolStatePart[] } {
  const { queue, leases, outbox, ...rest } = state;
  const parts: PoolStatePart[] = [];
  // Messages not yet delivered (grants of ~300 bytes): as JSON rows, fewer per part.
  for (let i = 0; i < (outbox ?? []).length; i += ROWS_PER_PART / 3)
    parts.push({
      kind: 'outbox',
      base: 0,
      shapes: [],
      rows: outbox!.slice(i, i + ROWS_PER_PART / 3).map((e) => [JSON.stringify(e)]),
    });
  for (const chunk of cut(queue)) {
    const shapes: string[] = [];
    const index = new Map<string, number>();
    const base = Math.min(...chunk.map((q) => q.requestedAt));
    parts.push({
      kind: 'queue',
      base,
      shapes,
      rows: chunk.map(({ jobWorkflowId, requestedAt, ...shape }) => [
        jobWorkflowId,
        requestedAt - base,
        intern(shapes, index, shape),
      ]),
    });
  }
  for (const chunk of cut(leases)) {
    const shapes: string[] = [];
    const index = new Map<string, number>();
    const base = Math.min(...chunk.map((l) => l.grantedAt));
    parts.push({
      kind: 'leases',
      base,
      shapes,
      rows: chunk.map(({ leaseId, jobWorkflowId, host, grantedAt, ...shape }) => [
        leaseId,
        jobWorkflowId,
        host,
        grantedAt - base,
        intern(shapes, index, shape),
      ]),
    });
  }
  return { packed: { rest }, parts };
}

export function unpackState(packed: PackedPoolState, parts: readonly PoolStatePart[]): PoolState {
  const queue: LeaseRequest[] = [];
  const leases: Lease[] = [];
  const outbox: OutboxEntry[] = [];
  for (const p of parts) {
    if (p.kind === 'outbox') {
      for (const r of p.rows) outbox.push(JSON.parse(r[0] as string) as OutboxEntry);
      continue;
    }
    const shapes = p.shapes.map((s) => JSON.parse(s) as Shape & LeaseShape);
    for (const r of p.rows) {
      if (p.kind === 'queue') {
        queue.push({
          jobWorkflowId: r[0] as string,
          requestedAt: p.base + (r[1] as number),
          ...shapes[r[2] as number]!,
        });
      } else {
        leases.push({
          leaseId: r[0] as string,
          jobWorkflowId: r[1] as string,
          host: r[2] as string,
          grantedAt: p.base + (r[3] as number),
          ...shapes[r[4] as number]!,
        } as Lease);
      }
    }
  }
  return { ...packed.rest, queue, leases, outbox } as PoolState;
}
