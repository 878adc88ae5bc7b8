/** Seeded randomness the EC2 Mac model draws from (scrub durations, faults): shared by the simulator and the emulator. */
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';

/** A seeded uniform source in [0, 1): the same seed gives the same simulation. */
export type Uniform = () => number;

export function seeded(seed: number): Uniform {
  const rng = xoroshiro128plus(seed);
  // The first draw of a fresh generator is poorly mixed for small seeds; skip it.
  uniformFloat64(rng);
  return () => uniformFloat64(rng);
}

/** A seeded uniform source whose position can be saved and put back (the emulator's DryRun undoes its draws). */
export interface RestorableUniform {
  draw: Uniform;
  save(): unknown;
  restore(saved: unknown): void;
}

export function restorableSeeded(seed: number): RestorableUniform {
  let rng = xoroshiro128plus(seed);
  uniformFloat64(rng);
  return {
    draw: () => uniformFloat64(rng),
    save: () => rng.clone(),
    restore: (saved) => {
      rng = (saved as typeof rng).clone();
    },
  };
}
