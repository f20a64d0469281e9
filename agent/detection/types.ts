/** What the detector says. Every transition is an event with its evidence. */
export type Level = 'normal' | 'warning' | 'alarm' | 'critical';

export const LEVELS: readonly Level[] = ['normal', 'warning', 'alarm', 'critical'];

export function levelRank(l: Level): number {
  return LEVELS.indexOf(l);
}

/** One sensor's view at the moment of an event. */
export interface SensorEvidence {
  pointId: string;
  /** Latest good reading, °C; null when the sensor has none that is fresh. */
  tempC: number | null;
  /** good, or why the sensor does not count (stale, comm_error, sensor_fault, out_of_range, no data). */
  status: string;
  /** Least-squares slopes, °C/min; null until enough of the window is covered. */
  rateShortCPerMin: number | null;
  rateLongCPerMin: number | null;
  /** Predicted seconds until criticalTempC from the short-window fit; 0 when already there; null when not rising. */
  etaCriticalS: number | null;
  /** Which conditions this sensor meets: warn_rate, warn_temp, alarm_short_rate, alarm_long_rate, alarm_temp, critical_eta, critical_temp, stale, fault. */
  flags: string[];
}

export interface ChillerEvidence {
  chillerId: string;
  running: boolean | null;
  alarmCode: number | null;
  supplyTempC: number | null;
  supplyRateCPerMin: number | null;
  /** Whether this chiller corroborates a cooling failure, and why. */
  corroborates: boolean;
  reason: string;
}

export interface Evidence {
  sensors: SensorEvidence[];
  chillers: ChillerEvidence[];
  /** Sensors agreeing on the alarm condition / the critical condition, and the k required. */
  agreeingAlarm: number;
  agreeingCritical: number;
  k: number;
  /** The k-th smallest ETA to criticalTempC among the zone's sensors, seconds (the zone's ETA). */
  etaCriticalS: number | null;
}

export interface ZoneLevelEvent {
  kind: 'zone_level';
  zone: string;
  from: Level;
  level: Level;
  reason: string;
  /** Monotonic ms and wall ms of the evaluation that caused the event. */
  mono: number;
  ts: number;
  evidence: Evidence;
}

/** Fewer than k good sensors: the zone cannot judge. Warning level; never triggers actions by itself. */
export interface ZoneBlindEvent {
  kind: 'zone_blind';
  zone: string;
  blind: boolean;
  level: 'warning';
  reason: string;
  mono: number;
  ts: number;
  evidence: Evidence;
}

export type DetectorEvent = ZoneLevelEvent | ZoneBlindEvent;

export interface ZoneStatus {
  zone: string;
  level: Level;
  blind: boolean;
  /** Monotonic ms since which the zone has been at this level. */
  sinceMono: number;
  evidence: Evidence;
}
