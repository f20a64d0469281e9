/**
 * Least-squares slope over a sliding, time-based window, O(1) amortised per sample.
 *
 * Samples live in a ring buffer; running sums (n, Σt, Σv, Σt², Σtv) are kept with each sample added and
 * subtracted again when it leaves the window. Time enters the sums in seconds relative to an origin, and
 * values relative to the origin sample's value, so the sums stay small: a 7-day replay has monotonic
 * times near 6e8 ms, whose squares would swamp a slope of a few hundredths of a degree. The origin is
 * moved to the oldest sample (and the sums recomputed from the buffer, which also discards the rounding
 * drift of the add/subtract updates) once it falls more than a window behind: at most once per window of
 * elapsed time, for about a window's worth of samples, so amortised O(1).
 *
 * Pure: no clock, no I/O. Time comes in with each sample as monotonic milliseconds.
 */
export class RateEstimator {
  /** Window length, ms. */
  readonly windowMs: number;
  /** Fraction of the window the samples must span before the fit is used (0–1). */
  readonly minCoverage: number;

  private times: Float64Array;
  private values: Float64Array;
  private head = 0;
  private len = 0;

  /**
   * Ring-buffer slots read or written so far (adds, evictions, rebases, growth copies): the estimator's
   * whole per-sample work, so a test can prove the amortised O(1) bound by counting instead of timing.
   */
  private slotVisits = 0;

  private originMs = 0;
  private originV = 0;
  private sT = 0;
  private sV = 0;
  private sTT = 0;
  private sTV = 0;

  /**
   * @param windowMs window length, ms
   * @param minCoverage fraction of the window the samples must span (default 0.5)
   * @param initialCapacity ring buffer size to start with; it doubles when full
   */
  constructor(windowMs: number, minCoverage = 0.5, initialCapacity = 32) {
    if (!(windowMs > 0)) throw new RangeError(`windowMs must be positive, got ${windowMs}`);
    this.windowMs = windowMs;
    this.minCoverage = minCoverage;
    const cap = Math.max(4, initialCapacity | 0);
    this.times = new Float64Array(cap);
    this.values = new Float64Array(cap);
  }

  /** Samples currently in the window. */
  get count(): number {
    return this.len;
  }

  /** Ring buffer size: bounded by the samples one window holds, whatever the run length. */
  get capacity(): number {
    return this.times.length;
  }

  /** Buffer slots visited since construction (see slotVisits). */
  get work(): number {
    return this.slotVisits;
  }

  /** Monotonic ms of the newest sample, or null when empty. */
  newestMono(): number | null {
    return this.len === 0 ? null : this.times[(this.head + this.len - 1) % this.times.length]!;
  }

  /** Monotonic ms of the oldest sample in the window, or null when empty. */
  oldestMono(): number | null {
    return this.len === 0 ? null : this.times[this.head]!;
  }

  /** Drops every sample. */
  reset(): void {
    this.head = 0;
    this.len = 0;
    this.sT = this.sV = this.sTT = this.sTV = 0;
  }

  /**
   * Adds a sample at monotonic `mono` ms and evicts those older than `mono − windowMs`. A sample older
   * than the newest one, or a non-finite one, is ignored (returns false).
   */
  add(mono: number, value: number): boolean {
    if (!Number.isFinite(mono) || !Number.isFinite(value)) return false;
    if (this.len > 0) {
      const newest = this.times[(this.head + this.len - 1) % this.times.length]!;
      if (mono < newest) return false;
    }
    this.advance(mono);
    if (this.len === 0) {
      this.originMs = mono;
      this.originV = value;
      this.sT = this.sV = this.sTT = this.sTV = 0;
    }
    if (this.len === this.times.length) this.grow();
    const idx = (this.head + this.len) % this.times.length;
    this.times[idx] = mono;
    this.values[idx] = value;
    this.len++;
    this.slotVisits++;
    const t = (mono - this.originMs) / 1000;
    const v = value - this.originV;
    this.sT += t;
    this.sV += v;
    this.sTT += t * t;
    this.sTV += t * v;
    return true;
  }

  /** Evicts the samples older than `now − windowMs`. Queries answer for the window ending at the newest sample. */
  advance(now: number): void {
    const cutoff = now - this.windowMs;
    const cap = this.times.length;
    let evicted = false;
    while (this.len > 0 && this.times[this.head]! < cutoff) {
      const t = (this.times[this.head]! - this.originMs) / 1000;
      const v = this.values[this.head]! - this.originV;
      this.sT -= t;
      this.sV -= v;
      this.sTT -= t * t;
      this.sTV -= t * v;
      this.head = (this.head + 1) % cap;
      this.len--;
      this.slotVisits++;
      evicted = true;
    }
    if (this.len === 0) {
      this.head = 0;
      this.sT = this.sV = this.sTT = this.sTV = 0;
    } else if (evicted && this.times[this.head]! - this.originMs > this.windowMs) {
      this.rebase();
    }
  }

  /** Time spanned by the samples in the window, ms. */
  spanMs(): number {
    if (this.len < 2) return 0;
    return this.times[(this.head + this.len - 1) % this.times.length]! - this.times[this.head]!;
  }

  /** Whether the window is covered enough to answer: span ≥ minCoverage × windowMs and at least 3 samples. */
  isCovered(): boolean {
    return this.len >= 3 && this.spanMs() >= this.minCoverage * this.windowMs;
  }

  /** Least-squares slope, units per minute; null unless covered. */
  slopePerMin(): number | null {
    const b = this.slopePerS();
    return b === null ? null : b * 60;
  }

  /** Mean of the values in the window (after the last advance), or null when empty. */
  mean(): number | null {
    return this.len === 0 ? null : this.originV + this.sV / this.len;
  }

  /** Value of the least-squares line at monotonic `mono` ms; null unless covered. */
  fitAt(mono: number): number | null {
    const b = this.slopePerS();
    if (b === null) return null;
    const n = this.len;
    const t = (mono - this.originMs) / 1000;
    return this.originV + this.sV / n + b * (t - this.sT / n);
  }

  private slopePerS(): number | null {
    if (!this.isCovered()) return null;
    const n = this.len;
    const stt = this.sTT - (this.sT * this.sT) / n;
    if (!(stt > 0)) return null;
    const stv = this.sTV - (this.sT * this.sV) / n;
    return stv / stt;
  }

  /** Moves the origin to the oldest sample and recomputes the sums from the buffer. */
  private rebase(): void {
    const cap = this.times.length;
    this.originMs = this.times[this.head]!;
    this.originV = this.values[this.head]!;
    let sT = 0;
    let sV = 0;
    let sTT = 0;
    let sTV = 0;
    for (let i = 0; i < this.len; i++) {
      const idx = (this.head + i) % cap;
      const t = (this.times[idx]! - this.originMs) / 1000;
      const v = this.values[idx]! - this.originV;
      sT += t;
      sV += v;
      sTT += t * t;
      sTV += t * v;
    }
    this.sT = sT;
    this.sV = sV;
    this.sTT = sTT;
    this.sTV = sTV;
    this.slotVisits += this.len;
  }

  private grow(): void {
    const cap = this.times.length;
    const times = new Float64Array(cap * 2);
    const values = new Float64Array(cap * 2);
    for (let i = 0; i < this.len; i++) {
      const idx = (this.head + i) % cap;
      times[i] = this.times[idx]!;
      values[i] = this.values[idx]!;
    }
    this.slotVisits += this.len;
    this.times = times;
    this.values = values;
    this.head = 0;
  }
}
