/**
 * The `outputs:` section of the configuration: the durable outbox and the sinks that drain it.
 * Mounted by agent/config/schema.ts at `outputs:`. Units are in the names (`timeoutMs`, `keepaliveS`).
 * Secrets never come from argv (visible in `ps`): files or environment variables only.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import type { Config } from '../config/model.js';
import { RackguardError } from '../errors.js';

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
    publishTimeoutMs: z.int().min(100).default(10_000),
    /** Publishes awaiting PUBACK at once; bounds memory and the redelivery after a reconnect. */
    maxInFlight: z.int().min(1).max(65_000).default(100),
    /** MQTT keepalive, seconds (the broker drops us after 1.5× this without packets). */
    keepaliveS: z.int().min(0).max(65_535).default(30),
    /** Reconnect after reconnectInitialMs, doubling to reconnectMaxMs (mqtt.js alone retries at a fixed period). */
    reconnectInitialMs: z.int().min(10).default(1000),
    reconnectMaxMs: z.int().min(10).default(60_000),
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
    flushIntervalMs: z.int().min(1).default(1000),
    /** Retryable failures (network, timeout, 5xx, 429) back off from retryInitialMs, doubling to retryMaxMs. */
    retryInitialMs: z.int().min(1).default(500),
    retryMaxMs: z.int().min(1).default(30_000),
    /** Deadline of one write request. */
    requestTimeoutMs: z.int().min(100).default(10_000),
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

/**
 * A credential from a file (first line, trailing whitespace trimmed) or else from an environment
 * variable; undefined when neither is set. Never from argv: `ps` shows argv to every user.
 */
export function readCredential(file: string | undefined, envName: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (file !== undefined) {
    try {
      return readFileSync(file, 'utf8').split(/\r?\n/)[0]!.trimEnd();
    } catch (err) {
      throw new RackguardError('E_SECRET_READ', `cannot read ${envName.toLowerCase()} file ${file}: ${(err as Error).message}`, { cause: err });
    }
  }
  const v = env[envName];
  return v === undefined || v === '' ? undefined : v;
}

/** What a sink knows about a point besides its sample: where it sits, for tags and discovery. */
export interface PointInfo {
  id: string;
  deviceId: string;
  unit: string;
  kind: string;
  /** Zones whose sensors include this point (the first one tags InfluxDB points). */
  zones: string[];
  /** Set for chiller status points: the chiller and the role (running, alarm, supplyTemp, returnTemp). */
  chiller?: { id: string; role: string };
}

/** Site, gateway and point metadata the sinks need; built once from the resolved config. */
export interface OutputContext {
  site: string;
  gateway: string;
  points: ReadonlyMap<string, PointInfo>;
  zones: readonly string[];
}

export function outputContextFromConfig(config: Pick<Config, 'site' | 'gateway' | 'points' | 'zones' | 'chillers'>): OutputContext {
  const points = new Map<string, PointInfo>();
  for (const [id, p] of config.points) points.set(id, { id, deviceId: p.deviceId, unit: p.unit, kind: p.kind, zones: [] });
  for (const z of config.zones) for (const s of z.sensors) points.get(s)?.zones.push(z.id);
  for (const c of config.chillers) {
    for (const role of ['running', 'alarm', 'supplyTemp', 'returnTemp'] as const) {
      const pid = c[role];
      const p = pid === undefined ? undefined : points.get(pid);
      if (p) p.chiller = { id: c.id, role };
    }
  }
  return { site: config.site, gateway: config.gateway, points, zones: config.zones.map((z) => z.id) };
}
