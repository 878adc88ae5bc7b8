// What the worker bundles: every workflow type Marina registers.
export { jobWorkflow } from './job';
export { poolWorkflow } from './pool';
export { hostWorkflow } from './host';
export { reconcilerWorkflow } from './reconciler';
export { leaseProbeWorkflow, bareWorkflow } from './probe';
export { standbyWorkflow } from './standby';
export { prePullWorkflow } from './prepull';
export { staticHostWorkflow } from './static-host';
export { githubScanWorkflow } from './github-scan';
