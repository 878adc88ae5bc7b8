/**
 * A Temporal failure in one line, down to its root: "Workflow execution failed" and "Activity task failed" wrap
 * the part that says what happened (which host, which SSH error), so every message in the cause chain is kept.
 */
export function failureText(e: unknown): string {
  const messages: string[] = [];
  for (let c: unknown = e; c instanceof Error && messages.length < 6; c = (c as { cause?: unknown }).cause)
    if (c.message && !messages.includes(c.message)) messages.push(c.message);
  return messages.join(': ') || String(e);
}
