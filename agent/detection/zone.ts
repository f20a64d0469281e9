/**
 * The zone state machine: normal → warning → alarm → critical, judged on k-of-n agreement between the
 * zone's inlet sensors, corroborated by the chillers that cool the zone.
 *
 * A plain class evaluated at a monotonic time; it reads its sensor and chiller tracks (assessment.ts)
 * and returns the events of that evaluation, with their reasons (reasons.ts) and evidence
 * (evidence.ts). No timers: dwell and clear delays are measured between evaluations, so the caller
 * evaluates on every new sample and on a ~1 s tick.
 */
import type { DetectionParams } from '../config/schema.js';
import { ZoneAssessment } from './assessment.js';
import type { ChillerTrack } from './chiller.js';
import { buildEvidence } from './evidence.js';
import { blindReason, clearReason, raiseReason } from './reasons.js';
import type { SensorTrack } from './sensor.js';
import { LEVELS, levelRank, type DetectorEvent, type Evidence, type Level, type ZoneStatus } from './types.js';

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
  private readonly assessment: ZoneAssessment;

  constructor(id: string, params: DetectionParams, sensors: readonly SensorTrack[], chillers: readonly ChillerTrack[]) {
    this.id = id;
    this.params = params;
    this.sensors = sensors;
    this.chillers = chillers;
    this.assessment = new ZoneAssessment(params, sensors, chillers);
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
    const a = this.assessment;
    const t = a.measure(now);

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
      if (!blind && a.clearable(r)) this.clearSince[r] ??= now;
      else this.clearSince[r] = null;
    }

    const events: DetectorEvent[] = [];
    // Built once, only when there is an event to carry it.
    let evidence: Evidence | null = null;

    if (blind !== this.blindNow) {
      this.blindNow = blind;
      events.push({ kind: 'zone_blind', zone: this.id, blind, level: 'warning', reason: blindReason(a, blind, this.levelNow), mono: now, ts, evidence: (evidence ??= buildEvidence(a, now)) });
    }

    const cur = levelRank(this.levelNow);
    const up = levelRank(supported);
    if (up > cur) {
      for (let r = cur + 1; r <= up; r++) {
        const from = LEVELS[r - 1]!;
        const level = LEVELS[r]!;
        const reason = raiseReason(a, r, supported, now);
        events.push({ kind: 'zone_level', zone: this.id, from, level, reason, mono: now, ts, evidence: (evidence ??= buildEvidence(a, now)) });
      }
      this.levelNow = supported;
      this.sinceMono = now;
      if (supported === 'critical') this.acked = false;
    } else if (up < cur && !blind) {
      // Blind: the zone cannot confirm a clear, so it holds its level.
      const since = this.clearSince[cur] ?? null;
      const latched = this.levelNow === 'critical' && p.criticalLatch === 'ack' && !this.acked;
      if (since !== null && now - since >= p.clearDelayS * 1000 && !latched) {
        // Drop to the highest lower level whose own clear conditions do not hold.
        let target = 0;
        for (let r = cur - 1; r >= 1; r--) {
          if (!a.clearable(r)) {
            target = r;
            break;
          }
        }
        const from = this.levelNow;
        const level = LEVELS[target]!;
        const reason = clearReason(a, from, target, now);
        events.push({ kind: 'zone_level', zone: this.id, from, level, reason, mono: now, ts, evidence: (evidence ??= buildEvidence(a, now)) });
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
    return { zone: this.id, level: this.levelNow, blind: this.blindNow, sinceMono: this.sinceMono ?? now, evidence: buildEvidence(this.assessment, now) };
  }
}
