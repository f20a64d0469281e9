/**
 * A chiller as the detector sees it: running flag, alarm code (latest readable values, dropped after
 * staleAfterS without one) and the supply-water temperature tracked like a sensor (glitch rejection,
 * long-window rate). A chiller that trips, alarms or warms its supply water corroborates a cooling
 * failure in the zones it cools.
 */
import type { Quality, Sample } from '../acquisition/types.js';
import type { DetectionParams, ParsedConfig } from '../config/schema.js';
import { fmtRate } from './format.js';
import { SensorTrack, type SensorParams } from './sensor.js';
import type { ChillerEvidence } from './types.js';

export type ChillerDef = ParsedConfig['chillers'][number];

/** Status value kept with the time it was read. */
interface Held {
  value: number | null;
  mono: number;
}

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
