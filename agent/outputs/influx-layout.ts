/**
 * The InfluxDB layout, as a plain function over plain data: which point each outbox record becomes.
 *
 * Every point is tagged site and gateway:
 *   environment  samples        tags device, point, zone (when the point is a zone sensor); fields value (float), quality (string)
 *   chiller      chiller points tags chiller, role, device, point;                         fields value (float), quality (string)
 *   zone_level   zone level     tags zone;   fields level, from, level_rank (int), reason, eta_critical_s, agreeing_alarm, agreeing_critical
 *   events       every event    tags kind (+ zone / device / action / code); fields message, severity, json
 *
 * A sample or event still stamped on an unsynchronised clock (written only after the InfluxDB sink's
 * `clock.unsyncedHoldS`) also gets the field clock_unsynced = true: its time may be days off.
 *
 * Timestamps are the record's original wall time in ms, so a resend after a crash or an outage
 * overwrites the same point (same measurement, tags and time): delivery is at-least-once, storage
 * exactly-once. Events and zone levels get `seq mod 1e6` as the nanoseconds below that millisecond:
 * one evaluation can move a zone normal → warning → alarm in the same millisecond, and with equal tags
 * and time InfluxDB would keep only the last; with the seq each transition is its own point, a resend of
 * the same record still lands on the same one, and the order within the millisecond is the append order,
 * so `last(level_rank)` in a Grafana panel is the level the zone ended at. (A tag such as the seq would
 * also keep them apart, but would make every transition its own series.)
 */
import type { IPoint } from 'influx';
import { LEVELS } from '../detection/types.js';
import type { OutputContext } from './context.js';
import type { OutboxRecord } from './outbox.js';

/** A point and the record it came from (a quarantine names it). */
export interface TaggedPoint {
  point: IPoint;
  seq: number;
  /** Point id or event kind, for the quarantine event. */
  label: string;
}

/** `ms` as a nanosecond timestamp string, exact (a double cannot hold epoch nanoseconds). */
export function msToNs(ms: number): string {
  return `${Math.round(ms)}000000`;
}

/** `ms` plus `seq mod 1e6` nanoseconds: distinct per record, the same on every resend of it. */
export function msWithSeqNs(ms: number, seq: number): string {
  return `${Math.round(ms)}${String(seq % 1_000_000).padStart(6, '0')}`;
}

/** Pure mapping of outbox records to InfluxDB points (no I/O). */
export function toPoints(records: readonly OutboxRecord[], context: OutputContext, measurementPrefix = ''): TaggedPoint[] {
  const { site, gateway, points: info } = context;
  const measurement = (name: string): string => `${measurementPrefix}${name}`;
  const out: TaggedPoint[] = [];
  for (const r of records) {
    const e = r.entry;
    if (e.type === 'sample') {
      const s = e.sample;
      const meta = info.get(s.pointId);
      const fields: Record<string, number | string | boolean> = { quality: s.quality };
      if (s.value !== null) fields.value = s.value;
      if (s.clockUnsynced) fields.clock_unsynced = true;
      const timestamp = msToNs(s.ts);
      if (meta?.chiller) {
        out.push({ seq: r.seq, label: s.pointId, point: { measurement: measurement('chiller'), tags: { site, gateway, chiller: meta.chiller.id, role: meta.chiller.role, device: s.deviceId, point: s.pointId }, fields, timestamp } });
      } else {
        const zone = e.zone ?? meta?.zones[0];
        out.push({ seq: r.seq, label: s.pointId, point: { measurement: measurement('environment'), tags: { site, gateway, device: s.deviceId, point: s.pointId, ...(zone ? { zone } : {}) }, fields, timestamp } });
      }
      continue;
    }
    const ev = e.event;
    const timestamp = msWithSeqNs(ev.ts, r.seq);
    const tags: Record<string, string> = { site, gateway, kind: ev.kind };
    let message: string;
    let severity: string;
    switch (ev.kind) {
      case 'zone_level':
        tags.zone = ev.zone;
        message = `zone ${ev.zone}: ${ev.from} -> ${ev.level}: ${ev.reason}`;
        severity = ev.level;
        out.push({
          seq: r.seq,
          label: `zone ${ev.zone}`,
          point: {
            measurement: measurement('zone_level'),
            tags: { site, gateway, zone: ev.zone },
            fields: {
              level: ev.level,
              from: ev.from,
              level_rank: LEVELS.indexOf(ev.level),
              reason: ev.reason,
              agreeing_alarm: ev.evidence.agreeingAlarm,
              agreeing_critical: ev.evidence.agreeingCritical,
              ...(ev.evidence.etaCriticalS !== null ? { eta_critical_s: ev.evidence.etaCriticalS } : {}),
            },
            timestamp,
          },
        });
        break;
      case 'zone_blind':
        tags.zone = ev.zone;
        message = `zone ${ev.zone} ${ev.blind ? 'blind' : 'sees again'}: ${ev.reason}`;
        severity = ev.level;
        break;
      case 'device_state':
        tags.device = ev.deviceId;
        message = `device ${ev.deviceId}: ${ev.previous} -> ${ev.state}${ev.reason ? ` (${ev.reason})` : ''}`;
        // Offline, a device answering only with exceptions, or a state added later: warn.
        severity = ['online', 'failing', 'unknown'].includes(ev.state) ? 'info' : 'warning';
        break;
      case 'action':
        tags.action = ev.action;
        if (ev.zone) tags.zone = ev.zone;
        message = ev.message;
        severity = ev.status === 'failed' ? 'error' : 'info';
        break;
      case 'output':
        tags.code = ev.code;
        message = ev.message;
        severity = ev.severity;
        break;
      default: {
        // An event kind added later still reaches InfluxDB, as its JSON.
        const other = ev as { kind: string; message?: unknown };
        message = typeof other.message === 'string' ? other.message : other.kind;
        severity = 'info';
      }
    }
    out.push({ seq: r.seq, label: ev.kind, point: { measurement: measurement('events'), tags, fields: { message, severity, json: JSON.stringify(ev), ...(e.clockUnsynced ? { clock_unsynced: true } : {}) }, timestamp } });
  }
  return out;
}
