/**
 * The validated, resolved configuration handed to components: profiles expanded, point ids made
 * global (`<device>.<point>`), defaults applied, deep-frozen. Components never see raw YAML.
 */
import type { DetectionParams, ParsedConfig, ModbusPointConfig, StreamPointConfig } from './schema.js';

export type ModbusPointDef = ModbusPointConfig & {
  /** Global id: `<device id>.<name>`. */
  id: string;
  deviceId: string;
};

export type StreamPointDef = StreamPointConfig & { id: string; deviceId: string };

export interface DeviceDef {
  id: string;
  busId: string;
  unitId: number;
  profile?: string;
  pollIntervalMs: number;
  timeoutMs: number;
  maxReadRegisters: number;
  maxGapRegisters: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  points: ModbusPointDef[];
}

type BusOf<T extends ParsedConfig['buses'][number]['type']> = Extract<ParsedConfig['buses'][number], { type: T }>;

export type SerialBusDef = Omit<BusOf<'serial'>, 'devices' | 'interFrameGapMs'> & {
  interFrameGapMs: number;
  devices: DeviceDef[];
};
export type TcpBusDef = Omit<BusOf<'tcp'>, 'devices'> & { devices: DeviceDef[] };
export type StreamBusDef = Omit<BusOf<'serial-stream'>, 'points'> & { points: StreamPointDef[] };
export type BusDef = SerialBusDef | TcpBusDef | StreamBusDef;

export type PointDef = ModbusPointDef | StreamPointDef;

export interface ZoneDef {
  id: string;
  sensors: string[];
  detection: DetectionParams;
}

export interface Config {
  version: number;
  site: string;
  gateway: string;
  logging: ParsedConfig['logging'];
  buses: BusDef[];
  /** Zones with their detection parameters resolved (defaults, then `detection:`, then the zone's own). */
  zones: ZoneDef[];
  chillers: ParsedConfig['chillers'];
  /** Outbox and sinks; undefined when the config has no `outputs:`. The outbox path is absolute. */
  outputs: ParsedConfig['outputs'];
  /** Actions on escalation; undefined when not configured. Paths are absolute. */
  actions: ParsedConfig['actions'];
  /** Local HTTP endpoint (metrics, state, status page); undefined when not configured. */
  http: ParsedConfig['http'];
  /** Clock sanity (steps, unsynchronised clock); defaults when absent. */
  clock?: ParsedConfig['clock'];
  /** One deadline for stopping every component, seconds. */
  stopTimeoutS: number;
  /** Every point by global id. */
  points: ReadonlyMap<string, PointDef>;
  /** Where the config was read from, for messages. */
  source: string;
}

/** Modbus RTU inter-frame silence: 3.5 character times, fixed at 1.75 ms above 19200 baud (§2.5.1.1). */
export function defaultInterFrameGapMs(baudRate: number, dataBits = 8, parity = 'none', stopBits = 1): number {
  if (baudRate > 19200) return 1.75;
  const bitsPerChar = 1 + dataBits + (parity === 'none' ? 0 : 1) + stopBits;
  return (3.5 * bitsPerChar * 1000) / baudRate;
}
