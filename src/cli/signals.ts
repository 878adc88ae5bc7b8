/**
 * SIGINT and SIGTERM for the long-running commands (`run`, `dev`, `worker`). The first asks for an
 * orderly stop; a second one means "now". The Temporal SDK's own signal hooks must be off
 * (`Runtime.install({ shutdownSignals: [] })`): they would race ours and then swallow later signals.
 */
export const SIGNAL_EXIT_CODES = { SIGINT: 130, SIGTERM: 143 } as const;
export type StopSignal = keyof typeof SIGNAL_EXIT_CODES;

export function onStopSignals(first: (sig: StopSignal) => void, again: (sig: StopSignal) => void): () => void {
  let seen = false;
  const handler = (sig: StopSignal) => {
    if (seen) return again(sig);
    seen = true;
    first(sig);
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, handler);
  return () => {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.off(sig, handler);
  };
}
