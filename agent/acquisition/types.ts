/** What acquisition produces: one sample per point per poll, whatever happened on the wire. */
export type Quality = 'good' | 'stale' | 'comm_error' | 'sensor_fault' | 'out_of_range';

export interface Sample {
  /** Global point id, `<device>.<point>`. */
  pointId: string;
  deviceId: string;
  /** The engineering value; null whenever quality is not good or stale. A failed read is never a number. */
  value: number | null;
  unit: string;
  quality: Quality;
  /** Wall-clock milliseconds since the epoch, for humans and InfluxDB. */
  ts: number;
  /** Monotonic milliseconds, for rates and dwell. */
  mono: number;
  /** Why the quality is not good (error code, exception, raw value), for logs and events. */
  reason?: string;
  /**
   * Stamped while the wall clock was not known to be synchronised (a Pi without an RTC before NTP):
   * `ts` may be days off. The outbox re-dates it when the clock steps (agent/service/clock-watch.ts).
   */
  clockUnsynced?: true;
  /** The decoded number behind an out_of_range or sensor_fault sample, for diagnosis only. */
  raw?: number;
}

export interface DeviceCounters {
  requests: number;
  responses: number;
  timeouts: number;
  crcErrors: number;
  exceptions: number;
  badFrames: number;
  portErrors: number;
  /**
   * Latency of successful requests, milliseconds, as the line measured it: from the end of the
   * request to the reply, without time queued on the line or spent in the recovery silence.
   */
  latencyLastMs: number;
  latencyAvgMs: number;
  latencyMaxMs: number;
}

/**
 * - online: at least one read of the last poll returned values;
 * - exceptions: the device answers, but every read of the last poll returned a Modbus exception
 *   (wrong register map, unit id of another device type, a device reporting its own failure): look at
 *   the point map or the device, not the cable. lastError names each register and exception code;
 * - failing / offline: no answer (timeouts, CRC, bad frames, a gateway reporting its target silent),
 *   offline after a few polls in a row, or the port is gone.
 */
export type DeviceState = 'unknown' | 'online' | 'exceptions' | 'failing' | 'offline';

export interface DeviceHealth {
  deviceId: string;
  busId: string;
  state: DeviceState;
  consecutiveFailures: number;
  lastError?: string;
  counters: DeviceCounters;
}

export function newCounters(): DeviceCounters {
  return { requests: 0, responses: 0, timeouts: 0, crcErrors: 0, exceptions: 0, badFrames: 0, portErrors: 0, latencyLastMs: 0, latencyAvgMs: 0, latencyMaxMs: 0 };
}
