import { Connection, Client } from '@temporalio/client';
(async () => {
  const client = new Client({ connection: await Connection.connect({ address: `127.0.0.1:${process.argv[2]}` }) });
  const h = await client.workflow.getHandle(process.argv[3]!).fetchHistory();
  const types = new Map<string, number>();
  for (const e of h.events ?? []) types.set(String(e.eventType), (types.get(String(e.eventType)) ?? 0) + 1);
  console.log([...types].map(([t, n]) => `${t}:${n}`).join(' '));
  const sig = new Map<string, number>();
  for (const e of h.events ?? []) { const n = e.workflowExecutionSignaledEventAttributes?.signalName; if (n) sig.set(n, (sig.get(n) ?? 0) + 1); }
  console.log([...sig].map(([t, n]) => `${t}:${n}`).join(' '));
  const last = (h.events ?? []).slice(-8).map((e) => `${e.eventId} ${e.eventType} ${e.eventTime?.seconds}`);
  console.log(last.join('\n'));
  process.exit(0);
})();
