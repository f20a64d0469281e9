/**
 * Replay and drills run exactly the production detection code (Detector) on virtual time: the
 * monotonic time of each sample is its time in the trace, so a week replays in seconds.
 */
import type { Config } from '../config/model.js';
import { Detector } from './detector.js';
import type { TraceBatch } from './trace.js';
import type { DetectorEvent } from './types.js';

export interface TimedEvent {
  /** Seconds from the trace's start. */
  timeS: number;
  event: DetectorEvent;
}

export interface ReplayResult {
  events: TimedEvent[];
  rows: number;
  durationS: number;
}

/**
 * Feeds batches to a fresh Detector in time order, ticking it at every new time so dwell, clear
 * delays and staleness advance even where a zone's own sensors are silent. `onBatch` sees each
 * batch after the detector (drills use it to collect series).
 */
export function replay(config: Config, batches: Iterable<TraceBatch>, onBatch?: (b: TraceBatch, detector: Detector) => void): ReplayResult {
  const detector = new Detector(config);
  const events: TimedEvent[] = [];
  let rows = 0;
  let lastTime = Number.NaN;
  for (const b of batches) {
    const first = b.samples[0];
    if (!first) continue;
    if (b.timeS !== lastTime) {
      for (const e of detector.tick(first.mono, first.ts)) events.push({ timeS: b.timeS, event: e });
      lastTime = b.timeS;
    }
    for (const e of detector.ingest(b.samples)) events.push({ timeS: b.timeS, event: e });
    rows += b.samples.length;
    onBatch?.(b, detector);
  }
  return { events, rows, durationS: Number.isNaN(lastTime) ? 0 : lastTime };
}

/** One JSON object per event, as `rackguard replay --json` prints it. */
export function eventJson(t: TimedEvent): Record<string, unknown> {
  const e = t.event;
  const base = {
    time_s: Math.round(t.timeS * 1000) / 1000,
    zone: e.zone,
    kind: e.kind,
    level: e.level,
    from: e.kind === 'zone_level' ? e.from : null,
    reason: e.reason,
    eta_critical_s: e.evidence.etaCriticalS === null ? null : Math.round(e.evidence.etaCriticalS),
  };
  return e.kind === 'zone_blind' ? { ...base, blind: e.blind } : base;
}

/** A human line: `  612.0 s  cold-aisle-a  warning → alarm  <reason>`. */
export function eventLine(t: TimedEvent): string {
  const e = t.event;
  const what = e.kind === 'zone_level' ? `${e.from} → ${e.level}` : e.blind ? 'BLIND (quorum lost)' : 'quorum restored';
  return `${t.timeS.toFixed(1).padStart(9)} s  ${e.zone.padEnd(14)} ${what.padEnd(20)} ${e.reason}`;
}
