import { describe, expect, it } from 'vitest';
import type { Quality, Sample } from '../../agent/acquisition/types.js';
import { DETECTION_DEFAULTS } from '../../agent/config/schema.js';
import { RateEstimator } from '../../agent/detection/estimator.js';
import { SensorTrack, type SensorParams } from '../../agent/detection/sensor.js';
import { mulberry32 } from '../../firmware-sim/thermal.js';

/** The simulator's seeded PRNG, so the noisy tests are reproducible. */
const prng = mulberry32;

/** Standard normal deviate (Box–Muller). */
function gauss(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

const PARAMS: SensorParams = { ...DETECTION_DEFAULTS };

function sample(mono: number, value: number | null, quality: Quality = 'good', ts = 1.7e12 + mono): Sample {
  return { pointId: 'r1.temperature', deviceId: 'r1', value, unit: '°C', quality, ts, mono };
}

describe('RateEstimator', () => {
  it('gives the exact slope of a line once the window is covered', () => {
    const est = new RateEstimator(120_000, 0.5);
    const line = (ms: number): number => 21 + (2 * ms) / 60_000; // 2 °C/min
    for (let ms = 0; ms <= 55_000; ms += 5000) est.add(ms, line(ms));
    // 55 s span < 0.5 × 120 s
    expect(est.isCovered()).toBe(false);
    expect(est.slopePerMin()).toBeNull();
    expect(est.fitAt(55_000)).toBeNull();
    est.add(60_000, line(60_000));
    expect(est.slopePerMin()).not.toBeNull();
    expect(Math.abs(est.slopePerMin()! - 2)).toBeLessThan(1e-9);
    for (let ms = 65_000; ms <= 600_000; ms += 5000) est.add(ms, line(ms));
    expect(Math.abs(est.slopePerMin()! - 2)).toBeLessThan(1e-9);
    expect(Math.abs(est.fitAt(600_000)! - line(600_000))).toBeLessThan(1e-9);
    expect(Math.abs(est.fitAt(660_000)! - line(660_000))).toBeLessThan(1e-9);
    // Only the last 120 s are kept: 25 samples at 5 s.
    expect(est.count).toBe(25);
    expect(est.spanMs()).toBe(120_000);
  });

  it('needs at least 3 samples even when two span the window', () => {
    const est = new RateEstimator(120_000, 0.5);
    est.add(0, 20);
    est.add(60_000, 21);
    expect(est.slopePerMin()).toBeNull();
    est.add(60_001, 21);
    expect(est.slopePerMin()).not.toBeNull();
  });

  it('falling and flat lines', () => {
    const est = new RateEstimator(120_000, 0.5);
    for (let ms = 0; ms <= 120_000; ms += 5000) est.add(ms, 30 - (0.5 * ms) / 60_000);
    expect(Math.abs(est.slopePerMin()! + 0.5)).toBeLessThan(1e-9);
    const flat = new RateEstimator(120_000, 0.5);
    for (let ms = 0; ms <= 120_000; ms += 5000) flat.add(ms, 22.4);
    expect(Math.abs(flat.slopePerMin()!)).toBeLessThan(1e-12);
  });

  it('estimates the slope of a noisy line within tolerance', () => {
    const rand = prng(42);
    const est = new RateEstimator(600_000, 0.5);
    for (let ms = 0; ms <= 1_800_000; ms += 5000) est.add(ms, 22 + (0.4 * ms) / 60_000 + 0.1 * gauss(rand));
    // σ(slope) = σ / sqrt(Σ(t − t̄)²) ≈ 0.1 / sqrt(121 × (10 min)² / 12) ≈ 0.003 °C/min
    expect(Math.abs(est.slopePerMin()! - 0.4)).toBeLessThan(0.015);
  });

  it('a gap reduces coverage to null, and the answer comes back as samples resume', () => {
    const est = new RateEstimator(120_000, 0.5);
    const line = (ms: number): number => 22 + ms / 60_000; // 1 °C/min
    for (let ms = 0; ms <= 300_000; ms += 5000) est.add(ms, line(ms));
    expect(Math.abs(est.slopePerMin()! - 1)).toBeLessThan(1e-9);
    // Silence: at 400 s the window (280–400 s) holds samples 280–300 s only.
    est.advance(400_000);
    expect(est.count).toBe(5);
    expect(est.slopePerMin()).toBeNull();
    // Silence longer than the window: everything evicted on the next sample.
    est.add(1_000_000, line(1_000_000));
    expect(est.count).toBe(1);
    expect(est.slopePerMin()).toBeNull();
    let ms = 1_000_000;
    while (est.slopePerMin() === null) {
      ms += 5000;
      est.add(ms, line(ms));
    }
    expect(ms).toBe(1_060_000);
    expect(Math.abs(est.slopePerMin()! - 1)).toBeLessThan(1e-9);
  });

  it('tolerates irregular sampling', () => {
    const rand = prng(7);
    const est = new RateEstimator(120_000, 0.5);
    let ms = 0;
    for (let i = 0; i < 500; i++) {
      ms += 500 + Math.floor(rand() * 9000);
      est.add(ms, 18 + (1.5 * ms) / 60_000);
    }
    expect(Math.abs(est.slopePerMin()! - 1.5)).toBeLessThan(1e-9);
    expect(Math.abs(est.fitAt(ms)! - (18 + (1.5 * ms) / 60_000))).toBeLessThan(1e-9);
  });

  it('ignores samples older than the newest and non-finite values', () => {
    const est = new RateEstimator(120_000, 0.5);
    expect(est.add(10_000, 20)).toBe(true);
    expect(est.add(5000, 99)).toBe(false);
    expect(est.add(15_000, Number.NaN)).toBe(false);
    expect(est.count).toBe(1);
  });

  it('stays exact over long runs with large monotonic offsets', () => {
    // 8 days at 1 s, starting at 10 million ms, on a 0.01 °C/min drift plus a 0.5 °C cycle:
    // the running sums are added to and subtracted from ~700 000 times.
    const est = new RateEstimator(600_000, 0.5);
    const start = 10_000_000;
    const f = (ms: number): number => 22 + (0.01 * (ms - start)) / 60_000 + 0.5 * Math.sin((2 * Math.PI * ms) / 600_000);
    const end = start + 8 * 86_400_000;
    for (let ms = start; ms <= end; ms += 1000) est.add(ms, f(ms));
    // Reference: the same window fitted from scratch.
    const ref = new RateEstimator(600_000, 0.5);
    for (let ms = end - 600_000; ms <= end; ms += 1000) ref.add(ms, f(ms));
    expect(Math.abs(est.slopePerMin()! - ref.slopePerMin()!)).toBeLessThan(1e-9);
    expect(Math.abs(est.fitAt(end)! - ref.fitAt(end)!)).toBeLessThan(1e-9);
    // Pure line at a 6e8 ms offset: the slope is still exact.
    const far = new RateEstimator(120_000, 0.5);
    for (let ms = 6e8; ms <= 6e8 + 3_600_000; ms += 5000) far.add(ms, 25 + (3 * (ms - 6e8)) / 60_000);
    expect(Math.abs(far.slopePerMin()! - 3)).toBeLessThan(1e-9);
  });

  // Counted, not timed: speed is a benchmark figure (`npm run bench -- detection`, estimator_samples_per_s).
  // The work is every ring-buffer slot read or written; queries (slope, fit, mean) have no loop at all.
  it('is O(1) amortised: buffer work per sample and buffer size do not grow with the run', () => {
    /** Runs n samples at `stepMs(i)` spacing with a query every 10; returns the work per sample and the buffer. */
    const runOf = (n: number, stepMs: (i: number) => number): { perSample: number; capacity: number; count: number } => {
      const est = new RateEstimator(600_000, 0.5);
      let ms = 0;
      for (let i = 0; i < n; i++, ms += stepMs(i)) {
        est.add(ms, 22 + Math.sin(i / 50));
        if (i % 10 === 0) est.slopePerMin();
      }
      return { perSample: est.work / n, capacity: est.capacity, count: est.count };
    };
    const steady = (): number => 5000;
    const short = runOf(10_000, steady);
    const long = runOf(1_000_000, steady);
    // One window at 5 s holds 121 samples: that is all the estimator keeps, after a million.
    expect(long.count).toBe(121);
    expect(long.capacity).toBe(short.capacity);
    expect(long.capacity).toBeLessThanOrEqual(2 * 121);
    // Each sample is written once and evicted once; a rebase re-reads one window at most once per
    // window of samples; the buffer growth copies are geometric. So at most 4 visits per sample, the
    // same for ten thousand samples as for a million (a per-sample refit would cost 121).
    expect(long.perSample).toBeLessThanOrEqual(4);
    expect(Math.abs(long.perSample - short.perSample)).toBeLessThan(0.05);
    // Irregular arrivals (bursts at 100 ms, pauses of 20 min that empty the window) keep the bound.
    const irregular = runOf(1_000_000, (i) => (i % 5000 === 0 ? 1_200_000 : i % 1000 < 500 ? 100 : 7000));
    expect(irregular.perSample).toBeLessThanOrEqual(4);
    expect(irregular.capacity).toBeLessThanOrEqual(2 * (600_000 / 100 + 1));
  });
});

describe('SensorTrack', () => {
  /** Feeds a 5 s series from t0 (ms) for n samples of f(ms). */
  function feed(track: SensorTrack, t0: number, n: number, f: (ms: number) => number): number {
    let ms = t0;
    for (let i = 0; i < n; i++, ms += 5000) track.ingest(sample(ms, f(ms)));
    return ms - 5000;
  }

  it('ignores a single spike', () => {
    const track = new SensorTrack('r1.temperature', PARAMS);
    const last = feed(track, 0, 200, (ms) => 22 + (0.2 * ms) / 60_000);
    const before = track.rateShortCPerMin(last)!;
    expect(Math.abs(before - 0.2)).toBeLessThan(1e-9);
    expect(track.ingest(sample(last + 5000, 80))).toBe('glitch');
    expect(track.lastValue).toBeCloseTo(22 + (0.2 * last) / 60_000, 9);
    // Back on the trend: accepted, and the rate never saw the spike.
    expect(track.ingest(sample(last + 10_000, 22 + (0.2 * (last + 10_000)) / 60_000))).toBe('accepted');
    expect(Math.abs(track.rateShortCPerMin(last + 10_000)! - 0.2)).toBeLessThan(1e-9);
    expect(Math.abs(track.rateLongCPerMin(last + 10_000)! - 0.2)).toBeLessThan(1e-9);
    expect(track.glitches).toBe(1);
    expect(track.status(last + 10_000)).toBe('good');
  });

  it('a confirmed step restarts the estimators without a giant rate', () => {
    const track = new SensorTrack('r1.temperature', PARAMS);
    const last = feed(track, 0, 200, () => 22);
    expect(track.ingest(sample(last + 5000, 28))).toBe('glitch');
    expect(track.ingest(sample(last + 10_000, 28))).toBe('step');
    expect(track.steps).toBe(1);
    expect(track.lastValue).toBe(28);
    // Restarted: no rate until the window is covered again, and never the step as a rate.
    expect(track.rateShortCPerMin(last + 10_000)).toBeNull();
    expect(track.rateLongCPerMin(last + 10_000)).toBeNull();
    let ms = last + 10_000;
    let maxShort = 0;
    for (let i = 0; i < 150; i++) {
      ms += 5000;
      track.ingest(sample(ms, 28));
      maxShort = Math.max(maxShort, Math.abs(track.rateShortCPerMin(ms) ?? 0), Math.abs(track.rateLongCPerMin(ms) ?? 0));
    }
    expect(maxShort).toBeLessThan(0.01);
    expect(track.rateShortCPerMin(ms)).toBe(0);
  });

  it('a fast real rise is tracked, not rejected as glitches', () => {
    const track = new SensorTrack('r1.temperature', PARAMS);
    let last = feed(track, 0, 60, () => 22);
    // 10 °C/min: 0.83 °C per 5 s sample, well inside glitchJumpC of the extrapolated trend.
    last = feed(track, last + 5000, 60, (ms) => 22 + (10 * (ms - last)) / 60_000);
    expect(track.glitches).toBe(0);
    expect(track.rateShortCPerMin(last)!).toBeCloseTo(10, 6);
  });

  it('only good samples feed the estimators; status says why a sensor does not count', () => {
    const track = new SensorTrack('r1.temperature', PARAMS);
    expect(track.status(0)).toBe('no_data');
    track.startGrace(0);
    expect(track.status(59_999)).toBe('no_data');
    expect(track.status(60_000)).toBe('stale');
    const last = feed(track, 60_000, 30, () => 22);
    expect(track.status(last)).toBe('good');
    track.ingest(sample(last + 5000, null, 'comm_error'));
    expect(track.status(last + 5000)).toBe('comm_error');
    expect(track.status(last + 60_000)).toBe('stale');
    track.ingest(sample(last + 65_000, 22, 'stale'));
    expect(track.status(last + 65_000)).toBe('frozen');
    track.ingest(sample(last + 70_000, null, 'sensor_fault'));
    expect(track.status(last + 70_000)).toBe('sensor_fault');
    track.ingest(sample(last + 75_000, null, 'out_of_range'));
    expect(track.status(last + 75_000)).toBe('out_of_range');
    track.ingest(sample(last + 80_000, 22));
    expect(track.status(last + 80_000)).toBe('good');
    expect(track.tempC(last + 80_000)).toBe(22);
    expect(track.tempC(last + 140_000)).toBeNull();
  });

  it('ETA to criticalTempC from the short-window fit', () => {
    const track = new SensorTrack('r1.temperature', PARAMS);
    // 1 °C/min reaching 30 °C at t = 600 s: 5 °C to 35 °C is 300 s away.
    const last = feed(track, 0, 121, (ms) => 20 + ms / 60_000);
    expect(last).toBe(600_000);
    expect(track.etaCriticalS(last)!).toBeCloseTo(300, 6);
    const flat = new SensorTrack('r2.temperature', PARAMS);
    feed(flat, 0, 60, () => 24);
    expect(flat.etaCriticalS(295_000)).toBeNull();
    const hot = new SensorTrack('r3.temperature', PARAMS);
    feed(hot, 0, 60, () => 36);
    expect(hot.etaCriticalS(295_000)).toBe(0);
  });

  it('a wall-clock step changes nothing: only monotonic time counts', () => {
    const a = new SensorTrack('r1.temperature', PARAMS);
    const b = new SensorTrack('r1.temperature', PARAMS);
    const rand = prng(3);
    const results: [number | null, number | null, number | null, string][][] = [[], []];
    for (let i = 0; i < 400; i++) {
      const mono = 10_000_000 + i * 5000;
      const v = 22 + (0.8 * i * 5000) / 60_000 * (i > 200 ? 1 : 0) + 0.05 * gauss(rand);
      const wall = 1.7e12 + i * 5000;
      // At i = 150 NTP steps the wall clock back an hour.
      const stepped = i >= 150 ? wall - 3_600_000 : wall;
      a.ingest(sample(mono, v, 'good', wall));
      b.ingest(sample(mono, v, 'good', stepped));
      for (const [k, t] of [[0, a], [1, b]] as const) {
        results[k]!.push([t.rateShortCPerMin(mono), t.rateLongCPerMin(mono), t.etaCriticalS(mono), t.status(mono)]);
      }
    }
    expect(results[1]).toEqual(results[0]);
    expect(results[0]!.at(-1)![0]).not.toBeNull();
  });
});
