/** The emulator's clock: virtual time in epoch seconds, compressed (speed) and advanced by the admin API. */

/** Virtual time in epoch seconds: real time × speed, plus any explicit advance. */
export class EmulatorClock {
  private realStart = Date.now();
  private base: number;
  constructor(
    private speedFactor = 1,
    start = Date.now() / 1000,
  ) {
    this.base = start;
  }
  now(): number {
    return this.base + ((Date.now() - this.realStart) / 1000) * this.speedFactor;
  }
  get speed(): number {
    return this.speedFactor;
  }
  setSpeed(speed: number): void {
    this.base = this.now();
    this.realStart = Date.now();
    this.speedFactor = speed;
  }
  advance(seconds: number): void {
    this.base += seconds;
  }
}
