/**
 * Scenario files: what happens to the simulated rack, and when. Validated like the agent's config:
 * every problem at once, each with its path (`events[2].fault: expected one of …`).
 *
 *   name: chiller-trip
 *   description: Chiller trips at t=600 s; room heats at 2 °C/min at first.
 *   durationS: 3600
 *   seed: 1
 *   room: { itLoadKw: 100, initialRiseCPerMin: 2 }
 *   events:
 *     - { at: 600, chiller: trip }                      # trip (alarmCode) | partial (capacity, reportRunning) | restore
 *     - { at: 900, device: rack04, fault: silent }      # silent | crc | exception (code) | late (delayMs) | none
 *     - { at: 950, sensor: rack03.temperature, fault: freeze }   # freeze | dead | glitch (deltaC) | drift (rateCPerMin) | none
 *     - { at: 1200, door: [rack01, rack02], deltaC: 3, durationS: 120 }
 *
 * An event's kind is chosen by which of the keys chiller, device, sensor or door it has; each kind is
 * then checked against its own strict schema, so a typo gives one precise message, not a union dump.
 */
import { z } from 'zod';
import { RackguardError } from '../agent/errors.js';
import { formatIssues, yamlToData } from '../agent/config/load.js';
import { readRegularFile } from '../agent/config/read-file.js';
import type { Config } from '../agent/config/model.js';
import type { RoomParamsInput } from './thermal.js';

export type ChillerAction =
  | { kind: 'chiller'; action: 'trip'; alarmCode?: number }
  | { kind: 'chiller'; action: 'partial'; capacity: number; reportRunning: boolean }
  | { kind: 'chiller'; action: 'restore' };

/** A fault of a whole device, as seen on the wire. */
export type DeviceFault =
  | { type: 'silent' }
  | { type: 'crc' }
  | { type: 'exception'; code: number }
  | { type: 'late'; delayMs: number }
  | { type: 'none' };

/** A fault of one point (a sensor element), as seen in its registers. */
export type SensorFault =
  | { type: 'freeze' }
  | { type: 'dead' }
  | { type: 'glitch'; deltaC: number }
  /** A failing sensor element whose reading runs away on its own, at rateCPerMin from the moment it starts. */
  | { type: 'drift'; rateCPerMin: number }
  | { type: 'none' };

export type ScenarioAction =
  | ChillerAction
  | { kind: 'device'; device: string; fault: DeviceFault }
  | { kind: 'sensor'; sensor: string; fault: SensorFault }
  /** `door` lists device ids (their temperature points) or temperature point ids. */
  | { kind: 'door'; door: string[]; deltaC: number; durationS: number };

export type ScenarioEvent = ScenarioAction & {
  /** Simulated time of the event, s from the start. */
  at: number;
};

export interface Scenario {
  name: string;
  description: string;
  /** How long the scenario is meant to run, s; informative (the simulator keeps going). */
  durationS?: number;
  seed: number;
  room: RoomParamsInput;
  /** Sorted by `at` (stable: events at the same time keep their file order). */
  events: ScenarioEvent[];
  source: string;
}

export class ScenarioError extends RackguardError {
  readonly problems: string[];
  constructor(source: string, problems: string[]) {
    super('E_SCENARIO_INVALID', `${source}: invalid scenario (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n  ${problems.join('\n  ')}`);
    this.problems = problems;
  }
}

const finite = z.number();
const at = z.number().min(0);

const roomSchema = z
  .object({
    itLoadKw: z.number().positive().optional(),
    setpointC: finite.optional(),
    thermalMassKjPerK: z.number().positive().optional(),
    initialRiseCPerMin: z.number().positive().optional(),
    leakKwPerK: z.number().min(0).optional(),
    coolingMaxKw: z.number().min(0).optional(),
    controlGainKwPerK: z.number().positive().optional(),
    cyclingAmplitudeC: z.number().min(0).optional(),
    cyclingPeriodS: z.number().positive().optional(),
    noiseC: z.number().min(0).optional(),
    sensorOffsetMaxC: z.number().min(0).optional(),
    sensorOffsetsC: z.record(z.string(), finite).optional(),
    humidityAtSetpointPct: z.number().min(0).max(100).optional(),
    supplyNormalC: finite.optional(),
    supplyTrippedC: finite.optional(),
    supplyDriftCPerMin: z.number().positive().optional(),
    supplyPartialRiseC: z.number().min(0).optional(),
    returnDeltaC: z.number().min(0).optional(),
    tripAlarmCode: z.int().min(0).max(0xffff).optional(),
    doorTimeConstantS: z.number().positive().optional(),
  })
  .strict();

const scenarioSchema = z
  .object({
    name: z.string().min(1),
    description: z.string().default(''),
    durationS: z.number().positive().optional(),
    seed: z.int().min(0).max(0xffffffff).default(1),
    room: roomSchema.default({}),
    // Each event is checked on its own below, once its kind is known.
    events: z.array(z.unknown()).default([]),
  })
  .strict();

const CHILLER_ACTIONS = ['trip', 'partial', 'restore'] as const;
const DEVICE_FAULTS = ['silent', 'crc', 'exception', 'late', 'none'] as const;
const SENSOR_FAULTS = ['freeze', 'dead', 'glitch', 'drift', 'none'] as const;
const EVENT_KEYS = ['chiller', 'device', 'sensor', 'door'] as const;

const chillerSchemas = {
  trip: z.object({ at, chiller: z.literal('trip'), alarmCode: z.int().min(0).max(0xffff).optional() }).strict(),
  partial: z
    .object({ at, chiller: z.literal('partial'), capacity: z.number().min(0).max(1).default(0.7), reportRunning: z.boolean().default(true) })
    .strict(),
  restore: z.object({ at, chiller: z.literal('restore') }).strict(),
};

const deviceBase = { at, device: z.string().min(1) };
const deviceSchemas = {
  silent: z.object({ ...deviceBase, fault: z.literal('silent') }).strict(),
  crc: z.object({ ...deviceBase, fault: z.literal('crc') }).strict(),
  exception: z.object({ ...deviceBase, fault: z.literal('exception'), code: z.int().min(1).max(255).default(4) }).strict(),
  late: z.object({ ...deviceBase, fault: z.literal('late'), delayMs: z.number().min(0) }).strict(),
  none: z.object({ ...deviceBase, fault: z.literal('none') }).strict(),
};

const sensorBase = { at, sensor: z.string().min(1) };
const sensorSchemas = {
  freeze: z.object({ ...sensorBase, fault: z.literal('freeze') }).strict(),
  dead: z.object({ ...sensorBase, fault: z.literal('dead') }).strict(),
  glitch: z.object({ ...sensorBase, fault: z.literal('glitch'), deltaC: finite.default(10) }).strict(),
  drift: z.object({ ...sensorBase, fault: z.literal('drift'), rateCPerMin: finite }).strict(),
  none: z.object({ ...sensorBase, fault: z.literal('none') }).strict(),
};

const doorSchema = z
  .object({ at, door: z.array(z.string().min(1)).min(1), deltaC: finite, durationS: z.number().positive() })
  .strict();

type Issue = z.core.$ZodIssue;

function prefixed(issues: readonly Issue[], prefix: PropertyKey[]): Issue[] {
  return issues.map((i) => ({ ...i, path: [...prefix, ...i.path] }) as Issue);
}

/** Picks the strict schema of `sub` (the value of `field`), or reports a bad value of `field`. */
function pickSchema<K extends string, S extends z.ZodType>(
  raw: Record<string, unknown>,
  field: string,
  choices: readonly K[],
  schemas: Record<K, S>,
  path: PropertyKey[],
  issues: Issue[],
): S | undefined {
  const sel = z.object({ [field]: z.enum(choices as unknown as [K, ...K[]]) }).loose().safeParse(raw, { reportInput: true });
  if (!sel.success) {
    issues.push(...prefixed(sel.error.issues, path));
    return undefined;
  }
  return schemas[raw[field] as K];
}

function parseEvent(raw: unknown, index: number, issues: Issue[]): ScenarioEvent | undefined {
  const path: PropertyKey[] = ['events', index];
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    issues.push({ code: 'invalid_type', expected: 'object', input: raw, path, message: '' } as Issue);
    return undefined;
  }
  const obj = raw as Record<string, unknown>;
  const keys = EVENT_KEYS.filter((k) => k in obj);
  if (keys.length !== 1) {
    issues.push({
      code: 'custom',
      input: raw,
      path,
      message: keys.length === 0 ? `needs one of the keys ${EVENT_KEYS.join(', ')}` : `has more than one of the keys ${keys.join(', ')}`,
    } as Issue);
    return undefined;
  }
  const kind = keys[0]!;
  const check = <T>(schema: z.ZodType<T> | undefined): T | undefined => {
    if (!schema) return undefined;
    const r = schema.safeParse(obj, { reportInput: true });
    if (!r.success) {
      issues.push(...prefixed(r.error.issues, path));
      return undefined;
    }
    return r.data;
  };
  switch (kind) {
    case 'chiller': {
      const e = check(pickSchema(obj, 'chiller', CHILLER_ACTIONS, chillerSchemas, path, issues) as z.ZodType<Record<string, unknown>> | undefined);
      if (!e) return undefined;
      const atS = e.at as number;
      if (e.chiller === 'trip') return { at: atS, kind: 'chiller', action: 'trip', ...(e.alarmCode !== undefined ? { alarmCode: e.alarmCode as number } : {}) };
      if (e.chiller === 'partial') return { at: atS, kind: 'chiller', action: 'partial', capacity: e.capacity as number, reportRunning: e.reportRunning as boolean };
      return { at: atS, kind: 'chiller', action: 'restore' };
    }
    case 'device': {
      const e = check(pickSchema(obj, 'fault', DEVICE_FAULTS, deviceSchemas, path, issues) as z.ZodType<Record<string, unknown>> | undefined);
      if (!e) return undefined;
      const type = e.fault as DeviceFault['type'];
      const fault: DeviceFault =
        type === 'exception' ? { type, code: e.code as number } : type === 'late' ? { type, delayMs: e.delayMs as number } : { type };
      return { at: e.at as number, kind: 'device', device: e.device as string, fault };
    }
    case 'sensor': {
      const e = check(pickSchema(obj, 'fault', SENSOR_FAULTS, sensorSchemas, path, issues) as z.ZodType<Record<string, unknown>> | undefined);
      if (!e) return undefined;
      const type = e.fault as SensorFault['type'];
      const fault: SensorFault =
        type === 'glitch' ? { type, deltaC: e.deltaC as number } : type === 'drift' ? { type, rateCPerMin: e.rateCPerMin as number } : { type };
      return { at: e.at as number, kind: 'sensor', sensor: e.sensor as string, fault };
    }
    case 'door': {
      const e = check(doorSchema);
      if (!e) return undefined;
      return { at: e.at, kind: 'door', door: e.door, deltaC: e.deltaC, durationS: e.durationS };
    }
  }
}

export interface ScenarioParseOptions {
  /** When given, device and sensor names are checked against it. */
  config?: Config;
}

/** Parses and validates scenario YAML. Throws ScenarioError (code E_SCENARIO_INVALID) listing every problem. */
export function parseScenario(text: string, source: string, opts: ScenarioParseOptions = {}): Scenario {
  const raw = parseYaml(text, source);
  if (raw === null || raw === undefined) throw new ScenarioError(source, ['(root): the file is empty; expected a mapping with at least name']);
  // reportInput: the messages quote what was found, as the config loader's do.
  const parsed = scenarioSchema.safeParse(raw, { reportInput: true });
  const issues: z.core.$ZodIssue[] = parsed.success ? [] : [...parsed.error.issues];

  // Events are checked even when the rest is wrong, so that every problem is reported at once.
  const rawEvents = parsed.success ? parsed.data.events : (raw as { events?: unknown }).events;
  const events: ScenarioEvent[] = [];
  const fileIndex: number[] = [];
  let eventsOk = Array.isArray(rawEvents);
  if (Array.isArray(rawEvents)) {
    rawEvents.forEach((rawEvent, i) => {
      const e = parseEvent(rawEvent, i, issues);
      if (e) {
        events.push(e);
        fileIndex.push(i);
      } else eventsOk = false;
    });
  }
  const problems = formatIssues(issues);
  const durationS = (raw as { durationS?: unknown }).durationS;
  if (typeof durationS === 'number') {
    events.forEach((e, i) => {
      if (e.at > durationS) problems.push(`events[${fileIndex[i]!}].at: ${e.at} is after durationS (${durationS})`);
    });
  }
  const room = (raw as { room?: Record<string, unknown> }).room;
  if (room && typeof room === 'object' && room.thermalMassKjPerK !== undefined && room.initialRiseCPerMin !== undefined) {
    problems.push('room.initialRiseCPerMin: give either thermalMassKjPerK or initialRiseCPerMin, not both');
  }
  if (opts.config && eventsOk) problems.push(...checkAgainstConfig(events, opts.config));
  if (problems.length > 0 || !parsed.success) throw new ScenarioError(source, problems);

  const s = parsed.data;
  const roomParams: RoomParamsInput = {};
  for (const [k, v] of Object.entries(s.room)) if (v !== undefined) (roomParams as Record<string, unknown>)[k] = v;
  return {
    name: s.name,
    description: s.description,
    ...(s.durationS !== undefined ? { durationS: s.durationS } : {}),
    seed: s.seed,
    room: roomParams,
    // Array.prototype.sort is stable: events at the same time keep their file order.
    events: [...events].sort((a, b) => a.at - b.at),
    source,
  };
}

function parseYaml(text: string, source: string): unknown {
  // One line per problem, as for the configuration (an alias bomb or a too-deep nesting is a problem too).
  const r = yamlToData(text);
  if (!r.ok) throw new ScenarioError(source, r.problems);
  return r.data;
}

/** Reads and validates a scenario file. */
export function loadScenarioFile(file: string, opts: ScenarioParseOptions = {}): Scenario {
  let text: string;
  try {
    // A regular file of at most 1 MiB, opened without blocking (a FIFO or /dev/zero must not hang a drill).
    text = readRegularFile(file);
  } catch (err) {
    throw new RackguardError('E_SCENARIO_INVALID', `${file}: cannot read scenario: ${(err as Error).message}`, { cause: err });
  }
  return parseScenario(text, file, opts);
}

/** Device ids served by the simulator (Modbus devices of serial and tcp buses). */
function modbusDevices(config: Config): Map<string, { temperaturePoints: string[]; points: Set<string> }> {
  const out = new Map<string, { temperaturePoints: string[]; points: Set<string> }>();
  for (const bus of config.buses) {
    if (bus.type === 'serial-stream') continue;
    for (const d of bus.devices) {
      out.set(d.id, { temperaturePoints: d.points.filter((p) => p.kind === 'temperature').map((p) => p.id), points: new Set(d.points.map((p) => p.id)) });
    }
  }
  return out;
}

/** Cross-checks names against the config. `events` are in file order (all of them parsed when this runs). */
function checkAgainstConfig(events: ScenarioEvent[], config: Config): string[] {
  const devices = modbusDevices(config);
  const points = new Map<string, string>();
  for (const [id, d] of devices) for (const p of d.points) points.set(p, id);
  const temperaturePoints = new Set([...devices.values()].flatMap((d) => d.temperaturePoints));
  const problems: string[] = [];
  events.forEach((e, i) => {
    const where = `events[${i}]`;
    if (e.kind === 'device' && !devices.has(e.device)) {
      problems.push(`${where}.device: unknown device "${e.device}" (event ${i} at ${e.at} s; known: ${[...devices.keys()].join(', ')})`);
    }
    if (e.kind === 'sensor' && !points.has(e.sensor)) {
      problems.push(`${where}.sensor: unknown point "${e.sensor}" (event ${i} at ${e.at} s; expected <device>.<point>, e.g. ${[...points.keys()][0] ?? 'rack01.temperature'})`);
    }
    if (e.kind === 'door') {
      e.door.forEach((name, j) => {
        const dev = devices.get(name);
        if (dev && dev.temperaturePoints.length === 0) problems.push(`${where}.door[${j}]: device "${name}" has no temperature point (event ${i} at ${e.at} s)`);
        else if (!dev && !temperaturePoints.has(name)) problems.push(`${where}.door[${j}]: unknown device or temperature point "${name}" (event ${i} at ${e.at} s)`);
      });
    }
  });
  return problems;
}
