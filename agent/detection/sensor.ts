/**
 * One temperature sensor as the detector sees it: a short and a long rate estimator, the last accepted
 * value, glitch rejection, and a status saying whether the sensor counts.
 *
 * Pure: time comes in with each sample (monotonic ms) and with each query.
 */
import type { Quality, Sample } from '../acquisition/types.js';
import type { DetectionParams } from '../config/schema.js';
import { RateEstimator } from './estimator.js';

/**
 * good: counts. no_data: nothing received yet, still within staleAfterS of the first look (start-up
 * grace; does not count, is not anomalous). stale: no good sample for staleAfterS. frozen: acquisition
 * flagged the value as not changing (quality `stale`). comm_error, sensor_fault, out_of_range: the last
 * sample's quality.
 */
export type SensorStatus = 'good' | 'no_data' | 'stale' | 'frozen' | 'comm_error' | 'sensor_fault' | 'out_of_range';

/** What a sensor track needs from the zone's detection parameters. */
export type SensorParams = Pick<DetectionParams, 'shortWindowS' | 'longWindowS' | 'minCoverage' | 'glitchJumpC' | 'staleAfterS' | 'criticalTempC'>;

/** What happened to a sample. */
export type IngestResult = 'accepted' | 'glitch' | 'step' | 'not_good' | 'out_of_order';

export class SensorTrack {
  readonly pointId: string;
  readonly params: SensorParams;
  readonly short: RateEstimator;
  readonly long: RateEstimator;

  /** Last accepted good value, °C, and its monotonic time. */
  lastValue: number | null = null;
  lastValueMono: number | null = null;
  /** Monotonic time of the last good sample (accepted or rejected as a glitch: the sensor is alive). */
  lastGoodMono: number | null = null;
  lastSampleMono: number | null = null;
  lastQuality: Quality | null = null;
  /** Glitches rejected and steps confirmed since start, for diagnosis. */
  glitches = 0;
  steps = 0;

  private pendingValue: number | null = null;
  private pendingMono = 0;
  private graceStartMono: number | null = null;
  private readonly staleAfterMs: number;

  constructor(pointId: string, params: SensorParams) {
    this.pointId = pointId;
    this.params = params;
    this.short = new RateEstimator(params.shortWindowS * 1000, params.minCoverage);
    this.long = new RateEstimator(params.longWindowS * 1000, params.minCoverage);
    this.staleAfterMs = params.staleAfterS * 1000;
  }

  /** Feeds one sample (must be this sensor's). */
  ingest(s: Sample): IngestResult {
    return this.update(s.mono, s.quality, s.value);
  }

  /**
   * Feeds one observation. Only `good` values reach the estimators. A good value farther than
   * glitchJumpC from the recent trend (see onTrend) is held back as a possible glitch; the next good value confirms it
   * as a real step (within glitchJumpC of it), and the estimators restart from the new level so the step
   * does not turn into a rate.
   */
  update(mono: number, quality: Quality, value: number | null): IngestResult {
    if (this.lastSampleMono !== null && mono < this.lastSampleMono) return 'out_of_order';
    if (this.graceStartMono === null) this.graceStartMono = mono;
    this.lastSampleMono = mono;
    this.lastQuality = quality;
    if (quality !== 'good' || value === null || !Number.isFinite(value)) return 'not_good';
    this.lastGoodMono = mono;

    const jump = this.params.glitchJumpC;
    if (this.lastValue === null) {
      this.accept(mono, value);
      return 'accepted';
    }
    this.short.advance(mono);
    this.long.advance(mono);
    if (this.onTrend(mono, value, jump)) {
      this.pendingValue = null;
      this.accept(mono, value);
      return 'accepted';
    }
    if (this.pendingValue !== null && Math.abs(value - this.pendingValue) <= jump) {
      // The new level held for two samples: a real step (a sensor moved, a recalibration, a replaced
      // probe). Restart from it rather than fit a line through the step.
      this.short.reset();
      this.long.reset();
      this.accept(this.pendingMono, this.pendingValue);
      this.accept(mono, value);
      this.pendingValue = null;
      this.steps++;
      return 'step';
    }
    this.pendingValue = value;
    this.pendingMono = mono;
    this.glitches++;
    return 'glitch';
  }

  /**
   * Within glitchJumpC of the recent trend: the short-window fit at `mono`, or the last accepted value
   * carried forward at the short-window slope (else the last value itself, before the window is
   * covered). The second reference matters at the onset of a fast real rise: the fit lags the knee by
   * several °C at 10 °C/min, while consecutive samples stay well within glitchJumpC of each other.
   */
  private onTrend(mono: number, value: number, jump: number): boolean {
    const last = this.lastValue!;
    const slopePerMin = this.short.slopePerMin();
    const fit = this.short.fitAt(mono);
    if (fit !== null && Math.abs(value - fit) <= jump) return true;
    const carried = slopePerMin === null ? last : last + (slopePerMin * (mono - this.lastValueMono!)) / 60_000;
    return Math.abs(value - carried) <= jump;
  }

  private accept(mono: number, value: number): void {
    this.short.add(mono, value);
    this.long.add(mono, value);

    this.lastValue = value;
    this.lastValueMono = mono;
  }

  /**
   * Starts the start-up grace (staleAfterS during which a sensor that never reported is `no_data`, not
   * `stale`) if neither a sample nor an earlier call has started it. The zone calls it on evaluation.
   */
  startGrace(now: number): void {
    if (this.graceStartMono === null) this.graceStartMono = now;
  }

  /** The sensor's status at monotonic `now`. */
  status(now: number): SensorStatus {
    switch (this.lastQuality) {
      case 'sensor_fault':
        return 'sensor_fault';
      case 'out_of_range':
        return 'out_of_range';
      case 'stale':
        return 'frozen';
      default:
        break;
    }
    if (this.lastGoodMono === null) {
      if (this.graceStartMono !== null && now - this.graceStartMono >= this.staleAfterMs) return 'stale';
      return this.lastQuality === 'comm_error' ? 'comm_error' : 'no_data';
    }
    if (now - this.lastGoodMono >= this.staleAfterMs) return 'stale';
    if (this.lastQuality === 'comm_error') return 'comm_error';
    return 'good';
  }

  /** Latest accepted value if it is fresh (younger than staleAfterS), else null. */
  tempC(now: number): number | null {
    if (this.lastValue === null || this.lastValueMono === null) return null;
    return now - this.lastValueMono < this.staleAfterMs ? this.lastValue : null;
  }

  /** Short-window slope, °C/min, for the window ending at `now`; null until covered. */
  rateShortCPerMin(now: number): number | null {
    this.short.advance(now);
    return this.short.slopePerMin();
  }

  /** Long-window slope, °C/min, for the window ending at `now`; null until covered. */
  rateLongCPerMin(now: number): number | null {
    this.long.advance(now);
    return this.long.slopePerMin();
  }

  /**
   * How far the latest reading is above the mean of the long window, °C: the size of the rise so
   * far. A door opening adds a degree or so and stops; a cooling failure keeps going. The mean (not
   * the minimum) is the baseline so that compressor cycling's troughs do not count as rise. Null
   * without a fresh reading or before the long window has data.
   */
  riseC(now: number): number | null {
    const t = this.tempC(now);
    if (t === null) return null;
    this.long.advance(now);
    const m = this.long.mean();
    return m === null ? null : t - m;
  }

  /**
   * Seconds until criticalTempC from the long-window fit, as etaCriticalS is from the short one. A
   * rise that both windows predict to reach critical within the horizon is sustained; a door burst's
   * steep short-window ETA is not confirmed by the long window.
   */
  etaCriticalLongS(now: number): number | null {
    this.long.advance(now);
    return this.etaFrom(this.long.slopePerMin(), this.long.fitAt(now));
  }

  /**
   * Seconds until criticalTempC, from the short-window fit: 0 when the fit or the reading is already
   * there, (criticalTempC − fit(now)) / slope when rising, null when not rising or not covered.
   */
  etaCriticalS(now: number, shortRateCPerMin?: number | null): number | null {
    this.short.advance(now);
    // The caller may pass the short rate it just read at `now`, to save computing it twice.
    return this.etaFrom(shortRateCPerMin !== undefined ? shortRateCPerMin : this.short.slopePerMin(), this.short.fitAt(now));
  }

  private etaFrom(slopePerMin: number | null, fit: number | null): number | null {
    if (slopePerMin === null || fit === null) return null;
    const crit = this.params.criticalTempC;
    if (fit >= crit || (this.lastValue !== null && this.lastValue >= crit)) return 0;
    if (!(slopePerMin > 0)) return null;
    return ((crit - fit) / slopePerMin) * 60;
  }
}
