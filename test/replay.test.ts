/**
 * Upgrades: every history committed under test/histories/<release>/ (recorded by the suite with
 * MARINA_RECORD_HISTORIES=<release>) must replay against this build. A workflow change that would
 * break a pool, host or job running across an upgrade fails here; guard it with patched().
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Worker } from '@temporalio/worker';
import { temporal } from '@temporalio/proto';
import { stack } from './helpers';

const ROOT = join(__dirname, 'histories');

function committed(): Array<{ file: string; workflowId: string; workflowType: string; history: string }> {
  const out = [];
  for (const release of readdirSync(ROOT).filter((d) => statSync(join(ROOT, d)).isDirectory())) {
    for (const f of readdirSync(join(ROOT, release)).filter((x) => x.endsWith('.json'))) {
      const h = JSON.parse(readFileSync(join(ROOT, release, f), 'utf8')) as {
        workflowId: string;
        workflowType: string;
        history: string;
      };
      out.push({ file: `${release}/${f}`, ...h });
    }
  }
  return out;
}

describe('upgrade safety', () => {
  const histories = committed();

  it('has histories of every long-lived workflow type to replay', () => {
    const types = new Set(histories.map((h) => h.workflowType));
    for (const t of ['poolWorkflow', 'hostWorkflow', 'staticHostWorkflow', 'jobWorkflow']) expect(types).toContain(t);
  });

  it.each(histories.map((h) => [h.file, h] as const))('replays %s against this build', async (_file, h) => {
    const history = temporal.api.history.v1.History.decode(Buffer.from(h.history, 'base64'));
    await Worker.runReplayHistory({ workflowBundle: { codePath: stack().bundlePath } }, history, h.workflowId);
  });
});
