/**
 * Where a host keeps VMs, per hypervisor: a job's clone and a pulled image are folders there, and the
 * disk sits at the same place inside each, so a cached version seeds the next pull and a job's VM
 * pushes as a delta against the version it was cloned from.
 */
import type { Hypervisor } from '../../src/config/schema';
import { PVM_DISK } from '../../src/images/chunked/pvm';
import { VM_DISK } from '../../src/images/chunked/vm-files';
import { PARALLELS_VMS } from './parallels';

export interface VmLayout {
  kind: Hypervisor;
  /** The folder of VM `name`. */
  dir(name: string): string;
  /** The disk's path inside a VM folder (what the chunked store chunks). */
  disk: string;
}

export function vmLayout(kind: Hypervisor, home: string, tartHome: string): VmLayout {
  if (kind === 'parallels')
    // `prlctl clone --dst ~/Parallels` and a pull's rename both make `<name>.pvm` there.
    return { kind, dir: (name) => `${home}/${PARALLELS_VMS}/${name}.pvm`, disk: PVM_DISK };
  return { kind, dir: (name) => `${tartHome}/vms/${name}`, disk: VM_DISK };
}

export { imageHypervisor } from '../../src/images/chunked/pvm';
