/**
 * What the HTTP endpoint shows, as plain data: the agent's view (the few read-only calls and events
 * app.ts hands over), the /api/state JSON built from it, the event JSON of /api/events and the SSE
 * stream, and the small in-memory histories behind them. No I/O here: the server in ./http-server.ts
 * does the talking. The JSON shapes are the contract with the status page (agent/observe/status-page.ts).
 */
import type { ActionEvent } from '../outputs/events.js';
import type { DeviceHealth, DeviceState, Sample } from '../acquisition/types.js';
import type { DetectorEvent, ZoneStatus } from '../detection/types.js';
import type { OutboxStats } from '../outputs/outbox.js';

/** Depth (records behind) and lag (age of the oldest unacknowledged record) of one sink, with whatever else it reports. */
export type SinkFigures = { depth: number; lagMs: number } & Record<string, unknown>;

export interface OutputsStats {
  /** Undefined without `outputs:` or while the outbox is stopped. */
  outbox: OutboxStats | undefined;
  /** Per sink name (`mqtt`, `influx`): its own figures. */
  sinks: Record<string, SinkFigures>;
}

export interface Readiness {
  ready: boolean;
  /** Why not, one phrase each (`acquisition not started`, `outbox unavailable`). */
  reasons: string[];
}

/** What the agent tells its observers as it happens. */
export interface ViewListener {
  samples(samples: Sample[]): void;
  detection(event: DetectorEvent): void;
  deviceState(health: DeviceHealth, previous: DeviceState): void;
  /** A successful Modbus exchange and the latency the line measured for it (NaN when it cannot tell). */
  response(deviceId: string, busId: string, latencyMs: number): void;
  /** An action record (attempt, result, inhibition, shutdown step), as the outbox stores it. */
  action(event: ActionEvent): void;
}

/** The agent as the HTTP endpoint sees it: read-only calls, plus a subscription to its events. */
export interface AgentView {
  readonly site: string;
  readonly gateway: string;
  zones(): ZoneStatus[];
  health(): DeviceHealth[];
  outputsStats(): OutputsStats;
  readiness(): Readiness;
  /** Registers the listener; returns the call that removes it. */
  subscribe(listener: ViewListener): () => void;
}

/** One entry of /api/events and of the SSE `event` messages. */
export interface EventJson {
  /** Per process, from 1: the SSE `id`, so a reconnecting client can ask for what it missed. */
  seq: number;
  kind: 'zone_level' | 'zone_blind' | 'device_state' | 'output' | 'action';
  ts: string;
  tsMs: number;
  zone?: string;
  level?: string;
  from?: string;
  blind?: boolean;
  deviceId?: string;
  state?: string;
  message: string;
  detail?: Record<string, unknown>;
}

export interface SensorJson {
  point: string;
  tempC: number | null;
  status: string;
  rateShortCPerMin: number | null;
  rateLongCPerMin: number | null;
  etaCriticalS: number | null;
  /** Last good values, [wall ms, value], oldest first, for sparklines. */
  history: Array<[number, number]>;
}

export interface ZoneJson {
  zone: string;
  level: string;
  blind: boolean;
  sinceS: number;
  etaCriticalS: number | null;
  k: number;
  agreeingAlarm: number;
  agreeingCritical: number;
  sensors: SensorJson[];
}

export interface ChillerJson {
  id: string;
  running: boolean | null;
  alarmCode: number | null;
  supplyTempC: number | null;
  supplyRateCPerMin: number | null;
  corroborates: boolean;
  reason: string;
}

export interface DeviceJson {
  id: string;
  bus: string;
  state: DeviceState;
  lastError: string | null;
  counters: DeviceHealth['counters'];
}

export interface StateJson {
  site: string;
  gateway: string;
  ts: string;
  tsMs: number;
  ready: boolean;
  version: string;
  zones: ZoneJson[];
  chillers: ChillerJson[];
  devices: DeviceJson[];
  outputs: { outbox: Omit<OutboxStats, 'sinks'> | null; sinks: Record<string, SinkFigures> };
}

/** Good values kept per point for the sparklines. */
export const HISTORY_POINTS = 120;

/** The last good values of the points it is told to keep (the zones' temperature sensors). */
export class SensorHistory {
  private readonly byPoint = new Map<string, Array<[number, number]>>();

  constructor(points: Iterable<string>, private readonly max = HISTORY_POINTS) {
    for (const p of points) this.byPoint.set(p, []);
  }

  add(samples: readonly Sample[]): void {
    for (const s of samples) {
      const h = this.byPoint.get(s.pointId);
      if (!h || s.quality !== 'good' || s.value === null) continue;
      h.push([s.ts, s.value]);
      if (h.length > this.max) h.splice(0, h.length - this.max);
    }
  }

  of(pointId: string): Array<[number, number]> {
    return [...(this.byPoint.get(pointId) ?? [])];
  }
}

/** The recent events, newest last, at most `max`; seq numbers go on across evictions. */
export class EventLog {
  private readonly events: EventJson[] = [];
  private seq = 0;

  constructor(private readonly max: number) {}

  push(e: Omit<EventJson, 'seq'>): EventJson {
    const full = { seq: ++this.seq, ...e };
    this.events.push(full);
    if (this.events.length > this.max) this.events.splice(0, this.events.length - this.max);
    return full;
  }

  all(): EventJson[] {
    return [...this.events];
  }

  /** Events after `seq` (a reconnecting SSE client's Last-Event-ID). */
  after(seq: number): EventJson[] {
    return this.events.filter((e) => e.seq > seq);
  }
}

export function detectorEventJson(e: DetectorEvent): Omit<EventJson, 'seq'> {
  const base = { ts: new Date(e.ts).toISOString(), tsMs: e.ts, zone: e.zone, level: e.level };
  const detail = { etaCriticalS: e.evidence.etaCriticalS, agreeingAlarm: e.evidence.agreeingAlarm, agreeingCritical: e.evidence.agreeingCritical, k: e.evidence.k };
  if (e.kind === 'zone_level') return { kind: 'zone_level', ...base, from: e.from, message: `zone ${e.zone}: ${e.from} → ${e.level}: ${e.reason}`, detail };
  return { kind: 'zone_blind', ...base, blind: e.blind, message: `zone ${e.zone}: ${e.reason}`, detail };
}

export function deviceStateEventJson(h: DeviceHealth, previous: DeviceState, tsMs: number): Omit<EventJson, 'seq'> {
  return {
    kind: 'device_state',
    ts: new Date(tsMs).toISOString(),
    tsMs,
    deviceId: h.deviceId,
    state: h.state,
    from: previous,
    message: `device ${h.deviceId}: ${previous} → ${h.state}${h.lastError ? `: ${h.lastError}` : ''}`,
    ...(h.lastError ? { detail: { lastError: h.lastError } } : {}),
  };
}

export function actionEventJson(e: ActionEvent): Omit<EventJson, 'seq'> {
  return {
    kind: 'action',
    ts: new Date(e.ts).toISOString(),
    tsMs: e.ts,
    ...(e.zone !== undefined ? { zone: e.zone } : {}),
    state: e.status,
    message: `action ${e.action}: ${e.status}: ${e.message}`,
    detail: { action: e.action, ...(e.incident !== undefined ? { incident: e.incident } : {}), ...(e.detail ?? {}) },
  };
}

export interface StateInputs {
  site: string;
  gateway: string;
  version: string;
  zones: readonly ZoneStatus[];
  health: readonly DeviceHealth[];
  outputs: OutputsStats;
  ready: boolean;
  history: SensorHistory;
  /** Wall ms (the `ts` a human reads) and monotonic ms (for `sinceS`). */
  wallMs: number;
  monoMs: number;
}

/** The /api/state JSON. A chiller serving several zones appears once (its evidence is the same in each). */
export function buildState(i: StateInputs): StateJson {
  const chillers = new Map<string, ChillerJson>();
  const zones: ZoneJson[] = i.zones.map((z) => {
    for (const c of z.evidence.chillers) {
      if (chillers.has(c.chillerId)) continue;
      chillers.set(c.chillerId, {
        id: c.chillerId,
        running: c.running,
        alarmCode: c.alarmCode,
        supplyTempC: c.supplyTempC,
        supplyRateCPerMin: c.supplyRateCPerMin,
        corroborates: c.corroborates,
        reason: c.reason,
      });
    }
    return {
      zone: z.zone,
      level: z.level,
      blind: z.blind,
      sinceS: Math.max(0, (i.monoMs - z.sinceMono) / 1000),
      etaCriticalS: z.evidence.etaCriticalS,
      k: z.evidence.k,
      agreeingAlarm: z.evidence.agreeingAlarm,
      agreeingCritical: z.evidence.agreeingCritical,
      sensors: z.evidence.sensors.map((s) => ({
        point: s.pointId,
        tempC: s.tempC,
        status: s.status,
        rateShortCPerMin: s.rateShortCPerMin,
        rateLongCPerMin: s.rateLongCPerMin,
        etaCriticalS: s.etaCriticalS,
        history: i.history.of(s.pointId),
      })),
    };
  });
  let outbox: StateJson['outputs']['outbox'] = null;
  if (i.outputs.outbox) {
    const { sinks: _sinks, ...rest } = i.outputs.outbox;
    outbox = rest;
  }
  return {
    site: i.site,
    gateway: i.gateway,
    ts: new Date(i.wallMs).toISOString(),
    tsMs: i.wallMs,
    ready: i.ready,
    version: i.version,
    zones,
    chillers: [...chillers.values()],
    devices: i.health.map((h) => ({ id: h.deviceId, bus: h.busId, state: h.state, lastError: h.lastError ?? null, counters: { ...h.counters } })),
    outputs: { outbox, sinks: i.outputs.sinks },
  };
}
