/** Registers workflow handlers with the description of their message (definitions.ts), for the Web UI. */
import { setHandler } from '@temporalio/workflow';
import { HANDLER_DESCRIPTIONS } from './definitions';

/** `setHandler`, with the handler's description filled in from HANDLER_DESCRIPTIONS by the message's name. */
export const setDescribedHandler = ((def: { name: string }, handler: unknown, options?: object) =>
  (setHandler as (d: unknown, h: unknown, o?: object) => void)(def, handler, {
    ...options,
    description: HANDLER_DESCRIPTIONS[def.name],
  })) as typeof setHandler;
