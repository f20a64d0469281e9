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

export type OutboxEvent = DetectorEvent | DeviceStateEvent | ActionEvent | OutputNotice;

/** What is appended: a telemetry sample (droppable when the buffer is full) or an event (never dropped). */
export type OutboxEntry = { type: 'sample'; sample: Sample; zone?: string } | { type: 'event'; event: OutboxEvent };

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

export function isGapNotice(entry: OutboxEntry): boolean {
  return entry.type === 'event' && entry.event.kind === 'output' && entry.event.code === 'outbox_gap';
}
