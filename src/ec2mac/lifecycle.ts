/**
 * The words for a host's phases, tied to the EC2 Mac machine (machine.ts): the host workflow's
 * phases are named after the machine state each waits in, and the fleet policy's coarser phases
 * (kept in the pool's records and signals, so old histories and running pools still read them)
 * are a function of the machine state. One table each, so no layer invents its own meaning.
 */
import type { FleetPhase } from '../domain/pool';
import type { MacState } from './machine';

/** How the fleet policy sees a machine state: `idle` is a host `available` with no instance (parked). */
export function fleetPhaseOfMac(s: MacState): FleetPhase {
  switch (s) {
    case 'allocating':
      return 'allocating';
    case 'available':
      return 'idle';
    case 'launching':
    case 'booting':
      return 'launching';
    case 'running':
      return 'ready';
    case 'replacing':
      return 'replacing';
    case 'stopping':
    case 'scrubbing':
    case 'settling':
      return 'pending';
    case 'released':
      return 'released';
  }
}

/** The host workflow's live phases (workflows/host.ts), each with the machine state it waits in. */
export const HOST_WORKFLOW_PHASE_STATE = {
  allocating: 'allocating',
  'waiting-available': 'allocating',
  launching: 'launching',
  booting: 'booting',
  ready: 'running',
  'replacing-root': 'replacing',
  parking: 'stopping',
  scrubbing: 'scrubbing',
  parked: 'available',
} as const satisfies Record<string, MacState>;

export type HostWorkflowLivePhase = keyof typeof HOST_WORKFLOW_PHASE_STATE;

/**
 * How the fleet policy sees a host workflow's phase: through its machine state. An instance
 * launched only to be terminated (parking a host that has none) is already on its way to the scrub.
 */
export function fleetPhaseOfWorkflow(phase: string, parkOnLaunch: boolean): FleetPhase | undefined {
  const s = (HOST_WORKFLOW_PHASE_STATE as Record<string, MacState | undefined>)[phase];
  if (s === undefined) return undefined;
  if (parkOnLaunch && (s === 'launching' || s === 'booting')) return 'pending';
  return fleetPhaseOfMac(s);
}
