// The server-wide Bit-FLOPs target (--target-bitflops, mean per image): a feedback controller on the knob λ.
// The bundle's calibration table (knob -> mean Bit-FLOPs on its test set) gives the feed-forward map f(λ);
// the input mix in production differs from the test set, and changes, so two corrections are fed back:
//   d  an exponential average (time constant `window` images) of x − f(λ_used): how much costlier the current
//      mix is than the table says at the λ it ran with (a disturbance observer: reacts within ~window images);
//   E  the cumulative error Σ (x − target) since start, spread over `window` images: pulls the long-run
//      mean back onto the target after any transient (integral action, no steady-state offset).
// λ = f⁻¹(target − d − E/window), clamped to the table's knob range (outside it the target is not reachable).
// E stops growing while the demand is beyond the table's range (anti-windup): while the target is out of
// reach, error would otherwise pile up and pin λ at the end of the table long after the mix came back.
export interface CalibrationPoint {
  readonly knob: number;
  readonly mean_bitflops: number;
}

export interface TargetState {
  readonly target: number;
  readonly knob: number;
  readonly runningMean: number;
}

export class TargetController {
  readonly target: number;
  private readonly table: CalibrationPoint[];
  private readonly minMean: number;
  private readonly maxMean: number;
  private readonly window: number;
  private readonly alpha: number;
  private disturbance = 0;
  private cumulativeError = 0;
  private lambda: number;
  private readonly recent: Float64Array;
  private recentCount = 0;
  private recentSum = 0;
  private recentAt = 0;

  constructor(target: number, calibration: readonly CalibrationPoint[], window = 256) {
    if (!(target > 0) || !Number.isFinite(target)) throw new RangeError('target must be a positive number');
    if (calibration.length < 2) throw new RangeError('a calibration table needs at least two knob values');
    this.target = target;
    this.table = [...calibration].sort((a, b) => a.knob - b.knob);
    this.minMean = Math.min(...calibration.map((p) => p.mean_bitflops));
    this.maxMean = Math.max(...calibration.map((p) => p.mean_bitflops));
    this.window = window;
    this.alpha = 2 / (window + 1);
    this.recent = new Float64Array(window);
    this.lambda = this.inverse(target);
  }

  /** The λ to apply to the next image. */
  get knob(): number {
    return this.lambda;
  }

  get state(): TargetState {
    return { target: this.target, knob: this.lambda, runningMean: this.recentCount ? this.recentSum / this.recentCount : 0 };
  }

  /** The calibration table's mean Bit-FLOPs at λ (piecewise linear, flat outside the table). */
  predict(knob: number): number {
    const t = this.table;
    if (knob <= (t[0] as CalibrationPoint).knob) return (t[0] as CalibrationPoint).mean_bitflops;
    for (let i = 1; i < t.length; i++) {
      const a = t[i - 1] as CalibrationPoint;
      const b = t[i] as CalibrationPoint;
      if (knob <= b.knob) return a.mean_bitflops + ((knob - a.knob) / (b.knob - a.knob)) * (b.mean_bitflops - a.mean_bitflops);
    }
    return (t[t.length - 1] as CalibrationPoint).mean_bitflops;
  }

  /**
   * The λ whose predicted mean is `y`: the first crossing walking up the table (mean Bit-FLOPs fall as λ rises);
   * clamped to the table's ends when y is outside its range.
   */
  inverse(y: number): number {
    const t = this.table;
    const first = t[0] as CalibrationPoint;
    const last = t[t.length - 1] as CalibrationPoint;
    if (y >= first.mean_bitflops) return first.knob;
    for (let i = 1; i < t.length; i++) {
      const a = t[i - 1] as CalibrationPoint;
      const b = t[i] as CalibrationPoint;
      if (y >= b.mean_bitflops && y <= a.mean_bitflops) {
        return a.mean_bitflops === b.mean_bitflops ? a.knob : a.knob + ((a.mean_bitflops - y) / (a.mean_bitflops - b.mean_bitflops)) * (b.knob - a.knob);
      }
    }
    return last.knob;
  }

  /** One image ran at λ = `knobUsed` and cost `bitflops`. */
  observe(bitflops: number, knobUsed: number): void {
    this.disturbance += this.alpha * (bitflops - this.predict(knobUsed) - this.disturbance);
    // Anti-windup (conditional integration): no error is added that would push a demand already beyond the
    // table's range further out.
    const error = bitflops - this.target;
    const demand = this.target - this.disturbance - this.cumulativeError / this.window;
    if (!(demand <= this.minMean && error > 0) && !(demand >= this.maxMean && error < 0)) this.cumulativeError += error;
    if (this.recentCount === this.window) this.recentSum -= this.recent[this.recentAt] as number;
    else this.recentCount++;
    this.recent[this.recentAt] = bitflops;
    this.recentSum += bitflops;
    this.recentAt = (this.recentAt + 1) % this.window;
    this.lambda = this.inverse(this.target - this.disturbance - this.cumulativeError / this.window);
  }
}
