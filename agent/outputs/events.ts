/**
 * The system's events and the records the outbox hands to its consumers: what acquisition, detection,
 * the actions and the outputs layer itself have to say. Plain types, no I/O; outbox.ts re-exports
 * them so `import type { … } from './outbox.js'` keeps working.
 */
import type { DeviceState, Sample } from '../acquisition/types.js';
import type { DetectorEvent } from '../detection/types.js';

/** A device changed availability (from acquisition's device health). */
export interface DeviceStateEvent {
  kind: 'device_state';
  deviceId: string;
  state: DeviceState;
  previous: DeviceState;
  /** Wall ms. */
  ts: number;
  reason?: string;
}

/** Something an action did or failed to do (exec, http, shutdown …). */
export interface ActionEvent {
  kind: 'action';
  action: string;
  /** e.g. started, succeeded, failed, skipped. */
  status: string;
  zone?: string;
  /** The incident the action belongs to (one per zone escalation episode); every action record carries it. */
  incident?: string;
  ts: number;
  message: string;
  detail?: Record<string, unknown>;
}

export type OutputNoticeCode =
  /** Telemetry that was not stored (byte cap, disk reserve, outbox unwritable): one event per hole. */
  | 'outbox_gap'
  | 'outbox_corrupt'
  /** The file was deleted or replaced while open: it was written back to its path from the open handle. */
  | 'outbox_restored'
  | 'outbox_over_capacity'
  /** The outbox cannot be opened or written: events are held in memory and still reach live sinks. */
  | 'outbox_unavailable'
  /** The in-memory event queue overflowed while the outbox was unwritable: the oldest events are gone. */
  | 'outbox_events_dropped'
  | 'mqtt_publish_rejected'
  | 'influx_point_quarantined'
  /** InfluxDB answered 401/403 (credentials, write permission): once per episode, until a write succeeds. */
  | 'influx_auth_failed'
  /** A SIGHUP found an invalid configuration (every problem in detail.problems): the agent runs on the old one. */
  | 'config_reload_failed';

/** What the outputs layer itself has to report: dropped telemetry, a damaged buffer, a refused point. */
export interface OutputNotice {
  kind: 'output';
  code: OutputNoticeCode;
  severity: 'warning' | 'error';
  message: string;
  ts: number;
  detail: Record<string, unknown>;
}

/**
 * The wall clock was stepped (NTP after a boot without an RTC, or by hand): wall time moved by `stepMs`
 * more than monotonic time did. Records still in the outbox that were stamped on the old time base
 * were re-dated by `stepMs` (see agent/service/clock-watch.ts).
 */
export interface ClockStepEvent {
  kind: 'clock_step';
  /** Wall ms after the step (this event's time, on the new base). */
  ts: number;
  /** Signed size of the step, ms (negative: the clock went back). */
  stepMs: number;
  /** Wall ms just before and just after the step, as the agent saw them. */
  oldWallMs: number;
  newWallMs: number;
  /** Outbox records re-dated onto the new time base. */
  redated: number;
  message: string;
}

export type OutboxEvent = DetectorEvent | DeviceStateEvent | ActionEvent | OutputNotice | ClockStepEvent;

/**
 * Marks an entry stamped while the wall clock was not known to be synchronised. A sample carries it as
 * `sample.clockUnsynced`; an event carries it on the entry, with the monotonic time it was appended
 * (`mono`), so a later clock step can tell whether it was stamped before the step. `clockRedatedMs` is
 * set on an entry whose time was moved by a clock step.
 */
export interface ClockMarks {
  clockUnsynced?: true;
  mono?: number;
  clockRedatedMs?: number;
}

/** What is appended: a telemetry sample (droppable when the buffer is full) or an event (never dropped). */
export type OutboxEntry = ({ type: 'sample'; sample: Sample; zone?: string } | { type: 'event'; event: OutboxEvent }) & ClockMarks;

export type RecordClass = 'telemetry' | 'event';

export interface OutboxRecord {
  /** Append order; strictly increasing, never reused within one outbox file. */
  seq: number;
  cls: RecordClass;
  /** The sample's or event's own wall time, ms. */
  ts: number;
  entry: OutboxEntry;
}

export function entryTs(entry: OutboxEntry): number {
  return entry.type === 'sample' ? entry.sample.ts : entry.event.ts;
}

export function entryClass(entry: OutboxEntry): RecordClass {
  return entry.type === 'sample' ? 'telemetry' : 'event';
}

/** The entry was stamped while the clock was not known to be synchronised (and not re-dated since). */
export function isClockUnsynced(entry: OutboxEntry): boolean {
  return entry.type === 'sample' ? entry.sample.clockUnsynced === true : entry.clockUnsynced === true;
}

export function isGapNotice(entry: OutboxEntry): boolean {
  return entry.type === 'event' && entry.event.kind === 'output' && entry.event.code === 'outbox_gap';
}

/**
 * Moves one buffered record onto the new time base after a clock step (in place); see Outbox.redate().
 * True when its time was moved. The outbox store does the same for the rows in its file, in SQL.
 */
export function redateRecord(r: OutboxRecord & { at: number }, step: { stepMs: number; newOffsetMs: number; toleranceMs: number }): boolean {
  const e = r.entry;
  if (!isClockUnsynced(e)) {
    // Stamped while the clock was taken as right: its time stays; only the append time follows.
    r.at += step.stepMs;
    return false;
  }
  const mono = e.type === 'sample' ? e.sample.mono : e.mono;
  const ts = entryTs(e);
  const onNewBase = mono !== undefined && Math.abs(ts - mono - step.newOffsetMs) <= step.toleranceMs;
  // New objects, not edits: the sample is shared with the detector and the agent's listeners.
  const d = onNewBase ? 0 : step.stepMs;
  if (e.type === 'sample') {
    const { clockUnsynced: _u, ...sample } = e.sample;
    r.entry = { ...e, sample: { ...sample, ts: sample.ts + d } };
  } else {
    const { clockUnsynced: _u, ...rest } = e;
    r.entry = { ...rest, event: { ...e.event, ts: e.event.ts + d } };
  }
  if (onNewBase) return false;
  r.entry.clockRedatedMs = d;
  r.at += d;
  r.ts += d;
  return true;
}
