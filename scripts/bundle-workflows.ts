/**
 * Writes the workflow bundle that `marina worker` loads when MARINA_WORKFLOW_BUNDLE names it, so a worker starts
 * without bundling (the Docker image runs this at build time):
 *   node --import tsx scripts/bundle-workflows.ts [out]     (default: dist/workflow-bundle.js)
 */
import { resolve } from 'node:path';
import { writeWorkflowBundle } from '../src/workflow-bundle';

const out = resolve(process.argv[2] ?? 'dist/workflow-bundle.js');
writeWorkflowBundle(out).then(
  (bytes) => console.log(`workflow bundle: ${out} (${(bytes / 1024).toFixed(0)} KiB)`),
  (e: unknown) => {
    console.error(`workflow bundle: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  },
);
