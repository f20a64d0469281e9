/**
 * The safety gate in front of critical actions (shutdown, failover, anything at level critical):
 * issue 8's "never a single sensor, never stale data alone, never a blind zone". Pure: a detector
 * event and what the engine knows of the zone in, a verdict out. The detector already requires k
 * agreeing sensors; this re-checks from the evidence itself, so a detector bug or a lowered k
 * (chiller corroboration lowers k to 1) cannot power a room down on one reading.
 */
import type { DetectorEvent } from '../detection/types.js';

/** At least this many good sensors must agree on the critical condition, whatever k says. */
export const MIN_CRITICAL_SENSORS = 2;

export type GateVerdict = { pass: true; agreeing: number; needed: number } | { pass: false; why: string };

/**
 * Whether `event` may trigger critical actions. `zoneK` is the zone's configured k (evidence.k may be
 * lower when a chiller corroborates); `blind` is the engine's last knowledge from zone_blind events.
 */
export function criticalGate(event: DetectorEvent, zoneK: number, blind: boolean): GateVerdict {
  if (event.kind === 'zone_blind') return { pass: false, why: 'a zone_blind event never triggers actions' };
  if (event.level !== 'critical') return { pass: false, why: `the zone is ${event.level}, not critical` };
  if (blind) return { pass: false, why: 'the zone is blind (fewer than k sensors with good data)' };
  const ev = event.evidence;
  // Counted from the sensors themselves: good status (fresh, in range, not frozen) and a critical flag.
  const agreeing = ev.sensors.filter((s) => s.status === 'good' && (s.flags.includes('critical_eta') || s.flags.includes('critical_temp'))).length;
  const needed = Math.max(MIN_CRITICAL_SENSORS, zoneK, ev.k);
  if (ev.agreeingCritical < ev.k) return { pass: false, why: `no quorum: ${ev.agreeingCritical} sensor(s) agree on critical, k is ${ev.k}` };
  if (agreeing < needed) {
    return { pass: false, why: `${agreeing} good sensor(s) agree on critical, ${needed} needed (never a single sensor, never stale data)` };
  }
  return { pass: true, agreeing, needed };
}
