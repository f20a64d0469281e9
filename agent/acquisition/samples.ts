/**
 * Turns decoded numbers (or failures) into samples with a quality. Pure apart from the small
 * per-point memory needed to notice a frozen sensor.
 *
 * The rule that matters: a failed or implausible read is never a number. comm_error, sensor_fault
 * and out_of_range samples carry `value: null`; only good and stale samples carry a value.
 */
import type { PointDef } from '../config/model.js';
import { readResponseValues } from '../modbus/pdu.js';
import { decodeRaw, registerCount } from './decode.js';
import type { PlannedRead } from './planner.js';
import type { Quality, Sample } from './types.js';

/**
 * A decimal number as sensors and traces write it (no hex, no NaN, no empty string): Number('')
 * is 0, and a blank must never become a reading.
 */
export const NUMBER_TEXT = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

export interface Stamp {
  ts: number;
  mono: number;
}

/** Rounds away binary noise (234 × 0.1 = 23.400000000000002) to the precision the point has. */
function roundToPoint(value: number, point: PointDef, isFloat: boolean): number {
  if (isFloat) return Number(value.toPrecision(7)); // float32 carries ~7 significant digits
  const decimals = Math.max(decimalsOf(point.scale), decimalsOf(point.offset));
  const f = 10 ** Math.min(decimals, 10);
  return Math.round(value * f) / f;
}

function decimalsOf(n: number): number {
  if (Number.isInteger(n)) return 0;
  const s = n.toString();
  const e = s.indexOf('e-');
  if (e >= 0) return Number(s.slice(e + 2));
  return s.length - s.indexOf('.') - 1;
}

export class PointTracker {
  private lastValue: number | undefined;
  private sameSinceMono = 0;

  constructor(readonly point: PointDef) {}

  /** A sample for a successfully decoded raw number. */
  decoded(rawValue: number, rawUnsigned: number | undefined, at: Stamp): Sample {
    const p = this.point;
    const isFloat = 'type' in p && p.type === 'float32';
    if (rawUnsigned !== undefined && 'faultValues' in p && p.faultValues.includes(rawUnsigned)) {
      this.forget();
      return this.make(null, 'sensor_fault', at, `fault value 0x${rawUnsigned.toString(16).toUpperCase()}`, rawValue);
    }
    if (!Number.isFinite(rawValue)) {
      this.forget();
      return this.make(null, 'sensor_fault', at, `not a finite number (${rawValue})`);
    }
    return this.engineering(roundToPoint(rawValue * p.scale + p.offset, p, isFloat), at);
  }

  /**
   * A sample for a value already in engineering units (a recorded trace, an ASCII stream after
   * scaling): range and frozen checks only.
   */
  engineering(value: number, at: Stamp): Sample {
    const p = this.point;
    if (!Number.isFinite(value)) {
      this.forget();
      return this.make(null, 'sensor_fault', at, `not a finite number (${value})`);
    }
    if (p.validRange && (value < p.validRange.min || value > p.validRange.max)) {
      this.forget();
      return this.make(null, 'out_of_range', at, `outside ${p.validRange.min}..${p.validRange.max}`, value);
    }
    let quality: Quality = 'good';
    let reason: string | undefined;
    if (this.lastValue === value) {
      if (p.frozenAfterS !== undefined && at.mono - this.sameSinceMono >= p.frozenAfterS * 1000) {
        quality = 'stale';
        reason = `unchanged for ${Math.round((at.mono - this.sameSinceMono) / 1000)} s`;
      }
    } else {
      this.lastValue = value;
      this.sameSinceMono = at.mono;
    }
    return this.make(value, quality, at, reason);
  }

  /** A sample for a read that failed on the wire. */
  failed(reason: string, at: Stamp): Sample {
    // What the sensor read while we could not see it is unknown: restart the frozen-value clock
    // rather than call the first reading after an outage "unchanged for hours".
    this.forget();
    return this.make(null, 'comm_error', at, reason);
  }

  private forget(): void {
    this.lastValue = undefined;
  }

  private make(value: number | null, quality: Quality, at: Stamp, reason?: string, raw?: number): Sample {
    const s: Sample = { pointId: this.point.id, deviceId: this.point.deviceId, value, unit: this.point.unit, quality, ts: at.ts, mono: at.mono };
    if (reason !== undefined) s.reason = reason;
    if (raw !== undefined) s.raw = raw;
    return s;
  }
}

/**
 * Samples for every point of a successful read, from the reply PDU. Shared by the poller and by
 * firmware-sim's virtual-time sampler (drills, traces), so both decode exactly alike; it lives here,
 * in a pure module, so the simulator never loads acquisition runtime code (issue 11).
 */
export function samplesFromReply(read: PlannedRead, pdu: Buffer, trackers: ReadonlyMap<string, PointTracker>, at: Stamp): Sample[] {
  const values = readResponseValues(read.table, read.quantity, pdu);
  const bits = read.table === 'coil' || read.table === 'discrete';
  return read.items.map((it) => {
    const p = it.point;
    const regs = values.slice(it.offset, it.offset + (bits ? 1 : registerCount(p.type)));
    const raw = decodeRaw(p.type, p.wordOrder, regs, p.bit);
    return trackers.get(p.id)!.decoded(raw.value, raw.rawUnsigned, at);
  });
}
