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
