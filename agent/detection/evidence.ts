/**
 * The evidence attached to a zone event or status: each sensor's reading, rates, ETA and the criteria
 * it meets, each chiller's state, and the agreement counts. Structured, for machines (MQTT, InfluxDB,
 * the drill report); reasons.ts writes the same facts for people.
 */
import type { ZoneAssessment } from './assessment.js';
import type { Evidence, SensorEvidence } from './types.js';

/** Built from the last assessment; allocates, so only when an event or a status asks for it. */
export function buildEvidence(a: ZoneAssessment, now: number): Evidence {
  const sensors: SensorEvidence[] = a.evals.map((e) => {
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
    chillers: a.chillers.map((c) => c.evidence(now, a.params)),
    agreeingAlarm: a.tally.nAlarm,
    agreeingCritical: a.tally.nCrit,
    k: a.tally.kEff,
    etaCriticalS: a.zoneEta(),
  };
}
