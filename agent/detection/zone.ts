/**
 * The zone state machine: normal → warning → alarm → critical, judged on k-of-n agreement between the
 * zone's inlet sensors, corroborated by the chillers that cool the zone.
 *
 * A plain class evaluated at a monotonic time; it reads its sensor and chiller tracks and returns the
 * events of that evaluation. No timers: dwell and clear delays are measured between evaluations, so the
 * caller evaluates on every new sample and on a ~1 s tick.
 */
import type { Quality, Sample } from '../acquisition/types.js';
import type { DetectionParams, ParsedConfig } from '../config/schema.js';
import { SensorTrack, type SensorParams, type SensorStatus } from './sensor.js';
import {
  LEVELS,
  levelRank,
  type ChillerEvidence,
  type DetectorEvent,
  type Evidence,
  type Level,
  type SensorEvidence,
  type ZoneStatus,
} from './types.js';

export type ChillerDef = ParsedConfig['chillers'][number];

/** Status value kept with the time it was read. */
interface Held {
  value: number | null;
  mono: number;
}

/**
 * A chiller as the detector sees it: running flag, alarm code (latest readable values, dropped after
 * staleAfterS without one) and the supply-water temperature tracked like a sensor (glitch rejection,
 * long-window rate).
 */
export class ChillerTrack {
  readonly id: string;
  readonly zones: readonly string[];
  readonly supply: SensorTrack | null;
  private readonly running: Held = { value: null, mono: 0 };
  private readonly alarm: Held = { value: null, mono: 0 };

  constructor(def: ChillerDef, params: SensorParams) {
    this.id = def.id;
    this.zones = def.zones;
    this.supply = def.supplyTemp !== undefined ? new SensorTrack(def.supplyTemp, params) : null;
  }

  ingestRunning(s: Sample): void {
    hold(this.running, s.mono, s.quality, s.value);
  }

  ingestAlarm(s: Sample): void {
    hold(this.alarm, s.mono, s.quality, s.value);
  }

  ingestSupply(s: Sample): void {
    this.supply?.ingest(s);
  }

  /** Running flag, or null when unknown or older than staleAfterMs. */
  runningAt(now: number, staleAfterMs: number): boolean | null {
    const v = fresh(this.running, now, staleAfterMs);
    return v === null ? null : v !== 0;
  }

  alarmCodeAt(now: number, staleAfterMs: number): number | null {
    return fresh(this.alarm, now, staleAfterMs);
  }

  supplyRateCPerMin(now: number): number | null {
    if (!this.supply || this.supply.status(now) !== 'good') return null;
    return this.supply.rateLongCPerMin(now);
  }

  /** Whether this chiller corroborates a cooling failure: tripped, in alarm, or supply water rising. */
  corroborates(now: number, p: DetectionParams): boolean {
    const staleMs = p.staleAfterS * 1000;
    if (this.runningAt(now, staleMs) === false) return true;
    const code = this.alarmCodeAt(now, staleMs);
    if (code !== null && code !== 0) return true;
    const rate = this.supplyRateCPerMin(now);
    return rate !== null && rate >= p.chillerSupplyRiseCPerMin;
  }

  /** Why it corroborates (`chiller ch1 tripped, alarm code 17`), or '' when it does not. */
  reason(now: number, p: DetectionParams): string {
    const staleMs = p.staleAfterS * 1000;
    const why: string[] = [];
    if (this.runningAt(now, staleMs) === false) why.push('tripped');
    const code = this.alarmCodeAt(now, staleMs);
    if (code !== null && code !== 0) why.push(`alarm code ${code}`);
    const rate = this.supplyRateCPerMin(now);
    if (rate !== null && rate >= p.chillerSupplyRiseCPerMin) why.push(`supply water rising ${fmtRate(rate)} °C/min`);
    return why.length === 0 ? '' : `chiller ${this.id} ${why.join(', ')}`;
  }

  evidence(now: number, p: DetectionParams): ChillerEvidence {
    const staleMs = p.staleAfterS * 1000;
    const reason = this.reason(now, p);
    return {
      chillerId: this.id,
      running: this.runningAt(now, staleMs),
      alarmCode: this.alarmCodeAt(now, staleMs),
      supplyTempC: this.supply ? this.supply.tempC(now) : null,
      supplyRateCPerMin: this.supplyRateCPerMin(now),
      corroborates: reason !== '',
      reason: reason === '' ? 'no sign of a cooling failure' : reason,
    };
  }
}

function hold(h: Held, mono: number, quality: Quality, value: number | null): void {
  if (mono < h.mono) return;
  // A status register that does not change is normal, so `stale` (frozen) values still count.
  if ((quality === 'good' || quality === 'stale') && value !== null) {
    h.value = value;
    h.mono = mono;
  }
}

function fresh(h: Held, now: number, staleAfterMs: number): number | null {
  return h.value !== null && now - h.mono < staleAfterMs ? h.value : null;
}

/** Per-sensor result of one evaluation; reused between evaluations (no allocation per evaluation). */
interface SensorEval {
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

/** `rack01.temperature` → `rack01`: the device names the rack; other point ids are shown whole. */
export function sensorLabel(pointId: string): string {
  return pointId.endsWith('.temperature') ? pointId.slice(0, -'.temperature'.length) : pointId;
}

const fmtTemp = (v: number): string => v.toFixed(1);
const fmtRate = (v: number): string => v.toFixed(2);
const fmtS = (v: number): string => String(Math.round(v));

/** Results of the last evaluation that the reasons and the evidence need. */
interface Tally {
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

export class ZoneMachine {
  readonly id: string;
  readonly params: DetectionParams;
  readonly sensors: readonly SensorTrack[];
  readonly chillers: readonly ChillerTrack[];

  private levelNow: Level = 'normal';
  private blindNow = false;
  private sinceMono: number | null = null;
  private lastEvalMono = -Infinity;
  private acked = false;
  /** Start of the current continuous run of the raw alarm / critical condition. */
  private alarmSince: number | null = null;
  private critSince: number | null = null;
  /** Start of the current continuous run of "this level's clear conditions hold", by level rank (1–3). */
  private readonly clearSince: (number | null)[] = [null, null, null, null];
  private readonly evals: SensorEval[];
  private readonly tally: Tally = {
    good: 0,
    noData: 0,
    kEff: 0,
    dwellS: 0,
    corroborated: false,
    shortRateC: 0,
    nAlarm: 0,
    nCrit: 0,
    rawWarn: false,
    rawAlarm: false,
    rawCrit: false,
  };

  constructor(id: string, params: DetectionParams, sensors: readonly SensorTrack[], chillers: readonly ChillerTrack[]) {
    this.id = id;
    this.params = params;
    this.sensors = sensors;
    this.chillers = chillers;
    this.tally.kEff = params.k;
    this.tally.dwellS = params.dwellS;
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

  get level(): Level {
    return this.levelNow;
  }

  get blind(): boolean {
    return this.blindNow;
  }

  /**
   * Evaluates the zone at monotonic `mono` (wall `ts` only for the events). Times earlier than the last
   * evaluation are treated as the last evaluation's time: the machine never runs backwards.
   */
  evaluate(mono: number, ts: number): DetectorEvent[] {
    const now = Math.max(mono, this.lastEvalMono);
    this.lastEvalMono = now;
    if (this.sinceMono === null) this.sinceMono = now;
    const p = this.params;
    const t = this.measure(now);

    // Dwell: the raw condition must hold at every evaluation for dwellS.
    if (t.rawAlarm) this.alarmSince ??= now;
    else this.alarmSince = null;
    if (t.rawCrit) this.critSince ??= now;
    else this.critSince = null;
    const dwellMs = t.dwellS * 1000;
    const alarmOk = this.alarmSince !== null && now - this.alarmSince >= dwellMs;
    const critOk = this.critSince !== null && now - this.critSince >= dwellMs;
    const supported: Level = critOk ? 'critical' : alarmOk ? 'alarm' : t.rawWarn ? 'warning' : 'normal';

    // Clear conditions per level: the raw condition gone and temperatures below threshold − hysteresis.
    // A blind zone cannot confirm a clear: the clear delay starts again once quorum is back.
    const blind = t.good + t.noData < p.k;
    for (let r = 1; r <= 3; r++) {
      if (!blind && this.clearable(r)) this.clearSince[r] ??= now;
      else this.clearSince[r] = null;
    }

    const events: DetectorEvent[] = [];
    // Built once, only when there is an event to carry it.
    let evidence: Evidence | null = null;

    if (blind !== this.blindNow) {
      this.blindNow = blind;
      events.push({ kind: 'zone_blind', zone: this.id, blind, level: 'warning', reason: this.blindReason(blind), mono: now, ts, evidence: (evidence ??= this.buildEvidence(now)) });
    }

    const cur = levelRank(this.levelNow);
    const up = levelRank(supported);
    if (up > cur) {
      for (let r = cur + 1; r <= up; r++) {
        const from = LEVELS[r - 1]!;
        const level = LEVELS[r]!;
        const reason = this.holds(r) ? this.levelReason(level) : `${level} on the way to ${supported}`;
        events.push({ kind: 'zone_level', zone: this.id, from, level, reason, mono: now, ts, evidence: (evidence ??= this.buildEvidence(now)) });
      }
      this.levelNow = supported;
      this.sinceMono = now;
      if (supported === 'critical') this.acked = false;
    } else if (up < cur && !blind) {
      // Blind: the zone cannot confirm a clear, so it holds its level.
      const since = this.clearSince[cur] ?? null;
      const latched = this.levelNow === 'critical' && p.criticalLatch === 'ack' && !this.acked;
      if (since !== null && now - since >= p.clearDelayS * 1000 && !latched) {
        let target = 0;
        for (let r = cur - 1; r >= 1; r--) {
          if (!this.clearable(r)) {
            target = r;
            break;
          }
        }
        const from = this.levelNow;
        const level = LEVELS[target]!;
        let reason = `${from} cleared: ${this.clearedPhrase(cur)} for ${fmtS(p.clearDelayS)} s`;
        if (from === 'critical' && p.criticalLatch === 'ack') reason += ' (acknowledged)';
        if (target > 0) reason += `; still ${level}: ${this.holds(target) ? this.levelReason(level) : this.bandPhrase(target)}`;
        events.push({ kind: 'zone_level', zone: this.id, from, level, reason, mono: now, ts, evidence: (evidence ??= this.buildEvidence(now)) });
        this.levelNow = level;
        this.sinceMono = now;
        this.acked = false;
      }
    }
    return events;
  }

  /**
   * An operator acknowledges the zone. With criticalLatch `ack` a critical zone may then clear by the
   * usual rules (at once, if they have held for clearDelayS already). Returns the events of the
   * evaluation that follows.
   */
  acknowledge(mono: number, ts: number): DetectorEvent[] {
    if (this.levelNow === 'critical') this.acked = true;
    return this.evaluate(mono, ts);
  }

  /** The zone's state as of its last evaluation. */
  status(): ZoneStatus {
    // Before the first evaluation the scratch evals still say no_data, which is the truth.
    const now = this.lastEvalMono === -Infinity ? 0 : this.lastEvalMono;
    return { zone: this.id, level: this.levelNow, blind: this.blindNow, sinceMono: this.sinceMono ?? now, evidence: this.buildEvidence(now) };
  }

  /** Reads every sensor and chiller at `now` into the scratch evals and the tally. O(zone sensors). */
  private measure(now: number): Tally {
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
  private holds(r: number): boolean {
    const t = this.tally;
    return r === 1 ? t.rawWarn : r === 2 ? t.rawAlarm : r === 3 ? t.rawCrit : true;
  }

  /** Clear conditions of level rank r: its raw condition gone, and temperatures below its threshold − hysteresis. */
  private clearable(r: number): boolean {
    if (this.holds(r)) return false;
    return !this.inBand(r);
  }

  /** Temperatures still within hysteresis of level r's threshold: any sensor for warning, k for alarm and critical. */
  private inBand(r: number): boolean {
    const p = this.params;
    const threshold = (r === 1 ? p.warnTempC : r === 2 ? p.alarmTempC : p.criticalTempC) - p.hysteresisC;
    const need = r === 1 ? 1 : this.tally.kEff;
    let n = 0;
    for (const e of this.evals) if (e.good && e.tempC !== null && e.tempC >= threshold) n++;
    return n >= need;
  }

  private clearedPhrase(r: number): string {
    const p = this.params;
    const threshold = (r === 1 ? p.warnTempC : r === 2 ? p.alarmTempC : p.criticalTempC) - p.hysteresisC;
    const cond = r === 1 ? 'no sensor anomalous' : r === 2 ? 'alarm condition gone' : 'critical condition gone';
    const temps = r === 1 ? `all sensors below ${threshold} °C` : `fewer than ${this.tally.kEff} sensors at ≥ ${threshold} °C`;
    return `${cond} and ${temps}`;
  }

  private bandPhrase(r: number): string {
    const p = this.params;
    const threshold = (r === 1 ? p.warnTempC : r === 2 ? p.alarmTempC : p.criticalTempC) - p.hysteresisC;
    const items = this.evals.filter((e) => e.good && e.tempC !== null && e.tempC >= threshold).map((e) => `${e.label} ${fmtTemp(e.tempC!)}`);
    return `${items.length} sensor${items.length === 1 ? '' : 's'} within ${p.hysteresisC} °C of ${threshold + p.hysteresisC} °C: ${items.join(', ')} °C`;
  }

  private levelReason(level: Level): string {
    switch (level) {
      case 'warning':
        return this.warningReason();
      case 'alarm':
        return this.alarmReason();
      case 'critical':
        return this.criticalReason();
      default:
        return 'normal';
    }
  }

  private warningReason(): string {
    const p = this.params;
    const items: string[] = [];
    for (const e of this.evals) {
      if (e.warnTemp) items.push(`${e.label} at ${fmtTemp(e.tempC!)} °C ≥ ${p.warnTempC} °C`);
      if (e.warnRate) items.push(`${e.label} rising ${fmtRate(e.rateLong!)} °C/min ≥ ${p.warnRateCPerMin} °C/min over ${p.longWindowS} s`);
      if (e.stale) items.push(`${e.label} stale (no good sample for ${p.staleAfterS} s)`);
      if (e.fault) items.push(`${e.label} ${e.status}`);
    }
    const n = this.evals.filter((e) => e.warnTemp || e.warnRate || e.stale || e.fault).length;
    return `${n} sensor${n === 1 ? '' : 's'} anomalous: ${items.join('; ')}`;
  }

  private agreeHead(count: number, what: string): string {
    const t = this.tally;
    const dwell = t.dwellS > 0 ? ` for ${fmtS(t.dwellS)} s` : '';
    return `${count} of ${this.evals.length} sensors ${what}${dwell}`;
  }

  private chillerSuffix(): string {
    const now = this.lastEvalMono;
    const parts: string[] = [];
    for (const ch of this.chillers) {
      const r = ch.reason(now, this.params);
      if (r !== '') parts.push(r);
    }
    if (parts.length === 0) return '';
    const lowered = this.tally.kEff < this.params.k ? ` (k lowered to ${this.tally.kEff})` : '';
    return `; ${parts.join('; ')}${lowered}`;
  }

  private alarmReason(): string {
    const p = this.params;
    const shortItems: string[] = [];
    const longItems: string[] = [];
    const tempItems: string[] = [];
    for (const e of this.evals) {
      // Each agreeing sensor is listed once, under the first criterion it meets.
      if (e.alarmShort) shortItems.push(`${e.label} ${fmtRate(e.rateShort!)}`);
      else if (e.alarmLong) longItems.push(`${e.label} ${fmtRate(e.rateLong!)}`);
      else if (e.alarmTemp) tempItems.push(`${e.label} ${fmtTemp(e.tempC!)}`);
    }
    const groups: [string, string][] = [];
    if (shortItems.length) groups.push([`rising ≥ ${this.tally.shortRateC} °C/min`, `${shortItems.join(', ')} °C/min`]);
    if (longItems.length) groups.push([`rising ≥ ${p.alarmLongRateCPerMin} °C/min over ${p.longWindowS} s`, `${longItems.join(', ')} °C/min`]);
    if (tempItems.length) groups.push([`at ≥ ${p.alarmTempC} °C`, `${tempItems.join(', ')} °C`]);
    return this.groupedReason(this.tally.nAlarm, groups) + this.chillerSuffix();
  }

  private criticalReason(): string {
    const p = this.params;
    const tempItems: string[] = [];
    const etaItems: string[] = [];
    for (const e of this.evals) {
      if (e.critTemp) tempItems.push(`${e.label} ${fmtTemp(e.tempC!)}`);
      else if (e.critEta) etaItems.push(`${e.label} in ${fmtS(e.eta!)} s (long-window ETA ${e.etaLong === null ? 'n/a' : `${fmtS(e.etaLong)} s`})`);
    }
    const groups: [string, string][] = [];
    if (tempItems.length) groups.push([`at ≥ ${p.criticalTempC} °C`, `${tempItems.join(', ')} °C`]);
    if (etaItems.length) groups.push([`reaching ${p.criticalTempC} °C within ${p.horizonS} s`, etaItems.join(', ')]);
    const eta = this.zoneEta();
    const etaText = eta === null ? '' : `; zone ETA ${fmtS(eta)} s`;
    return this.groupedReason(this.tally.nCrit, groups) + etaText + this.chillerSuffix();
  }

  private groupedReason(count: number, groups: [string, string][]): string {
    if (groups.length === 1) return `${this.agreeHead(count, groups[0]![0])}: ${groups[0]![1]}`;
    return `${this.agreeHead(count, 'agree')}: ${groups.map(([what, items]) => `${what}: ${items}`).join('; ')}`;
  }

  private blindReason(blind: boolean): string {
    const t = this.tally;
    const n = this.evals.length;
    if (!blind) return `quorum back: ${t.good} of ${n} sensors good, ${this.params.k} needed`;
    const bad = this.evals.filter((e) => !e.good && e.status !== 'no_data').map((e) => `${e.label} ${e.status}`);
    return `quorum lost: ${t.good} of ${n} sensors good, ${this.params.k} needed (${bad.join(', ')}); holding ${this.levelNow}`;
  }

  /** The k-th smallest ETA among the good sensors, seconds; null when fewer than k have one. */
  private zoneEta(): number | null {
    const etas: number[] = [];
    for (const e of this.evals) if (e.good && e.eta !== null) etas.push(e.eta);
    const k = this.tally.kEff;
    if (etas.length < k) return null;
    etas.sort((a, b) => a - b);
    return etas[k - 1] ?? null;
  }

  private buildEvidence(now: number): Evidence {
    const sensors: SensorEvidence[] = this.evals.map((e) => {
      const flags: string[] = [];
      if (e.warnRate) flags.push('warn_rate');
      if (e.warnTemp) flags.push('warn_temp');
      if (e.alarmShort) flags.push('alarm_short_rate');
      if (e.alarmLong) flags.push('alarm_long_rate');
      if (e.alarmTemp) flags.push('alarm_temp');
      if (e.critEta) flags.push('critical_eta');
      if (e.critTemp) flags.push('critical_temp');
      if (e.stale) flags.push('stale');
      if (e.fault) flags.push('fault');
      return {
        pointId: e.track.pointId,
        tempC: e.tempC,
        status: e.status,
        rateShortCPerMin: e.rateShort,
        rateLongCPerMin: e.rateLong,
        etaCriticalS: e.eta,
        flags,
      };
    });
    return {
      sensors,
      chillers: this.chillers.map((c) => c.evidence(now, this.params)),
      agreeingAlarm: this.tally.nAlarm,
      agreeingCritical: this.tally.nCrit,
      k: this.tally.kEff,
      etaCriticalS: this.zoneEta(),
    };
  }
}
