/**
 * One zone read at one moment: each sensor's status, rates and ETA against the level criteria, and the
 * k-of-n tally that the state machine (zone.ts) turns into levels, reasons (reasons.ts) and evidence
 * (evidence.ts).
 *
 * The per-sensor results live in scratch objects reused between evaluations: no allocation per
 * evaluation, O(zone sensors) each.
 */
import type { DetectionParams } from '../config/schema.js';
import type { ChillerTrack } from './chiller.js';
import { sensorLabel } from './format.js';
import type { SensorStatus, SensorTrack } from './sensor.js';

/** Per-sensor result of one evaluation. */
export interface SensorEval {
  track: SensorTrack;
  label: string;
  status: SensorStatus;
  good: boolean;
  tempC: number | null;
  rateShort: number | null;
  rateLong: number | null;
  eta: number | null;
  /** ETA to critical from the long-window fit (computed only when the short one is within the horizon). */
  etaLong: number | null;
  /** Rise above the lowest reading of the long window, °C. */
  rise: number | null;
  warnRate: boolean;
  warnTemp: boolean;
  alarmShort: boolean;
  alarmLong: boolean;
  alarmTemp: boolean;
  critTemp: boolean;
  critEta: boolean;
  stale: boolean;
  fault: boolean;
}

/** Results of the last evaluation that the levels, the reasons and the evidence need. */
export interface Tally {
  good: number;
  noData: number;
  kEff: number;
  dwellS: number;
  corroborated: boolean;
  /** Short-window rate that counts toward alarm now (lower while corroborated). */
  shortRateC: number;
  nAlarm: number;
  nCrit: number;
  rawWarn: boolean;
  rawAlarm: boolean;
  rawCrit: boolean;
}

/** Level rank r's temperature threshold minus hysteresis: below it, that level's temperatures have cleared. */
export function clearThresholdC(p: DetectionParams, r: number): number {
  return (r === 1 ? p.warnTempC : r === 2 ? p.alarmTempC : p.criticalTempC) - p.hysteresisC;
}

export class ZoneAssessment {
  readonly params: DetectionParams;
  readonly chillers: readonly ChillerTrack[];
  readonly evals: readonly SensorEval[];
  readonly tally: Tally;

  constructor(params: DetectionParams, sensors: readonly SensorTrack[], chillers: readonly ChillerTrack[]) {
    this.params = params;
    this.chillers = chillers;
    this.tally = {
      good: 0,
      noData: 0,
      kEff: params.k,
      dwellS: params.dwellS,
      corroborated: false,
      shortRateC: 0,
      nAlarm: 0,
      nCrit: 0,
      rawWarn: false,
      rawAlarm: false,
      rawCrit: false,
    };
    this.evals = sensors.map((track) => ({
      track,
      label: sensorLabel(track.pointId),
      status: 'no_data',
      good: false,
      tempC: null,
      rateShort: null,
      rateLong: null,
      eta: null,
      etaLong: null,
      rise: null,
      warnRate: false,
      warnTemp: false,
      alarmShort: false,
      alarmLong: false,
      alarmTemp: false,
      critTemp: false,
      critEta: false,
      stale: false,
      fault: false,
    }));
  }

  /** Reads every sensor and chiller at `now` into the scratch evals and the tally. O(zone sensors). */
  measure(now: number): Tally {
    const p = this.params;
    const t = this.tally;
    let corroborated = false;
    for (const ch of this.chillers) {
      if (ch.corroborates(now, p)) {
        corroborated = true;
        break;
      }
    }
    t.corroborated = corroborated;
    t.kEff = corroborated && p.corroborationLowersK ? 1 : p.k;
    t.dwellS = corroborated ? p.corroboratedDwellS : p.dwellS;
    t.shortRateC = corroborated ? Math.min(p.alarmShortRateCPerMin, p.corroboratedShortRateCPerMin) : p.alarmShortRateCPerMin;
    t.good = 0;
    t.noData = 0;
    t.nAlarm = 0;
    t.nCrit = 0;
    t.rawWarn = false;
    for (const e of this.evals) {
      const s = e.track;
      s.startGrace(now);
      e.status = s.status(now);
      e.good = e.status === 'good';
      e.tempC = s.tempC(now);
      e.rateShort = s.rateShortCPerMin(now);
      e.rateLong = s.rateLongCPerMin(now);
      e.eta = s.etaCriticalS(now, e.rateShort);
      e.stale = e.status === 'stale';
      e.fault = e.status === 'sensor_fault' || e.status === 'out_of_range' || e.status === 'frozen';
      if (e.good) {
        t.good++;
        const temp = e.tempC;
        e.warnRate = e.rateLong !== null && e.rateLong >= p.warnRateCPerMin;
        e.warnTemp = temp !== null && temp >= p.warnTempC;
        e.rise = s.riseC(now);
        e.alarmShort = e.rateShort !== null && e.rateShort >= t.shortRateC && (corroborated || (e.rise !== null && e.rise >= p.alarmMinRiseC));
        e.alarmLong = e.rateLong !== null && e.rateLong >= p.alarmLongRateCPerMin;
        e.alarmTemp = temp !== null && temp >= p.alarmTempC;
        e.critTemp = temp !== null && temp >= p.criticalTempC;
        // Sustained guard: a door burst's short-window ETA looks alarming, but the long-window fit
        // does not predict critical within the horizon (its rise saturates after a few °C). A
        // corroborating chiller is independent evidence that the rise is real: then a short-window
        // rise of at least corroboratedShortRateCPerMin is sustained enough (a small step is not).
        if (e.eta !== null && e.eta <= p.horizonS) {
          e.etaLong = s.etaCriticalLongS(now);
          e.critEta = (e.etaLong !== null && e.etaLong <= p.horizonS) || (corroborated && e.rateShort !== null && e.rateShort >= p.corroboratedShortRateCPerMin);
        } else {
          e.etaLong = null;
          e.critEta = false;
        }
      } else {
        if (e.status === 'no_data') t.noData++;
        e.warnRate = e.warnTemp = e.alarmShort = e.alarmLong = e.alarmTemp = e.critTemp = e.critEta = false;
      }
      if (e.alarmShort || e.alarmLong || e.alarmTemp) t.nAlarm++;
      if (e.critTemp || e.critEta) t.nCrit++;
      if (e.warnRate || e.warnTemp || e.stale || e.fault) t.rawWarn = true;
    }
    t.rawAlarm = t.nAlarm >= t.kEff;
    t.rawCrit = t.rawAlarm && t.nCrit >= t.kEff;
    return t;
  }

  /** Whether the raw condition of level rank r holds (from the last measure). */
  holds(r: number): boolean {
    const t = this.tally;
    return r === 1 ? t.rawWarn : r === 2 ? t.rawAlarm : r === 3 ? t.rawCrit : true;
  }

  /** Clear conditions of level rank r: its raw condition gone, and temperatures below its threshold − hysteresis. */
  clearable(r: number): boolean {
    if (this.holds(r)) return false;
    return !this.inBand(r);
  }

  /** Temperatures still within hysteresis of level r's threshold: any sensor for warning, k for alarm and critical. */
  private inBand(r: number): boolean {
    const threshold = clearThresholdC(this.params, r);
    const need = r === 1 ? 1 : this.tally.kEff;
    let n = 0;
    for (const e of this.evals) if (e.good && e.tempC !== null && e.tempC >= threshold) n++;
    return n >= need;
  }

  /** The k-th smallest ETA among the good sensors, seconds; null when fewer than k have one. */
  zoneEta(): number | null {
    const etas: number[] = [];
    for (const e of this.evals) if (e.good && e.eta !== null) etas.push(e.eta);
    const k = this.tally.kEff;
    if (etas.length < k) return null;
    etas.sort((a, b) => a - b);
    return etas[k - 1] ?? null;
  }
}
