/**
 * The reason text of zone events, written for the operator who reads it at 3 a.m.: which sensors,
 * which criterion, the numbers, and the chiller that corroborates (`2 of 4 sensors rising ≥ 1 °C/min
 * for 30 s: rack01 1.85, rack02 1.92 °C/min; chiller ch1 tripped`).
 *
 * Pure: text from the zone's last assessment, nothing is decided here.
 */
import { LEVELS, levelRank, type Level } from './types.js';
import { clearThresholdC, type ZoneAssessment } from './assessment.js';
import { fmtRate, fmtS, fmtTemp } from './format.js';

/** Why the zone rises to level rank `r` on its way to `target` (intermediate levels say so). */
export function raiseReason(a: ZoneAssessment, r: number, target: Level, now: number): string {
  const level = LEVELS[r]!;
  return a.holds(r) ? levelReason(a, level, now) : `${level} on the way to ${target}`;
}

/**
 * Why the zone drops from `from` to level rank `target`: what cleared and for how long, and, when it
 * stops above normal, what still holds it there.
 */
export function clearReason(a: ZoneAssessment, from: Level, target: number, now: number): string {
  const p = a.params;
  let reason = `${from} cleared: ${clearedPhrase(a, levelRank(from))} for ${fmtS(p.clearDelayS)} s`;
  if (from === 'critical' && p.criticalLatch === 'ack') reason += ' (acknowledged)';
  if (target > 0) {
    const level = LEVELS[target]!;
    reason += `; still ${level}: ${a.holds(target) ? levelReason(a, level, now) : bandPhrase(a, target)}`;
  }
  return reason;
}

/** Quorum lost (naming the sensors that are not good) or back. */
export function blindReason(a: ZoneAssessment, blind: boolean, holding: Level): string {
  const t = a.tally;
  const n = a.evals.length;
  if (!blind) return `quorum back: ${t.good} of ${n} sensors good, ${a.params.k} needed`;
  const bad = a.evals.filter((e) => !e.good && e.status !== 'no_data').map((e) => `${e.label} ${e.status}`);
  return `quorum lost: ${t.good} of ${n} sensors good, ${a.params.k} needed (${bad.join(', ')}); holding ${holding}`;
}

function levelReason(a: ZoneAssessment, level: Level, now: number): string {
  switch (level) {
    case 'warning':
      return warningReason(a);
    case 'alarm':
      return alarmReason(a, now);
    case 'critical':
      return criticalReason(a, now);
    default:
      return 'normal';
  }
}

function clearedPhrase(a: ZoneAssessment, r: number): string {
  const threshold = clearThresholdC(a.params, r);
  const cond = r === 1 ? 'no sensor anomalous' : r === 2 ? 'alarm condition gone' : 'critical condition gone';
  const temps = r === 1 ? `all sensors below ${threshold} °C` : `fewer than ${a.tally.kEff} sensors at ≥ ${threshold} °C`;
  return `${cond} and ${temps}`;
}

function bandPhrase(a: ZoneAssessment, r: number): string {
  const p = a.params;
  const threshold = clearThresholdC(p, r);
  const items = a.evals.filter((e) => e.good && e.tempC !== null && e.tempC >= threshold).map((e) => `${e.label} ${fmtTemp(e.tempC!)}`);
  return `${items.length} sensor${items.length === 1 ? '' : 's'} within ${p.hysteresisC} °C of ${threshold + p.hysteresisC} °C: ${items.join(', ')} °C`;
}

function warningReason(a: ZoneAssessment): string {
  const p = a.params;
  const items: string[] = [];
  for (const e of a.evals) {
    if (e.warnTemp) items.push(`${e.label} at ${fmtTemp(e.tempC!)} °C ≥ ${p.warnTempC} °C`);
    if (e.warnRate) items.push(`${e.label} rising ${fmtRate(e.rateLong!)} °C/min ≥ ${p.warnRateCPerMin} °C/min over ${p.longWindowS} s`);
    if (e.stale) items.push(`${e.label} stale (no good sample for ${p.staleAfterS} s)`);
    if (e.fault) items.push(`${e.label} ${e.status}`);
  }
  const n = a.evals.filter((e) => e.warnTemp || e.warnRate || e.stale || e.fault).length;
  return `${n} sensor${n === 1 ? '' : 's'} anomalous: ${items.join('; ')}`;
}

function agreeHead(a: ZoneAssessment, count: number, what: string): string {
  const t = a.tally;
  const dwell = t.dwellS > 0 ? ` for ${fmtS(t.dwellS)} s` : '';
  return `${count} of ${a.evals.length} sensors ${what}${dwell}`;
}

function chillerSuffix(a: ZoneAssessment, now: number): string {
  const parts: string[] = [];
  for (const ch of a.chillers) {
    const r = ch.reason(now, a.params);
    if (r !== '') parts.push(r);
  }
  if (parts.length === 0) return '';
  const lowered = a.tally.kEff < a.params.k ? ` (k lowered to ${a.tally.kEff})` : '';
  return `; ${parts.join('; ')}${lowered}`;
}

function alarmReason(a: ZoneAssessment, now: number): string {
  const p = a.params;
  const shortItems: string[] = [];
  const longItems: string[] = [];
  const tempItems: string[] = [];
  for (const e of a.evals) {
    // Each agreeing sensor is listed once, under the first criterion it meets.
    if (e.alarmShort) shortItems.push(`${e.label} ${fmtRate(e.rateShort!)}`);
    else if (e.alarmLong) longItems.push(`${e.label} ${fmtRate(e.rateLong!)}`);
    else if (e.alarmTemp) tempItems.push(`${e.label} ${fmtTemp(e.tempC!)}`);
  }
  const groups: [string, string][] = [];
  if (shortItems.length) groups.push([`rising ≥ ${a.tally.shortRateC} °C/min`, `${shortItems.join(', ')} °C/min`]);
  if (longItems.length) groups.push([`rising ≥ ${p.alarmLongRateCPerMin} °C/min over ${p.longWindowS} s`, `${longItems.join(', ')} °C/min`]);
  if (tempItems.length) groups.push([`at ≥ ${p.alarmTempC} °C`, `${tempItems.join(', ')} °C`]);
  return groupedReason(a, a.tally.nAlarm, groups) + chillerSuffix(a, now);
}

function criticalReason(a: ZoneAssessment, now: number): string {
  const p = a.params;
  const tempItems: string[] = [];
  const etaItems: string[] = [];
  for (const e of a.evals) {
    if (e.critTemp) tempItems.push(`${e.label} ${fmtTemp(e.tempC!)}`);
    else if (e.critEta) etaItems.push(`${e.label} in ${fmtS(e.eta!)} s (long-window ETA ${e.etaLong === null ? 'n/a' : `${fmtS(e.etaLong)} s`})`);
  }
  const groups: [string, string][] = [];
  if (tempItems.length) groups.push([`at ≥ ${p.criticalTempC} °C`, `${tempItems.join(', ')} °C`]);
  if (etaItems.length) groups.push([`reaching ${p.criticalTempC} °C within ${p.horizonS} s`, etaItems.join(', ')]);
  const eta = a.zoneEta();
  const etaText = eta === null ? '' : `; zone ETA ${fmtS(eta)} s`;
  return groupedReason(a, a.tally.nCrit, groups) + etaText + chillerSuffix(a, now);
}

function groupedReason(a: ZoneAssessment, count: number, groups: [string, string][]): string {
  if (groups.length === 1) return `${agreeHead(a, count, groups[0]![0])}: ${groups[0]![1]}`;
  return `${agreeHead(a, count, 'agree')}: ${groups.map(([what, items]) => `${what}: ${items}`).join('; ')}`;
}
