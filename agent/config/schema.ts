/**
 * The configuration schema: the single source of truth for types, defaults and validation.
 * Units are in the names (`timeoutMs`, `windowS`). Every field is documented in
 * config/rackguard.example.yaml.
 */
import { z } from 'zod';
import { DAY_MS, DAY_S, HOUR_MS, HOUR_S, MINUTE_MS, SECOND_MS } from './durations.js';
import { actionsSchema } from './actions-schema.js';
import { outputsSchema } from './outputs-schema.js';

export const CONFIG_VERSION = 1;

const id = z
  .string()
  .regex(/^[A-Za-z0-9_][A-Za-z0-9_-]*$/, { message: 'expected letters, digits, "_" or "-" (no dots or spaces)' });

export const POINT_TYPES = ['int16', 'uint16', 'int32', 'uint32', 'float32', 'bool', 'bit'] as const;
export const WORD_ORDERS = ['ABCD', 'CDAB', 'BADC', 'DCBA'] as const;
export const TABLES = ['holding', 'input', 'coil', 'discrete'] as const;
export const POINT_KINDS = ['temperature', 'humidity', 'running', 'alarm', 'other'] as const;

const range = z
  .object({ min: z.number(), max: z.number() })
  .strict()
  .refine((r) => r.min < r.max, { message: 'min must be below max' });

/** Fields shared by Modbus points and ASCII-stream points: how a raw number becomes a sample. */
const valueFields = {
  /** Engineering value = raw × scale + offset. */
  scale: z.number().default(1),
  offset: z.number().default(0),
  unit: z.string().default(''),
  /** What the value measures; detection uses temperature points and chiller status points. */
  kind: z.enum(POINT_KINDS).default('other'),
  /** Decoded values outside this range get quality out_of_range and no value. */
  validRange: range.optional(),
  /** A good value that has not changed for this long is flagged stale (a frozen sensor). */
  frozenAfterS: z.number().positive().max(7 * DAY_S).optional(),
};

export const modbusPointSchema = z
  .object({
    /** Local name; the point's id is `<device id>.<name>`. */
    name: id,
    table: z.enum(TABLES),
    address: z.int().min(0).max(65535),
    type: z.enum(POINT_TYPES),
    /** Bit index (0 = least significant) for type `bit`. */
    bit: z.int().min(0).max(15).optional(),
    /** Register order for 32-bit types; A is the most significant byte. */
    wordOrder: z.enum(WORD_ORDERS).default('ABCD'),
    /** Raw register values that mean "sensor fault" (for example 0x7FFF): quality sensor_fault, no value. */
    faultValues: z.array(z.int().min(0).max(0xffffffff)).default([]),
    ...valueFields,
  })
  .strict();

const deviceSchema = z
  .object({
    id,
    unitId: z.int().min(0).max(255).optional(),
    /** Name of a profile in config/profiles (or profilesDir): its points are added to this device. */
    profile: z.string().min(1).optional(),
    points: z.array(modbusPointSchema).default([]),
    pollIntervalMs: z.int().min(1).max(DAY_MS).default(5000),
    /** Deadline of one request, enforced by the agent itself. */
    timeoutMs: z.int().min(1).max(60_000).default(500),
    /** Largest single read, in registers (≤ 125) or bits (≤ 2000). */
    maxReadRegisters: z.int().min(1).max(125).default(125),
    /** Unused registers a read may span to merge two points into one request. */
    maxGapRegisters: z.int().min(0).max(124).default(8),
    /** After a failed poll the device waits backoffInitialMs, doubling to backoffMaxMs. */
    backoffInitialMs: z.int().min(1).max(DAY_MS).optional(),
    backoffMaxMs: z.int().min(1).max(DAY_MS).default(60_000),
  })
  .strict();

const reopenFields = {
  /** A lost port or connection is reopened after reopenInitialMs, doubling to reopenMaxMs. */
  reopenInitialMs: z.int().min(1).max(HOUR_MS).default(500),
  reopenMaxMs: z.int().min(1).max(HOUR_MS).default(30_000),
};

const serialLineFields = {
  /** Prefer /dev/serial/by-id/… paths: a replugged USB adapter may come back as another ttyUSBn. */
  path: z.string().min(1),
  baudRate: z.int().min(300).max(4_000_000).default(9600),
  parity: z.enum(['none', 'even', 'odd']).default('none'),
  dataBits: z.union([z.literal(7), z.literal(8)]).default(8),
  stopBits: z.union([z.literal(1), z.literal(2)]).default(1),
};

export const serialBusSchema = z
  .object({
    id,
    type: z.literal('serial'),
    ...serialLineFields,
    /** Silence before each request. Default: 3.5 characters, 1.75 ms above 19200 baud (spec §2.5.1.1). */
    interFrameGapMs: z.number().min(0).max(SECOND_MS).optional(),
    /** Silence after a timeout or bad frame, so a late reply is drained and never taken for the next answer. */
    recoveryGapMs: z.number().min(0).max(MINUTE_MS).default(100),
    ...reopenFields,
    devices: z.array(deviceSchema).min(1),
  })
  .strict();

export const tcpBusSchema = z
  .object({
    id,
    type: z.literal('tcp'),
    host: z.string().min(1),
    port: z.int().min(1).max(65535).default(502),
    connectTimeoutMs: z.int().min(1).max(MINUTE_MS).default(3000),
    ...reopenFields,
    devices: z.array(deviceSchema).min(1),
  })
  .strict();

const streamPointSchema = z
  .object({
    name: id,
    /** Named capture group of `pattern` that holds this point's number. */
    group: z.string().min(1),
    ...valueFields,
  })
  .strict();

/** A sensor that streams ASCII lines (for example the XY-MD02 "common protocol" auto-upload mode). */
export const streamBusSchema = z
  .object({
    id,
    type: z.literal('serial-stream'),
    ...serialLineFields,
    /** Regular expression with named groups, matched against each line. */
    pattern: z.string().min(1),
    /** No matching line for this long: every point gets a comm_error sample. */
    timeoutMs: z.int().min(1).max(HOUR_MS).default(10_000),
    ...reopenFields,
    points: z.array(streamPointSchema).min(1),
  })
  .strict();

export const busSchema = z.discriminatedUnion('type', [serialBusSchema, tcpBusSchema, streamBusSchema]);

/**
 * Detection parameters. Defaults follow ASHRAE TC9.9 (2021): recommended inlet ≤ 27 °C, allowable A1
 * ≤ 32 °C, A2 ≤ 35 °C, rate of change ≤ 20 °C/h (0.33 °C/min). Set once under `detection:` and
 * override per zone under `zones[].detection:`.
 */
const detectionFields = {
  /** Least-squares windows of the per-sensor rate estimator, seconds. */
  shortWindowS: z.number().positive().max(6 * HOUR_S),
  longWindowS: z.number().positive().max(6 * HOUR_S),
  /** Fraction of a window that samples must span before its rate is used (0–1). */
  minCoverage: z.number().min(0.1).max(1),
  /** A single sample this far (°C) from the sensor's recent trend is a glitch and is ignored. */
  glitchJumpC: z.number().positive(),
  /** No good sample for this long: the sensor is stale. */
  staleAfterS: z.number().positive().max(DAY_S),
  /** Warning: any one sensor at or above these. */
  warnRateCPerMin: z.number().positive(),
  warnTempC: z.number(),
  /** Alarm: k sensors agree, for dwellS, on any of these. */
  alarmShortRateCPerMin: z.number().positive(),
  /**
   * The short-rate criterion also needs the sensor to have risen this much (°C) above the mean of
   * its long window, unless a chiller corroborates: a door opening on two racks rises
   * at > 1 °C/min for half a minute but stops after a degree or so; a failure keeps going.
   */
  alarmMinRiseC: z.number().min(0),
  alarmLongRateCPerMin: z.number().positive(),
  alarmTempC: z.number(),
  /** Critical: alarm holds and k sensors reach criticalTempC or are predicted to within horizonS. */
  criticalTempC: z.number(),
  horizonS: z.number().positive().max(DAY_S),
  /** Sensors that must agree (k of the zone's n). */
  k: z.int().min(1),
  dwellS: z.number().min(0).max(HOUR_S),
  /** Dwell when a chiller serving the zone corroborates (trip, alarm, or supply water rising). */
  corroboratedDwellS: z.number().min(0).max(HOUR_S),
  /**
   * Short-window rate that counts toward alarm while a chiller corroborates (default 0.5, below the
   * uncorroborated 1 °C/min). A 120 s least-squares window sees half of a fresh ramp's rate only 60 s
   * after onset, so with a known chiller trip the independent evidence buys the first minute.
   */
  corroboratedShortRateCPerMin: z.number().positive(),
  /** Chilled-water supply rising at least this fast corroborates, °C/min. */
  chillerSupplyRiseCPerMin: z.number().positive(),
  /** Let a corroborating chiller lower k to 1 for this zone. Default false. */
  corroborationLowersK: z.boolean(),
  /** A level steps down only after its condition has been gone this long, seconds. */
  clearDelayS: z.number().min(0).max(DAY_S),
  /** Temperatures must be this far below a threshold (°C) to clear it. */
  hysteresisC: z.number().min(0),
  /** Critical latches until the clear conditions hold (`auto`) or until an operator acknowledges (`ack`). */
  criticalLatch: z.enum(['auto', 'ack']),
};

export const DETECTION_DEFAULTS = {
  shortWindowS: 120,
  longWindowS: 600,
  minCoverage: 0.5,
  glitchJumpC: 3,
  staleAfterS: 60,
  warnRateCPerMin: 0.33,
  warnTempC: 27,
  alarmShortRateCPerMin: 1,
  alarmMinRiseC: 2.3,
  alarmLongRateCPerMin: 0.33,
  alarmTempC: 32,
  criticalTempC: 35,
  horizonS: 600,
  k: 2,
  dwellS: 30,
  corroboratedDwellS: 0,
  corroboratedShortRateCPerMin: 0.5,
  chillerSupplyRiseCPerMin: 0.1,
  corroborationLowersK: false,
  clearDelayS: 300,
  hysteresisC: 1,
  criticalLatch: 'auto',
} as const;

const detectionOverrideSchema = z.object(detectionFields).partial().strict();
export type DetectionParams = { -readonly [K in keyof typeof DETECTION_DEFAULTS]: z.output<(typeof detectionFields)[K]> };

export const zoneSchema = z
  .object({
    id,
    /** Point ids (`<device>.<point>`) of the inlet temperature sensors in this zone. */
    sensors: z.array(z.string().min(1)).min(1),
    /** Overrides of the top-level `detection` parameters for this zone. */
    detection: detectionOverrideSchema.default({}),
  })
  .strict();

export const chillerSchema = z
  .object({
    id,
    /** Point ids of the chiller's status; any may be omitted. */
    running: z.string().min(1).optional(),
    alarm: z.string().min(1).optional(),
    supplyTemp: z.string().min(1).optional(),
    returnTemp: z.string().min(1).optional(),
    /** Zones this chiller cools. */
    zones: z.array(z.string().min(1)).default([]),
  })
  .strict();

export const configSchema = z
  .object({
    version: z.literal(CONFIG_VERSION),
    site: id.default('site'),
    gateway: id.default('gateway'),
    /** Extra directory searched for device profiles before the bundled config/profiles. */
    profilesDir: z.string().min(1).optional(),
    logging: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
        /** Log every sample (at info) as well as device health. */
        samples: z.boolean().default(true),
        /** Interval of the device-health log line. */
        healthIntervalS: z.number().positive().max(DAY_S).default(60),
      })
      .strict()
      .prefault({}),
    buses: z.array(busSchema).min(1),
    /** Detection defaults for every zone. */
    detection: detectionOverrideSchema.default({}),
    zones: z.array(zoneSchema).default([]),
    chillers: z.array(chillerSchema).default([]),
    /** Durable outbox and sinks (MQTT, InfluxDB); absent: samples and events are only logged. */
    outputs: outputsSchema.optional(),
    /**
     * Local HTTP endpoint: /healthz, /readyz, /metrics (Prometheus), /api/state, /api/events (+ SSE) and
     * the live status page at /. Absent: no HTTP server. Binding anything but loopback needs `tokenFile`.
     */
    http: z
      .object({
        /** Address to listen on; default 127.0.0.1 (loopback only). */
        bind: z.string().min(1).default('127.0.0.1'),
        /** TCP port; 0 picks a free one (logged). */
        port: z.int().min(0).max(65_535).default(9108),
        /** File holding the bearer token every request must carry (required for a non-loopback bind). */
        tokenFile: z.string().min(1).optional(),
        /** Recent events kept for /api/events and the status page. */
        recentEvents: z.int().min(1).max(10_000).default(200),
      })
      .strict()
      .optional(),
    /** What to do when a zone escalates: hooks, webhooks, coordinated shutdown. Absent: detection only. */
    actions: actionsSchema.optional(),
    /**
     * Clock sanity on a gateway without an RTC (agent/service/clock-watch.ts): wall-clock steps are
     * detected and reported, samples stamped before the clock is synchronised are marked and re-dated.
     */
    clock: z
      .object({
        /** systemd-timesyncd's flag file; when its directory does not exist the clock is taken as synchronised. */
        syncedFile: z.string().min(1).default('/run/systemd/timesync/synchronized'),
        /** A wall/monotonic disagreement above this within one second is a step, ms. */
        stepThresholdMs: z.int().min(500).max(3_600_000).default(2000),
        /**
         * How long the InfluxDB sink holds records stamped on an unsynchronised clock, waiting for the
         * step that re-dates them, seconds (0: never hold). After that it writes them with their times as
         * they are and a `clock_unsynced` field: a gateway that never gets NTP still fills its database.
         * Held records stay in the outbox, under its byte cap.
         */
        unsyncedHoldS: z.number().min(0).max(DAY_S).default(600),
      })
      .strict()
      .prefault({}),
    /** One deadline for stopping every component (SIGTERM, reload), seconds, default 10. */
    stopTimeoutS: z.number().positive().max(600).default(10),
  })
  .strict();

export const profileSchema = z
  .object({
    name: z.string().min(1),
    description: z.string().default(''),
    /** Line settings and unit id the device ships with (documentation and defaults). */
    defaults: z
      .object({
        unitId: z.int().min(0).max(255).optional(),
        baudRate: z.int().optional(),
        parity: z.enum(['none', 'even', 'odd']).optional(),
        dataBits: z.int().optional(),
        stopBits: z.int().optional(),
      })
      .strict()
      .default({}),
    points: z.array(modbusPointSchema).min(1),
  })
  .strict();

export type RawConfig = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
export type ModbusPointConfig = z.output<typeof modbusPointSchema>;
export type StreamPointConfig = z.output<typeof streamPointSchema>;
export type Profile = z.output<typeof profileSchema>;
