/**
 * The `outputs:` section of the configuration: the durable outbox and the sinks that drain it.
 * Mounted by ./schema.ts at `outputs:`. Units are in the names (`timeoutMs`, `keepaliveS`).
 * Secrets never come from argv (visible in `ps`): files or environment variables only.
 */
import { z } from 'zod';
import { HOUR_MS, MINUTE_MS } from './durations.js';

const MIB = 1024 * 1024;

export const outboxSchema = z
  .object({
    /** SQLite database file. Its directory must be writable (WAL and -shm files live next to it). */
    path: z.string().min(1).default('/var/lib/rackguard/outbox.db'),
    /**
     * Upper bound of buffered record bytes (payloads plus a per-row overhead), default 256 MiB. When
     * reached, the oldest telemetry is dropped (with a gap event); events are never dropped.
     */
    maxBytes: z
      .int()
      .min(64 * 1024)
      .default(256 * MIB),
    /**
     * FULL: a committed append survives power loss (SQLite's WAL default, NORMAL, may roll back the last
     * transactions on power loss). NORMAL trades that for fewer fsyncs on slow SD cards.
     */
    synchronous: z.enum(['FULL', 'NORMAL']).default('FULL'),
    /**
     * Group commit: appends are committed (one transaction, one fsync) at most once per this interval,
     * default 1000 ms; an event forces an earlier commit. Fewer fsyncs spare SD cards and keep a slow
     * commit from stalling the buses' deadlines.
     */
    commitIntervalMs: z.int().min(0).max(10_000).default(1000),
    /**
     * Disk space kept free for events: telemetry is not appended when the outbox's filesystem has less
     * than this left, so zone and device events still fit when telemetry fills the disk. Default 4 MiB.
     */
    reserveBytes: z
      .int()
      .min(0)
      .max(1024 * MIB)
      .default(4 * MIB),
    /** Events (and device states) held in memory while the outbox cannot be written; the oldest go first past this. */
    maxQueuedEvents: z.int().min(100).max(1_000_000).default(10_000),
    /** An outbox that cannot be opened is retried after reopenInitialMs, doubling to reopenMaxMs. */
    reopenInitialMs: z.int().min(10).max(HOUR_MS).default(1000),
    reopenMaxMs: z.int().min(10).max(HOUR_MS).default(60_000),
  })
  .strict();

export const mqttSchema = z
  .object({
    /** Broker URL: mqtt://host:1883 or mqtts://host:8883. */
    url: z.string().regex(/^mqtts?:\/\/[^/\s]+/, { message: 'expected mqtt://host[:port] or mqtts://host[:port]' }),
    /** Topic root; `{site}` and `{gateway}` are replaced by the configured names. */
    baseTopic: z.string().min(1).default('rackguard/{site}/{gateway}'),
    /** 4 = MQTT 3.1.1, 5 = MQTT 5. Only 5 reports a broker's refusal of a publish (ACL, size) to us. */
    protocolVersion: z.union([z.literal(4), z.literal(5)]).default(4),
    /** QoS of outbox publishes. 1 (default): the cursor advances only after PUBACK; 0: after the write. */
    qos: z.union([z.literal(0), z.literal(1)]).default(1),
    /**
     * Stable client id: with `clean: false` the broker keeps our session across reconnects only if the id
     * stays the same. Default `rackguard-{site}-{gateway}`.
     */
    clientId: z.string().min(1).max(128).optional(),
    /** Files holding the username / password (trailing newline ignored). Env RACKGUARD_MQTT_USERNAME / _PASSWORD also work. */
    usernameFile: z.string().min(1).optional(),
    passwordFile: z.string().min(1).optional(),
    /** PEM files for TLS (mqtts://): CA bundle, client certificate and key. */
    ca: z.string().min(1).optional(),
    cert: z.string().min(1).optional(),
    key: z.string().min(1).optional(),
    /** Our own deadline per publish: mqtt.js's publishAsync may never settle when the link drops. */
    publishTimeoutMs: z.int().min(100).max(10 * MINUTE_MS).default(10_000),
    /** Publishes awaiting PUBACK at once; bounds memory and the redelivery after a reconnect. */
    maxInFlight: z.int().min(1).max(65_000).default(100),
    /** MQTT keepalive, seconds (the broker drops us after 1.5× this without packets). */
    keepaliveS: z.int().min(0).max(65_535).default(30),
    /**
     * Reconnect after reconnectInitialMs, doubling to reconnectMaxMs (mqtt.js alone retries at a fixed period).
     * An alarm system wants its backlog soon after the broker returns: the cap defaults to 5 s.
     */
    reconnectInitialMs: z.int().min(10).max(HOUR_MS).default(1000),
    reconnectMaxMs: z.int().min(10).max(HOUR_MS).default(5000),
    /** Publish Home Assistant MQTT discovery configs (retained) for sensors and zone states. */
    homeAssistantDiscovery: z.boolean().default(false),
    discoveryPrefix: z.string().min(1).default('homeassistant'),
  })
  .strict()
  .refine((m) => m.reconnectInitialMs <= m.reconnectMaxMs, { message: 'reconnectInitialMs must not exceed reconnectMaxMs' });

export const influxSchema = z
  .object({
    /** InfluxDB 1.x base URL (or 2.x with its 1.x-compatible API): http://host:8086. */
    url: z.string().regex(/^https?:\/\/[^/\s]+/, { message: 'expected http://host:port or https://host:port' }),
    database: z.string().min(1),
    /** Files holding the username / password. Env RACKGUARD_INFLUX_USERNAME / _PASSWORD also work. */
    usernameFile: z.string().min(1).optional(),
    passwordFile: z.string().min(1).optional(),
    /** Points per write request; a backlog drains in batches of this size. */
    batchSize: z.int().min(1).max(100_000).default(5000),
    /** A partial batch is written after at most this long. */
    flushIntervalMs: z.int().min(1).max(HOUR_MS).default(1000),
    /** Retryable failures (network, timeout, 5xx, 429) back off from retryInitialMs, doubling to retryMaxMs. */
    retryInitialMs: z.int().min(1).max(HOUR_MS).default(500),
    retryMaxMs: z.int().min(1).max(HOUR_MS).default(30_000),
    /** Deadline of one write request. */
    requestTimeoutMs: z.int().min(100).max(10 * MINUTE_MS).default(10_000),
    /** Prepended to every measurement name (`environment` → `<prefix>environment`), to share a database. */
    measurementPrefix: z.string().optional(),
  })
  .strict()
  .refine((i) => i.retryInitialMs <= i.retryMaxMs, { message: 'retryInitialMs must not exceed retryMaxMs' });

export const outputsSchema = z
  .object({
    outbox: outboxSchema.prefault({}),
    /** Absent: no MQTT sink. */
    mqtt: mqttSchema.optional(),
    /** Absent: no InfluxDB sink. */
    influx: influxSchema.optional(),
  })
  .strict();

export type OutboxConfig = z.output<typeof outboxSchema>;
export type MqttConfig = z.output<typeof mqttSchema>;
export type InfluxConfig = z.output<typeof influxSchema>;
export type OutputsConfig = z.output<typeof outputsSchema>;
export type RawOutputsConfig = z.input<typeof outputsSchema>;
